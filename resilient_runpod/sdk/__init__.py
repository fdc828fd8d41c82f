"""Recovery for code that uses the official ``runpod`` SDK, without rewriting it.

`wrap` takes what SDK users hold (an endpoint, a job, an API function, the ``runpod``
module) and returns it recovering from rejected keys. It needs the ``sdk`` extra::

    pip install 'resilient-runpod[sdk]'
"""

from __future__ import annotations

from ._wrap import wrap

__all__ = ["wrap"]
