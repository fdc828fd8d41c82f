"""Typed events for metrics and traces: what the library does about rejected keys.

Subscribe a callable; it is called with a frozen dataclass per event::

    from resilient_runpod import instrumentation

    unsubscribe = instrumentation.subscribe(print)

Subscribers are called inline on the request's thread or event loop, outside any lock
of the library, so they must be quick (a counter, a queue put). One that raises is
logged as ``runpod.instrumentation.subscriber_failed`` and never fails a request. No
event holds a key: keys appear as fingerprints, URLs as hosts.

When ``opentelemetry-api`` is installed, a built-in subscriber reports through the
global OpenTelemetry tracer and meter providers (README, "Observability").
"""

from __future__ import annotations

from ._data import (
    BreakerChanged,
    Event,
    RecoveryEnded,
    RecoveryOutcome,
    RecoveryStarted,
    Rejected,
    ResendReason,
    Resent,
    TransientRetry,
)
from ._subscribers import Subscriber, subscribe

__all__ = [
    "BreakerChanged",
    "Event",
    "RecoveryEnded",
    "RecoveryOutcome",
    "RecoveryStarted",
    "Rejected",
    "ResendReason",
    "Resent",
    "Subscriber",
    "TransientRetry",
    "subscribe",
]
