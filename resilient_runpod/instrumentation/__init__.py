"""Typed events for metrics and traces: what the library does about rejected keys.

Subscribe a callable; it is called with a frozen dataclass per event::

    from resilient_runpod import instrumentation

    unsubscribe = instrumentation.subscribe(print)

Subscribers are called on the library's event thread, in order, so that a slow one never
delays a request (``subscribe(..., inline=True)`` calls one on the request's own thread
or event loop instead, for work that needs its context). One that raises, or is slow, is
logged (``runpod.instrumentation.subscriber_failed``, ``subscriber_slow``) and never
fails a request. `flush` waits until the events so far were delivered. No event holds a
key: keys appear as fingerprints, URLs without their keys.

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
from ._subscribers import Subscriber, flush, subscribe

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
    "flush",
    "subscribe",
]
