"""Who hears the events: a tuple of subscribers, replaced whole on every change.

Emitting reads the tuple once, so subscribing and unsubscribing from any thread never
races an emission. The first subscriber is the log (`_log`): the 401 and transient-retry
log lines are written from their events. Call sites still test `subscribers` before
building an event, so a tuple emptied (as tests do) costs one truth test an event.

Subscribers are called outside every lock of the library, and never fail a request: one
that raises is logged (``runpod.instrumentation.subscriber_failed``), one slower than
`SLOW` too (``subscriber_slow``). Those subscribed by default are called on one event
thread, in order, from a bounded queue: a request's only cost is the queue put, so a slow
or stuck subscriber delays no request (when the queue is full, events are dropped and
logged, ``events_dropped``). Inline ones (the built-in log and OpenTelemetry reporter,
and ``subscribe(..., inline=True)``) run on the request's thread or event loop, and must
be quick.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from .._hooks import describe
from .._logging import logger
from ._data import Event, Resent
from ._log import log

__all__ = [
    "ResendSpan",
    "Subscriber",
    "emit",
    "failed",
    "flush",
    "install_defaults",
    "resend_span",
    "subscribe",
    "subscribers",
]

Subscriber = Callable[[Event], object]
"""A callable taking one event; what it returns is ignored."""

subscribers: tuple[Subscriber, ...] = (log,)  # structlog first: see `_log`


class ResendSpan(Protocol):
    """A span around one resend, open while it is sent (see `resend_span`)."""

    def end(self, status: int | None, error: BaseException | None) -> None:
        """The resend got *status*, or failed with *error*: end the span."""


resend_span: Callable[[Resent, bool], ResendSpan] | None = None
"""Opens a span around a resend, given its `Resent` event (None: nobody traces them).

