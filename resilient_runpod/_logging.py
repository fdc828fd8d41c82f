"""The library's events, sent where the application logs; no key in any library's records.

Events are fixed dotted names with key/value fields, ``runpod.auth.*`` for keys
(rejected, recovered, key_unchanged, hook_failed, recovery_failed, forbidden, ...) and
``runpod.transient.*`` for retries; the README's "Logging" section lists them all.

**Where they go.** If the application has configured structlog
(``structlog.is_configured()``), through its processors, on the ``resilient_runpod``
logger. Otherwise through stdlib `logging`, on the ``resilient_runpod`` logger, whose
level and handlers the application controls; the record carries the event name in
``record.event`` and the fields in ``record.fields``. That logger has only a
``NullHandler`` of its own (the stdlib's advice for libraries), so an application that
configured nothing sees nothing, and nothing is ever written to stdout. The choice is
made per event, so configuring structlog later takes effect at once.

**Keys in other libraries' records.** httpx, httpcore, urllib3, requests, aiohttp,
botocore, the runpod SDK and uvicorn log URLs and headers at DEBUG, where a key can sit
(``?api_key=``, an echoed header). A `logging.Filter` only sees the records of the
logger it is attached to, not those of its children (``httpcore`` does not see
``httpcore.http11``'s), and a filter on the application's handlers or a global record
factory would change logging for the whole process. So a scrub-only filter is attached
to each logger those libraries emit from, enumerated from their source (`EMITTERS`),
plus any logger under their names that exists by then, when a `Credentials` first
holds a key (`remember_key`), and again for each new key so that loggers created since
are covered. The filter rewrites a record's text only when it shows a key; it never
drops a record and changes no level or handler. Events of our own are scrubbed before
they are emitted, whichever way they go. botocore logs whole answers, the secret a
source reads among them, before anyone knows it is a key: in `reading_secret`, the
records botocore, boto3 and urllib3 make in that thread lose their arguments.

`scrub_secrets` is the same cleaning as a structlog processor, for applications whose own
events may carry keys.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog

from ._hosts import redact_text
from ._keys import known_keys, note_key
from ._redact import scrub_exc_info, scrub_field

__all__ = [
    "EMITTERS",
    "LOGGER_NAME",
    "guard_loggers",
    "known_keys",
    "logger",
    "reading_secret",
    "remember_key",
    "scrub_secrets",
]

LOGGER_NAME = "resilient_runpod"
"""The logger (stdlib or structlog) the library's events are emitted on."""

EMITTERS = (
    "httpx",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
    "urllib3",
    "urllib3.connection",
    "urllib3.connectionpool",
    "urllib3.poolmanager",
    "urllib3.response",
    "urllib3.util.retry",
    "requests",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "aiohttp.websocket",
    "runpod",
    "runpod upload utility",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "botocore.args",
    "botocore.auth",
    "botocore.awsrequest",
    "botocore.client",
    "botocore.compat",
    "botocore.compress",
    "botocore.configprovider",
    "botocore.credentials",
    "botocore.discovery",
    "botocore.endpoint",
    "botocore.endpoint_provider",
    "botocore.handlers",
    "botocore.history",
    "botocore.hooks",
    "botocore.httpchecksum",
    "botocore.httpsession",
    "botocore.loaders",
    "botocore.monitoring",
    "botocore.paginate",
    "botocore.parsers",
    "botocore.plugin",
    "botocore.regions",
    "botocore.response",
    "botocore.retries.adaptive",
    "botocore.retries.special",
    "botocore.retries.standard",
    "botocore.retryhandler",
    "botocore.session",
    "botocore.tokens",
    "botocore.useragent",
    "botocore.utils",
    "botocore.waiter",
    "botocore",
    LOGGER_NAME,
)
"""The loggers the libraries in the stack create records on, read from their source."""

# Loggers created under these names later (a new module of one of those libraries) are
# guarded at the next new key.
_FAMILIES = (
    "httpx",
    "httpcore",
    "urllib3",
    "requests",
    "aiohttp",
    "runpod",
    "uvicorn",
    "botocore",
    "boto3",
)
# While a source reads a secret in a thread, these libraries' records made in that
# thread are shown without their arguments: botocore logs whole response bodies
# (``SecretString`` and all) at DEBUG, before the key is known to be one.
_WITHHELD_FAMILIES = ("botocore", "boto3", "urllib3")
_FORMAT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa]")
_WITHHELD = "[withheld: a secret was being read]"
_reading = threading.local()

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}


