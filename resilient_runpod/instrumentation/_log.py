"""The log as a subscriber: the events that are log lines too, written through structlog.

Subscribed when the library is imported, before any other subscriber, so that each of
these lines is written when its event happens, with the event's own fields (and
``status`` for a 401). The other events are logged where they happen, with more context
than their typed event carries (the recovery's source, the hook's error).
"""

from __future__ import annotations

from .._logging import logger
from ._data import Event, Rejected, TransientRetry

__all__ = ["log"]


def log(event: Event) -> None:
    """Write *event* as its structlog event, if it is one that is written from here."""
    if type(event) is Rejected:
        logger.warning(
            "runpod.auth.rejected",
            method=event.method,
            url=event.url,
            status=401,
            attempt=event.attempt,
            fingerprint=event.fingerprint,
        )
    elif type(event) is TransientRetry:
        logger.warning(
            "runpod.transient.retry",
            method=event.method,
            url=event.url,
            status=event.status,
            reason=event.reason,
            attempt=event.attempt,
            wait=event.wait,
        )
