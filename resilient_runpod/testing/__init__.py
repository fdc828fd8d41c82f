"""Test against RunPod without RunPod: an emulator of its auth surface, and a pytest fixture.

`Emulator` serves RunPod's serverless, GraphQL and REST v2 routes on loopback, with the
same 401 and 403 answers, and lets a test add, revoke and rotate keys, inject faults and
count requests. The pytest plugin (installed with the package) provides the
``runpod_emulator`` fixture. Both need the ``emulator`` extra::

    pip install 'resilient-runpod[emulator]'
"""

from __future__ import annotations

from ._emulator import Emulator
from ._state import Chaos, Counters, KeyInfo, Scope

__all__ = ["Chaos", "Counters", "Emulator", "KeyInfo", "Scope"]
