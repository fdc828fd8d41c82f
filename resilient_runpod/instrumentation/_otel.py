"""The built-in subscriber for OpenTelemetry: a span per recovery, and the metrics.

Installed by `_subscribers.install_defaults` when ``opentelemetry-api`` is importable;
OpenTelemetry itself is imported at the first event, never at the library's import. It
reports through the global tracer and meter providers, so an application that set up
OpenTelemetry gets them with no code of ours, and one that did not pays for the API's
no-op objects only.

Names follow OpenTelemetry's semantic-convention rules: a ``runpod.`` namespace, counters
named for what they count (plural, no ``_total``), units in UCUM (``s``, ``{rejection}``),
and the general attributes where one fits (``server.address``, ``http.request.method``,
``http.response.status_code``, ``error.type``). No attribute holds a key: fingerprints only.
"""

from __future__ import annotations

import time
from typing import Any

from ._data import (
    BreakerChanged,
    Event,
    RecoveryEnded,
    Rejected,
    Resent,
    TransientRetry,
)

__all__ = ["METRICS", "SCOPE", "SPAN", "OpenTelemetry"]

SCOPE = "resilient_runpod"
"""The instrumentation scope's name: the tracer's and the meter's."""

SPAN = "runpod.auth.recovery"
"""The span of one recovery flight."""

# Each metric: its name, the kind of instrument, its unit and description.
METRICS = {
    "rejections": ("runpod.auth.rejections", "counter", "{rejection}", "401s from RunPod"),
    "recoveries": ("runpod.auth.recoveries", "counter", "{recovery}", "Recovery flights"),
    "duration": (
        "runpod.auth.recovery.duration",
        "histogram",
        "s",
        "How long recovery flights ran",
    ),
    "resends": ("runpod.resends", "counter", "{resend}", "Requests sent again, by reason"),
    "retries": (
        "runpod.transient.retries",
        "counter",
        "{retry}",
        "Transient failures retried (429, 5xx, lost connections)",
    ),
    "breaker": (
        "runpod.auth.breaker.changes",
        "counter",
        "{change}",
        "Changes of the recovery breaker's state, by the new state",
    ),
}

# A recovery takes milliseconds (a file) to minutes (a person at a prompt).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class OpenTelemetry:
    """A subscriber that turns events into a span per recovery flight and metrics."""

    __slots__ = ("_instruments", "_tracer")

    def __init__(self) -> None:
        self._tracer: Any = None
        self._instruments: dict[str, Any] = {}

    def _setup(self) -> None:
        # Imported here: the first event, not the library's import, pays for it.
        from opentelemetry import metrics, trace  # noqa: PLC0415

        from .._version import __version__  # noqa: PLC0415 -- only once OpenTelemetry is used

        meter = metrics.get_meter(SCOPE, __version__)
        for key, (name, kind, unit, description) in METRICS.items():
            instrument: Any
            if kind == "histogram":
                instrument = meter.create_histogram(
                    name, unit, description, explicit_bucket_boundaries_advisory=_BUCKETS
                )
            else:
                instrument = meter.create_counter(name, unit, description)
            self._instruments[key] = instrument
        self._tracer = trace.get_tracer(SCOPE, __version__)

    def __call__(self, event: Event) -> None:
        """Record *event*."""
        if self._tracer is None:
            self._setup()
        counted = self._instruments
        if type(event) is Rejected:
            counted["rejections"].add(1, _request(event.host, event.method))
        elif type(event) is Resent:
            attributes = _request(event.host, event.method)
            attributes["runpod.resend.reason"] = event.reason
            counted["resends"].add(1, attributes)
        elif type(event) is TransientRetry:
            attributes = _request(event.host, event.method)
            if event.status is not None:
                attributes["http.response.status_code"] = event.status
            else:
                attributes["error.type"] = event.reason
            counted["retries"].add(1, attributes)
        elif type(event) is RecoveryEnded:
            self._ended(event)
        elif type(event) is BreakerChanged:
            counted["breaker"].add(1, {"runpod.auth.breaker.state": event.state.value})

    def _ended(self, event: RecoveryEnded) -> None:
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415 -- loaded by _setup

        labels = {"runpod.auth.outcome": event.outcome, "runpod.auth.hook": event.hook}
        self._instruments["recoveries"].add(1, labels)
        self._instruments["duration"].record(event.seconds, labels)
        # The span is made whole at the end: it needs no state between the request that
        # started the flight and the thread that ended it.
        end = time.time_ns()
        span = self._tracer.start_span(
            SPAN,
            start_time=end - int(event.seconds * 1e9),
            attributes={
                **labels,
                "runpod.auth.fingerprint": event.fingerprint,
                "runpod.auth.new_fingerprint": event.new_fingerprint,
                "runpod.auth.reads": event.reads,
                "runpod.auth.waiters": event.waiters,
            },
        )
        if event.outcome not in ("recovered", "key_unchanged", "set_aside"):
            span.set_status(Status(StatusCode.ERROR, event.outcome))
        span.end(end_time=end)


def _request(host: str, method: str) -> dict[str, str | int]:
    return {"server.address": host, "http.request.method": method}
