"""Test against RunPod without RunPod: an emulator of its auth surface, and a pytest fixture.

`Emulator` serves RunPod's serverless, GraphQL and REST v2 routes on loopback, with the
same 401 and 403 answers, and lets a test add, revoke and rotate keys, inject faults and
count requests. Only the serverless routes load with it: REST v2, GraphQL and the pods
behind them are imported by the first request that reaches them. The pytest plugin
(installed with the package) provides the ``runpod_emulator`` fixture. Both need the
``emulator`` extra::

    pip install 'resilient-runpod[emulator]'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr as _lazy_getattr

if TYPE_CHECKING:
    from ._emulator import Emulator
    from ._state import Chaos, Counters, KeyInfo, Scope

__all__ = ["Chaos", "Counters", "Emulator", "KeyInfo", "Scope"]

# Imported on first use (see `resilient_runpod._lazy`): the pytest plugin below this
# package is loaded by every pytest run.
__getattr__ = _lazy_getattr(
    __name__,
    {
        "Chaos": "._state",
        "Counters": "._state",
        "Emulator": "._emulator",
        "KeyInfo": "._state",
        "Scope": "._state",
    },
)