Its second argument says whether the span becomes the current one while the resend is
sent (so that the HTTP client's own instrumentation nests in it); httpx's auth flows,
which hand the request to httpx rather than send it, pass false. Set by
`install_defaults` when OpenTelemetry is there.
"""
_changing = threading.Lock()
_defaults_installed = False


def install_defaults() -> None:
    """Subscribe the built-in OpenTelemetry reporter, once, if ``opentelemetry-api`` is there.

    Called when a `Credentials` is made, not at import: looking for the package costs a
    few file-system lookups, and OpenTelemetry itself is imported only at the first event.
    """
    global _defaults_installed, subscribers, resend_span  # noqa: PLW0603 -- once per process
    if _defaults_installed:
        return
    with _changing:
        if _defaults_installed:
            return
        _defaults_installed = True
        if _has_opentelemetry():
            from ._otel import OpenTelemetry  # noqa: PLC0415 -- no OpenTelemetry import in it

            reporter = OpenTelemetry()
            subscribers = (*subscribers, reporter)
            resend_span = reporter.resend_span


def _has_opentelemetry() -> bool:
    import importlib.util  # noqa: PLC0415 -- once, at the first Credentials

    try:
        return importlib.util.find_spec("opentelemetry.metrics") is not None
    except ImportError:  # no "opentelemetry" package at all
        return False


SLOW = 0.1
"""Seconds: a subscriber's call that takes longer is logged (``subscriber_slow``)."""

QUEUE_SIZE = 10_000
"""Events waiting for the queued subscribers; more are dropped (``events_dropped``)."""


def subscribe(subscriber: Subscriber, *, inline: bool = False) -> Callable[[], None]:
    """Call *subscriber* with every event from now on; return a function that stops it.

    By default *subscriber* is called on the library's event thread, in order, so that
    one that is slow (or hangs) never delays a request: a request only puts its events
    on a queue of `QUEUE_SIZE`, and drops them when it is full. ``inline=True`` calls it
    on the thread (or event loop) of the request that made the event instead, as the
    built-in log and OpenTelemetry reporter are, for subscribers that need the request's
    context (its current span, its context variables): those must be quick.

    The same callable subscribed twice is called twice; each unsubscribe removes one.
    Unsubscribing twice is harmless. Events already queued still reach it.
    """
    global subscribers  # noqa: PLW0603 -- replaced whole, so readers need no lock
    token = _Subscription(subscriber) if inline else _Queued(subscriber)
    with _changing:
        subscribers = (*subscribers, token)

    def unsubscribe() -> None:
        global subscribers  # noqa: PLW0603
        with _changing:
            subscribers = tuple(s for s in subscribers if s is not token)

    return unsubscribe


def flush(timeout: float | None = None) -> bool:
    """Wait until the events emitted so far have reached the queued subscribers.

    Returns False if *timeout* seconds passed first. For tests, and for a program about
    to exit that wants its subscribers to have heard everything.
    """
    return _delivery.flush(timeout)


class _Subscription:
    """One inline subscription: its own identity, so that unsubscribing removes this one only."""

    __slots__ = ("subscriber",)

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber

    def __call__(self, event: Event) -> None:
        _call(self.subscriber, event)


class _Queued(_Subscription):
    """One subscription called on the event thread: emitting only queues the event."""

    __slots__ = ()

    def __call__(self, event: Event) -> None:
        _delivery.put(self.subscriber, event)


class _Delivery:
    """The queue of events for the queued subscribers, and the thread that calls them."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[Subscriber | None, Any]] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self.dropped = 0

    def put(self, subscriber: Subscriber, event: Event) -> None:
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait((subscriber, event))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                logger.warning(
                    "runpod.instrumentation.events_dropped",
                    dropped=self.dropped,
                    subscriber=_name(subscriber),
                    queue_size=self._queue.maxsize,
                )

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._run, name="resilient-runpod-events", daemon=True
                )
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        while True:
            subscriber, event = self._queue.get()
            if subscriber is None:
                event.set()  # a flush's marker: everything before it was delivered
            else:
                _call(subscriber, event)

    def flush(self, timeout: float | None) -> bool:
        if self._thread is None:
            return True
        marker = threading.Event()
        try:
            self._queue.put((None, marker), timeout=timeout)
        except queue.Full:
            return False
        return marker.wait(timeout)


def _call(subscriber: Subscriber, event: Event) -> None:
    """Call *subscriber*; log it if it is slow (`SLOW`). What it raises goes to `emit`."""
    started = time.perf_counter()
    try:
        subscriber(event)
    except Exception as exc:
        failed(subscriber, type(event).__name__, exc)
    took = time.perf_counter() - started
    if took > SLOW:
        logger.warning(
            "runpod.instrumentation.subscriber_slow",
            kind=type(event).__name__,
            subscriber=_name(subscriber),
            seconds=round(took, 3),
        )


_delivery = _Delivery()


def _after_fork_in_child() -> None:
    # The event thread stayed in the parent; events queued there are the parent's.
    global _delivery  # noqa: PLW0603
    _delivery = _Delivery()


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_after_fork_in_child)


def emit(event: Event) -> None:
    """Hand *event* to every subscriber; one that raises is logged and passed over.

    Call sites test `subscribers` first, so that no event is built for nobody.
    """
    for subscriber in subscribers:
        try:
            subscriber(event)
        except Exception as exc:  # the built-ins, or a queue that failed
            failed(subscriber, type(event).__name__, exc)


def failed(subscriber: object, kind: str, error: BaseException) -> None:
    """Log that *subscriber* raised *error* on an event of *kind*; the request goes on."""
    logger.warning(
        "runpod.instrumentation.subscriber_failed",
        kind=kind,
        subscriber=_name(subscriber),
        error=describe(error),
    )


def _name(subscription: object) -> str:
    subscriber = getattr(subscription, "subscriber", subscription)
    return getattr(subscriber, "__qualname__", type(subscriber).__qualname__)
