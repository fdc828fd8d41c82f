"""Test against RunPod without RunPod: an emulator of its auth surface, and a pytest fixture.

`Emulator` serves RunPod's serverless, GraphQL and REST v2 routes on loopback, with the
same 401 and 403 answers, and lets a test add, revoke and rotate keys, inject faults and
count requests. The pytest plugin (installed with the package) provides the
``runpod_emulator`` fixture. Both need the ``emulator`` extra::

    pip install 'resilient-runpod[emulator]'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._emulator import Emulator
    from ._state import Counters, KeyInfo, Scope

__all__ = ["Counters", "Emulator", "KeyInfo", "Scope"]

# Imported on first use, as in the package itself: the pytest plugin below this package
# is loaded by every pytest run.
_HOMES = {"Counters": "._state", "Emulator": "._emulator", "KeyInfo": "._state", "Scope": "._state"}


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is used."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name], __name__), name)
    globals()[name] = value
    return value