class _RedactingFilter(logging.Filter):
    """Rewrites a record whose message or traceback shows a key; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(_reading, "depth", 0) and record.name.startswith(_WITHHELD_FAMILIES):
            _withhold(record)
        try:
            message = record.getMessage()
        except Exception:  # a broken log call: the handler reports it, as without us
            return True
        scrubbed = redact_text(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        if record.exc_info:
            text = scrub_exc_info(record.exc_info)
            if text is not None:  # the formatter would print the key: print this instead
                record.exc_info, record.exc_text = None, text
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def _withhold(record: logging.LogRecord) -> None:
    """Show *record* without its arguments: ``Response body: [withheld: ...]``."""
    if record.args:
        template = str(record.msg).replace("%%", "\0")
        record.msg = _FORMAT_SPEC.sub(_WITHHELD, template).replace("\0", "%")
        record.args = ()
    if record.exc_info or record.exc_text:
        record.exc_info, record.exc_text = None, _WITHHELD


@contextlib.contextmanager
def reading_secret() -> Iterator[None]:
    """Keep this thread's botocore, boto3 and urllib3 records free of what they answered.

    In this block, their records are shown without their arguments (a response body
    holding the secret, above all). For sources that call a client library to read a
    secret: the key read is not known yet, so it cannot be scrubbed by value; the
    library's record of the answer is kept out instead.
    """
    guard_loggers()  # loggers that library created since the last key get the filter too
    _reading.depth = getattr(_reading, "depth", 0) + 1
    try:
        yield
    finally:
        _reading.depth -= 1


_filter = _RedactingFilter(LOGGER_NAME)
_guard_lock = threading.Lock()


def guard_loggers() -> None:
    """Attach the scrubbing filter to every logger in `EMITTERS` and their families.

    Idempotent; loggers that do not exist yet are created (as their library would on
    import), so they carry the filter from their first record.
    """
    with _guard_lock:
        names = set(EMITTERS)
        for name in list(logging.Logger.manager.loggerDict):
            if any(name == f or name.startswith(f + ".") for f in _FAMILIES):
                names.add(name)
        for name in names:
            stdlib_logger = logging.getLogger(name)
            if _filter not in stdlib_logger.filters:
                stdlib_logger.addFilter(_filter)


def remember_key(key: str | None) -> None:
    """Scrub *key* wherever it shows up from now on: events, errors, other libraries' logs."""
    if note_key(key):
        guard_loggers()


class _Events:
    """The library's event logger: ``logger.warning("runpod.auth.rejected", status=401)``.

    Goes through structlog when the application configured it, else through stdlib
    logging; fields are scrubbed either way.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._stdlib = logging.getLogger(name)
        self._stdlib.addHandler(logging.NullHandler())
        self._structlog = structlog.get_logger(name)

    def debug(self, event: str, **fields: Any) -> None:
        """Emit *event* at DEBUG."""
        self._emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        """Emit *event* at INFO."""
        self._emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        """Emit *event* at WARNING."""
        self._emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        """Emit *event* at ERROR."""
        self._emit("error", event, fields)

    def critical(self, event: str, **fields: Any) -> None:
        """Emit *event* at CRITICAL."""
        self._emit("critical", event, fields)

    def _emit(self, method: str, event: str, fields: dict[str, Any]) -> None:
        if structlog.is_configured():
            clean = {name: scrub_field(name, value) for name, value in fields.items()}
            getattr(self._structlog, method)(redact_text(event), **clean)
            return
        level = _LEVELS[method]
        if not self._stdlib.isEnabledFor(level):
            return  # the common case at INFO and DEBUG: format nothing
        clean = {name: scrub_field(name, value) for name, value in fields.items()}
        event = redact_text(event)
        self._stdlib.log(
            level,
            "%s",
            _render(event, clean),
            extra={"event": event, "fields": clean},
            stacklevel=3,  # the line that emitted the event, not this module
        )

    def __repr__(self) -> str:
        return f"<resilient_runpod events on logger {self._name!r}>"


def _render(event: str, fields: dict[str, Any]) -> str:
    """``event key=value ...``, quoting values with spaces, as logfmt does."""
    parts = [event]
    for name, value in fields.items():
        text = value if isinstance(value, str) else repr(value)
        if not text or any(c in text for c in ' "='):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{name}={text}")
    return " ".join(parts)


logger = _Events(LOGGER_NAME)


def scrub_secrets(
    _logger: Any, _method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor that removes RunPod keys from every event.

    Removes ``rpa_``/``rps_`` keys (replaced by their fingerprint), ``Authorization``
    values, ``api_key=``-style query values, fields named like secrets (``api_key``,
    ``authorization``, ...) and any key a `Credentials` in this process has held, from
    strings, bytes, containers and objects whose ``repr`` shows one. An ``exc_info`` whose
    traceback shows a key is replaced by the cleaned traceback in ``exception``, so it
    works before or after ``format_exc_info``. Put it before the renderer::

        structlog.configure(processors=[..., resilient_runpod.scrub_secrets, renderer])
    """
    exc_info = event_dict.get("exc_info")
    if exc_info:
        text = scrub_exc_info(exc_info)
        if text is not None:
            del event_dict["exc_info"]
            event_dict["exception"] = text
    for name in list(event_dict):
        event_dict[name] = scrub_field(name, event_dict[name])
    return event_dict
