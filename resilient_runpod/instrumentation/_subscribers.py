"""Who hears the events: a tuple of subscribers, replaced whole on every change.

Emitting reads the tuple once, so subscribing and unsubscribing from any thread never
races an emission. The first subscriber is the log (`_log`): the 401 and transient-retry
log lines are written from their events. Call sites still test `subscribers` before
building an event, so a tuple emptied (as tests do) costs one truth test an event.

Subscribers are called inline, on the thread (or event loop) of the request that made
the event, never under a lock of the library. A subscriber that raises is logged
(``runpod.instrumentation.subscriber_failed``) and the request goes on. One that is slow
delays that request only by its own time: subscribers must be quick, and hand anything
slow (a network export) to a queue of their own.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from typing import Protocol

from .._hooks import describe
from .._logging import logger
from ._data import Event, Resent
from ._log import log

__all__ = [
    "ResendSpan",
    "Subscriber",
    "emit",
    "failed",
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
    try:
        return importlib.util.find_spec("opentelemetry.metrics") is not None
    except ImportError:  # no "opentelemetry" package at all
        return False


def subscribe(subscriber: Subscriber) -> Callable[[], None]:
    """Call *subscriber* with every event from now on; return a function that stops it.

    The same callable subscribed twice is called twice; each unsubscribe removes one.
    Unsubscribing twice is harmless.
    """
    global subscribers  # noqa: PLW0603 -- replaced whole, so readers need no lock
    token = _Subscription(subscriber)
    with _changing:
        subscribers = (*subscribers, token)

    def unsubscribe() -> None:
        global subscribers  # noqa: PLW0603
        with _changing:
            subscribers = tuple(s for s in subscribers if s is not token)

    return unsubscribe


class _Subscription:
    """One subscription: its own identity, so that unsubscribing removes this one only."""

    __slots__ = ("subscriber",)

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber

    def __call__(self, event: Event) -> object:
        return self.subscriber(event)


def emit(event: Event) -> None:
    """Hand *event* to every subscriber; one that raises is logged and passed over.

    Call sites test `subscribers` first, so that no event is built for nobody.
    """
    for subscriber in subscribers:
        try:
            subscriber(event)
        except Exception as exc:
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
