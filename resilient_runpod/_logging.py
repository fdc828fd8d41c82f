"""structlog events, and keeping keys out of every log line.

Events are fixed dotted names on the ``resilient_runpod`` logger:

- ``runpod.auth.rejected`` (warning): RunPod answered 401 to a key.
- ``runpod.auth.recovered`` (info): a recovery hook produced a new key, now in use.
- ``runpod.auth.recovery_failed`` (error): a request gave up; ``reason`` says why.

Fields name keys by fingerprint only. `scrub_secrets` is a processor users can add to
their own chain so that keys logged by *other* code are removed too.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import MutableMapping
from typing import Any

import structlog

from ._hosts import redact_text

__all__ = ["install_httpx_filter", "known_keys", "logger", "remember_key", "scrub_secrets"]

logger = structlog.get_logger("resilient_runpod")

# Keys this process has held, so that legacy keys (no rpa_ prefix to match) can be
# scrubbed too. Bounded: a long-lived worker rotating every hour must not grow it forever.
_known_keys: deque[str] = deque(maxlen=64)
_known_lock = threading.Lock()


def remember_key(key: str | None) -> None:
    """Let `scrub_secrets` and the httpx filter remove *key* wherever it shows up."""
    if key:
        with _known_lock:
            if key not in _known_keys:
                _known_keys.append(key)


def known_keys() -> tuple[str, ...]:
    """The keys `remember_key` was told about, for exact-match scrubbing."""
    return tuple(_known_keys)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value, tuple(_known_keys))
    if isinstance(value, dict):
        return {k: _scrub_field(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        # Exceptions are rendered later by format_exc_info; scrub their text now.
        text = redact_text(str(value), tuple(_known_keys))
        return value if text == str(value) else f"{type(value).__name__}: {text}"
    return value


_SECRET_FIELDS = frozenset({"api_key", "apikey", "authorization", "key", "token", "password"})


def _scrub_field(name: Any, value: Any) -> Any:
    if isinstance(name, str) and name.lower() in _SECRET_FIELDS and isinstance(value, str):
        return "[REDACTED]"
    return _scrub(value)


def scrub_secrets(
    _logger: Any, _method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that removes RunPod keys from every event.

    Removes ``rpa_``/``rps_`` keys (replaced by their fingerprint), ``Authorization``
    values, ``api_key=``-style query values, fields named like secrets (``api_key``,
    ``authorization``, ...) and any key a `Credentials` in this process has held. Put it
    before the renderer::

        structlog.configure(processors=[..., resilient_runpod.scrub_secrets, renderer])
    """
    for name in list(event_dict):
        event_dict[name] = _scrub_field(name, event_dict[name])
    return event_dict


class _RedactingFilter(logging.Filter):
    """Rewrites httpx's own "HTTP Request: GET https://...?api_key=..." lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = redact_text(message, tuple(_known_keys))
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


_filter = _RedactingFilter("resilient_runpod")


def install_httpx_filter() -> None:
    """Make sure httpx's and httpcore's log records never carry a key. Idempotent."""
    for name in ("httpx", "httpcore"):
        stdlib_logger = logging.getLogger(name)
        if _filter not in stdlib_logger.filters:
            stdlib_logger.addFilter(_filter)
