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

import threading
import time
from typing import Any

from .._breaker import Breaker
from ._data import (
    BreakerChanged,
    Event,
    RecoveryEnded,
    Rejected,
    Resent,
    TransientRetry,
)

__all__ = ["METRICS", "RESEND_SPAN", "SCOPE", "SPAN", "OpenTelemetry"]

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
    "breakers": (
        "runpod.auth.breakers",
        "updowncounter",
        "{breaker}",
        "Recovery breakers not closed now (open, or half open for a trial), by state",
    ),
}

RESEND_SPAN = "runpod.resend"
"""The span around each resend of a request; it carries ``http.request.resend_count``."""

_KEEP = 256  # recovery span contexts kept for the resends that link to them

# A recovery takes milliseconds (a file) to minutes (a person at a prompt).
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class OpenTelemetry:
    """A subscriber that turns events into spans, span events and metrics.

    - A span per recovery flight (`SPAN`), made whole when the flight ends.
    - A span around each resend (`RESEND_SPAN`, opened by the drivers through
      `resend_span`), linked to the recovery span the request waited for.
    - 401s and resends as events on the span current when they happen: the
      application's, or the HTTP client instrumentation's.
    """

    __slots__ = ("_api", "_instruments", "_recoveries", "_recoveries_lock", "_tracer")

    def __init__(self) -> None:
        self._tracer: Any = None
        self._api: Any = None  # opentelemetry.trace, once loaded
        self._instruments: dict[str, Any] = {}
        # Recovery number -> its span's context, for the resends that link to it.
        self._recoveries: dict[int, Any] = {}
        self._recoveries_lock = threading.Lock()

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
            elif kind == "updowncounter":
                instrument = meter.create_up_down_counter(name, unit, description)
            else:
                instrument = meter.create_counter(name, unit, description)
            self._instruments[key] = instrument
        self._api = trace
        self._tracer = trace.get_tracer(SCOPE, __version__)

    def __call__(self, event: Event) -> None:
        """Record *event*."""
        if self._tracer is None:
            self._setup()
        counted = self._instruments
        if type(event) is Rejected:
            attributes = _request(event.host, event.method)
            counted["rejections"].add(1, attributes)
            self._api.get_current_span().add_event(
                "runpod.auth.rejected",
                {
                    **attributes,
                    "runpod.auth.fingerprint": event.fingerprint,
                    "http.response.status_code": 401,
                },
            )
        elif type(event) is Resent:
            attributes = _request(event.host, event.method)
            attributes["runpod.resend.reason"] = event.reason
            counted["resends"].add(1, attributes)
            self._api.get_current_span().add_event(
                "runpod.resend",
                {
                    **attributes,
                    "runpod.auth.fingerprint": event.fingerprint,
                    "http.request.resend_count": event.resend_count,
                },
            )
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
            if event.previous is not Breaker.CLOSED:
                counted["breakers"].add(-1, {"runpod.auth.breaker.state": event.previous.value})
            if event.state is not Breaker.CLOSED:
                counted["breakers"].add(1, {"runpod.auth.breaker.state": event.state.value})

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
                "runpod.auth.recovery": event.recovery,
            },
        )
        if event.outcome not in ("recovered", "key_unchanged", "set_aside"):
            span.set_status(Status(StatusCode.ERROR, event.outcome))
        span.end(end_time=end)
        # Kept before the waiters wake (`RecoveryEnded` is emitted first), so that
        # every resend that follows can link to it.
        with self._recoveries_lock:
            self._recoveries[event.recovery] = span.get_span_context()
            if len(self._recoveries) > _KEEP:
                del self._recoveries[next(iter(self._recoveries))]

    def resend_span(self, event: Resent, current: bool) -> _ResendSpan:
        """Open the span of the resend *event* announced; *current*: make it the current span."""
        if self._tracer is None:
            self._setup()
        from opentelemetry import context  # noqa: PLC0415 -- loaded by _setup
        from opentelemetry.trace import Link, SpanKind  # noqa: PLC0415

        links: tuple[Link, ...] = ()
        if event.recovery is not None:
            with self._recoveries_lock:
                recovery = self._recoveries.get(event.recovery)
            if recovery is not None:
                links = (Link(recovery),)
        span = self._tracer.start_span(
            RESEND_SPAN,
            kind=SpanKind.INTERNAL,
            links=links,
            attributes={
                **_request(event.host, event.method),
                "url.full": event.url,
                "http.request.resend_count": event.resend_count,
                "runpod.resend.reason": event.reason,
                "runpod.auth.fingerprint": event.fingerprint,
            },
        )
        token = context.attach(self._api.set_span_in_context(span)) if current else None
        return _ResendSpan(span, token)


class _ResendSpan:
    """One resend's span, current (with *token* to detach) or not."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any, token: Any) -> None:
        self._span = span
        self._token = token

    def end(self, status: int | None, error: BaseException | None) -> None:
        from opentelemetry import context  # noqa: PLC0415 -- loaded with the span
        from opentelemetry.trace import Status, StatusCode  # noqa: PLC0415

        span = self._span
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        # As OpenTelemetry's HTTP client spans: a 4xx or 5xx, or an exception, is an error.
        failure = str(status) if status is not None and status >= 400 else None  # noqa: PLR2004
        if error is not None:
            failure = type(error).__qualname__
        if failure is not None:
            span.set_attribute("error.type", failure)
            span.set_status(Status(StatusCode.ERROR))
        if self._token is not None:
            context.detach(self._token)
        span.end()


def _request(host: str, method: str) -> dict[str, str | int]:
    return {"server.address": host, "http.request.method": method}
