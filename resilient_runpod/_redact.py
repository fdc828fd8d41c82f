"""Keeping keys out of values and exception chains before anything shows them.

`redact_text` (in `_hosts`) cleans a string. This module applies it to what a log event or
an error carries: nested containers, bytes, objects whose ``repr`` shows a key, formatted
tracebacks, the ``__cause__``/``__context__`` chain of an exception the library is
about to raise, and the HTTP requests and responses errors hand over (copied, so that
what was sent is not altered).
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Mapping
from typing import Any, TypeVar, cast

import httpx

from ._errors import RecoveryError, also_class, install_request_redactor
from ._hosts import redact_text, redact_url

__all__ = [
    "SECRET_FIELDS",
    "also_as",
    "redacted_request",
    "redacted_response",
    "scrub",
    "scrub_exc_info",
    "scrub_field",
    "scrubbed_cause",
    "scrubbed_exception",
]

E = TypeVar("E", bound=BaseException)

SECRET_FIELDS = frozenset({"api_key", "apikey", "authorization", "key", "token", "password"})
"""Field names whose string values are secrets whatever they look like."""

_REDACTED = "[REDACTED]"
# A chain longer than this is cut: exceptions can (rarely) form cycles through __context__.
_MAX_CHAIN = 32
# Values whose repr never holds a secret: not worth formatting.
_PLAIN = (int, float, bool, type(None))


def scrub(value: Any) -> Any:
    """*value* with every key removed, keeping its type where a secret was not found.

    Strings, bytes, mappings, lists, tuples and sets are cleaned item by item; an
    exception or any other object whose ``repr`` shows a key becomes that text, cleaned.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (bytes, bytearray)):
        return _scrub_bytes(value)
    if isinstance(value, Mapping):
        return {k: scrub_field(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return _scrub_items(value)
    if isinstance(value, BaseException):
        shown = f"{type(value).__name__}: {value}"
        leaks = _chain_leaks(value)
    else:
        shown = _safe_repr(value)
        leaks = False
    clean = redact_text(shown)
    return clean if leaks or clean != shown else value


def _scrub_bytes(value: bytes | bytearray) -> bytes | bytearray:
    text = bytes(value).decode("utf-8", "surrogateescape")
    clean = redact_text(text)
    return value if clean == text else type(value)(clean.encode("utf-8", "surrogateescape"))


def _scrub_items(value: list[Any] | tuple[Any, ...] | set[Any] | frozenset[Any]) -> Any:
    items = [scrub(v) for v in value]
    try:
        return type(value)(items)
    except TypeError:  # a namedtuple or a subclass with its own constructor
        return items


def scrub_field(name: object, value: Any) -> Any:
    """`scrub` *value*, and hide it whole if the field's *name* says it is a secret."""
    if isinstance(name, str) and name.lower() in SECRET_FIELDS and isinstance(value, str):
        return _REDACTED
    return scrub(value)


def scrub_exc_info(exc_info: object) -> str | None:
    """The formatted traceback of *exc_info*, cleaned, if it showed a key; else ``None``.

    *exc_info* is what logging and structlog accept: ``True`` (the exception being
    handled), an exception, or a ``sys.exc_info()`` tuple.
    """
    error: BaseException | None
    if exc_info is True:
        error = sys.exc_info()[1]
    elif isinstance(exc_info, BaseException):
        error = exc_info
    elif isinstance(exc_info, tuple) and len(exc_info) == 3:  # noqa: PLR2004 -- (type, value, tb)
        error = exc_info[1] if isinstance(exc_info[1], BaseException) else None
    else:
        error = None
    if error is None:
        return None
    text = "".join(traceback.format_exception(error)).rstrip("\n")
    clean = redact_text(text)
    return None if clean == text else clean


def scrubbed_exception(error: BaseException) -> BaseException:
    """*error* itself if nothing in its chain shows a key; else a stand-in that does not.

    The stand-in is a `RecoveryError` whose message is ``"<Type>: <message, cleaned>"``,
    with *error*'s traceback (code lines, not values) and its cause and context replaced
    by stand-ins the same way. The library chains what this returns, never a hook's
    exception that quotes a key.
    """
    return _scrubbed(error, 0)


def _scrubbed(error: BaseException, depth: int) -> BaseException:
    if not _chain_leaks(error):
        return error
    stand_in = RecoveryError(redact_text(f"{type(error).__name__}: {error}"))
    stand_in.__traceback__ = error.__traceback__
    if depth >= _MAX_CHAIN:  # a cycle, or a chain nobody reads that far: cut it here
        return stand_in
    cause, context = error.__cause__, error.__context__
    stand_in.__cause__ = _scrubbed(cause, depth + 1) if cause is not None else None
    stand_in.__context__ = _scrubbed(context, depth + 1) if context is not None else None
    stand_in.__suppress_context__ = error.__suppress_context__
    notes = getattr(error, "__notes__", None)
    if isinstance(notes, list):
        stand_in.__notes__ = [redact_text(str(note)) for note in notes]
    return stand_in


def _shows_key(error: BaseException) -> bool:
    texts = [str(error), repr(error), *map(str, getattr(error, "__notes__", None) or ())]
    texts += [_safe_repr(arg) for arg in error.args]
    members = getattr(error, "exceptions", None)  # an ExceptionGroup's (Python 3.11+)
    if isinstance(members, (list, tuple)):
        texts += [f"{type(e).__name__}: {e!r}" for e in members]
    return any(redact_text(text) != text for text in texts)


def _chain_leaks(error: BaseException) -> bool:
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending and len(seen) < _MAX_CHAIN:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if _shows_key(current):
            return True
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return False


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not break logging
        return f"<{type(value).__name__} with a failing repr>"


# The attributes HTTP clients' errors keep a request and a response in: requests'
# ``request``/``response``, httpx's ``_request`` (behind its ``request`` property).
_REQUEST_ATTRIBUTES = ("request", "_request")
_RESPONSE_ATTRIBUTES = ("response",)


def _scrub_headers(items: Any) -> list[tuple[str, str]]:
    return [(name, scrub_field(name, value)) for name, value in items]


def redacted_request(request: Any) -> Any:
    """A copy of an HTTP client's *request* without keys, to hand over in an error.

    For an ``httpx.Request`` or a requests ``PreparedRequest``: the URL through
    `redact_url`, the ``Authorization`` header (and any named like a secret) replaced,
    the body cleaned; the method and the rest kept. ``None`` stays ``None``; any other
    object is returned `scrub`-bed.
    """
    if request is None:
        return None
    if isinstance(request, httpx.Request):
        try:
            body = request.content
        except httpx.RequestNotRead:  # a stream nobody read: nothing of it to show
            body = b""
        return httpx.Request(
            request.method,
            redact_url(request.url),
            headers=_scrub_headers(
                (n, v) for n, v in request.headers.multi_items() if n.lower() != "content-length"
            ),
            content=bytes(_scrub_bytes(body)),
        )
    if hasattr(request, "prepare_url") and hasattr(request, "copy"):  # requests' PreparedRequest
        copy = request.copy()
        copy.url = redact_url(request.url) if request.url else request.url
        copy.headers = type(request.headers)(_scrub_headers(request.headers.items()))
        if isinstance(copy.body, (str, bytes)):
            copy.body = scrub(copy.body)
        return copy
    return scrub(request)


def redacted_response(response: Any) -> Any:
    """A copy of an HTTP client's *response* without keys (its request, headers, body)."""
    if response is None:
        return None
    if isinstance(response, httpx.Response):
        try:
            body = response.content
        except httpx.ResponseNotRead:
            body = b""
        request = response._request  # noqa: SLF001 -- the property raises when unset
        return httpx.Response(
            response.status_code,
            headers=_scrub_headers(
                (n, v) for n, v in response.headers.multi_items() if n.lower() != "content-length"
            ),
            content=bytes(_scrub_bytes(body)),
            request=redacted_request(request),
        )
    if hasattr(response, "raw") and hasattr(response, "iter_content"):  # requests' Response
        copy = type(response)()
        copy.status_code, copy.reason = response.status_code, response.reason
        copy.url = redact_url(response.url) if response.url else response.url
        copy.headers = type(response.headers)(_scrub_headers(response.headers.items()))
        copy.request = redacted_request(response.request)
        copy.encoding = response.encoding
        consumed = response.__dict__.get("_content")
        copy._content = _scrub_bytes(consumed) if isinstance(consumed, bytes) else b""  # noqa: SLF001
        return copy
    return scrub(response)


def scrubbed_cause(error: BaseException | None) -> BaseException | None:
    """*error*, fit to chain under an error of ours: no key in its chain, copies carried.

    Its chain's text is cleaned as by `scrubbed_exception`, and the requests and
    responses its chain carries are replaced by redacted copies: errors of HTTP clients
    (requests' ``ConnectionError``, httpx's transport errors) keep the request they
    failed on, ``Authorization`` header and ``?api_key=`` included.
    """
    if error is None:
        return None
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending and len(seen) < _MAX_CHAIN:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        state = getattr(current, "__dict__", {})
        for name in _REQUEST_ATTRIBUTES:
            if state.get(name) is not None:
                state[name] = redacted_request(state[name])
        for name in _RESPONSE_ATTRIBUTES:
            if state.get(name) is not None:
                state[name] = redacted_response(state[name])
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]
    return scrubbed_exception(error)


def also_as(error: E, *bases: type[BaseException], **attributes: object) -> E:
    """*error*, copied as an instance of its own class and of *bases* too.

    For ``except`` clauses written for the errors we stand in for: a `TransientError`
    after lost connections is also the ``requests.ConnectionError`` that requests
    would have raised. The copy keeps the message, every attribute (``reason``,
    ``history``, ...) and the cause; *attributes* are those the bases' own
    ``__init__`` would have set (requests' ``request`` and ``response``), never run
    here. The requests and responses the cause's chain carries are replaced by copies
    without keys, and so is a ``request`` handed over here. Bases *error* already is are
    left out; with none left, *error* itself.
    """
    bases = tuple(base for base in bases if not isinstance(error, base))
    if not bases:
        return error
    cls = also_class(type(error), bases)
    copy = cls.__new__(cls, *error.args)
    copy.args = error.args
    copy.__dict__.update(error.__dict__)
    for name, value in attributes.items():
        setattr(copy, name, value)  # through a property where there is one (`request`)
    # The last send's error keeps the request it failed on, key and all. Replaced in
    # *error* too: the adapters raise the copy ``from error.__cause__``, in *error*'s
    # handler (its __context__).
    error.__cause__ = scrubbed_cause(error.__cause__)
    copy.__cause__ = error.__cause__
    copy.__suppress_context__ = True  # the original is this error, not its context
    return cast("E", copy)


install_request_redactor(redacted_request)
