"""httpx adapters: a transport middleware (sync and async) and an `httpx.Auth`.

Both only translate between httpx and the engine (`_engine`): they stamp the key on
requests to RunPod's hosts, send, report statuses and ``Retry-After``, close discarded
responses. Requests to any other host pass through untouched and never see the key.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, Generator
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from .._answers import said
from .._engine import (
    DISCARD,
    UNAUTHORIZED,
    AsyncWire,
    Reply,
    Send,
    Wire,
    acarry_out,
    carry_out,
    resending,
    rule,
    run_async,
    run_sync,
    stands,
    warn_foreign_401,
)
from .._errors import TransientError
from .._hosts import AnyURL, query_text, without_api_key_param
from .._redact import also_as

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover
    from typing_extensions import Self

if TYPE_CHECKING:
    from .._credentials import Credentials

__all__ = ["AsyncResilientTransport", "ResilientTransport", "RunPodAuth"]

try:  # multipart bodies re-read (and rewind) their files on each iteration
    from httpx._multipart import MultipartStream as _MultipartStream
except ImportError:  # pragma: no cover -- a future httpx may move it; then we are conservative
    _MultipartStream = ()  # type: ignore[assignment,misc]


def _replayable(request: httpx.Request) -> bool:
    return isinstance(request.stream, (httpx.ByteStream, _MultipartStream))


def _body(request: httpx.Request) -> bytes | None:
    # Bytes, text and JSON were read when the request was made; a stream is not held whole.
    if not isinstance(request.stream, httpx.ByteStream):
        return None
    try:
        return request.content
    except httpx.RequestNotRead:
        return None


def _set_authorization_public(headers: httpx.Headers, value: str) -> None:
    headers["Authorization"] = value


def _set_authorization_listed(headers: httpx.Headers, value: str) -> None:
    # What ``headers["Authorization"] = value`` does (replace the first, drop the others,
    # else append), without re-encoding and re-scanning every header for each request.
    entries: list[tuple[bytes, bytes, bytes]] = headers._list  # noqa: SLF001 -- see below
    raw = value.encode(headers._encoding or "utf-8")  # noqa: SLF001
    entry = (b"Authorization", b"authorization", raw)
    found = -1
    for index in range(len(entries) - 1, -1, -1):
        if entries[index][1] == b"authorization":
            if found != -1:
                del entries[found]
            found = index
    if found == -1:
        entries.append(entry)
    else:
        entries[found] = entry


def _headers_are_listed() -> bool:
    headers = httpx.Headers({"A": "1", "authorization": "x", "Authorization": "y"})
    try:
        _set_authorization_listed(headers, "z")
    except (AttributeError, TypeError, ValueError):  # pragma: no cover -- a future httpx
        return False
    return headers.raw == [(b"A", b"1"), (b"Authorization", b"z")]


# Setting a header through ``httpx.Headers`` costs about as much as the rest of the
# wrapper together: it encodes the name and value and scans every header. httpx 0.23 to
# 0.28 keep headers as a list of (name, lower-case name, value) in ``_list``; the hot
# path writes the one entry there when this httpx still does (checked at import, above)
# and goes through the public API otherwise. Both give the same headers (tested).
_set_authorization = (
    _set_authorization_listed if _headers_are_listed() else _set_authorization_public
)


def _stamp(request: httpx.Request, key: str | None) -> None:
    """Put *key* where RunPod reads it, replacing any stale key the request carried."""
    if key is None:
        request.headers.pop("Authorization", None)
    else:
        _set_authorization(request.headers, f"Bearer {key}")
    if "api_key=" in query_text(request.url):  # a cheap test first: this runs on every request
        url = without_api_key_param(request.url)
        if url is not None:
            request.url = url


# The connection errors the engine handles, and which of them happen before any of the
# request went out.
_LOST = (httpx.TransportError,)


def _unsent(error: BaseException) -> bool:
    return isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout))


def _as_httpx_error(error: TransientError, request: httpx.Request) -> TransientError:
    """*error* as what httpx raises: the last send's transport error, else ``httpx.HTTPError``.

    httpx raises nothing for a status; ``HTTPError`` is what ``except`` clauses written
    for httpx catch. (Not ``HTTPStatusError``: there is no response to hand over.)
    """
    cause = error.__cause__
    base = type(cause) if isinstance(cause, httpx.TransportError) else httpx.HTTPError
    return also_as(error, base, request=request)  # kept as a copy without the key


def _retry_after(response: httpx.Response) -> str | None:
    value: str | None = response.headers.get("Retry-After")
    return value


def _close(response: httpx.Response) -> str | None:
    # Reading the (small) error body first lets the connection go back to the pool.
    try:
        body = response.read()
    finally:
        response.close()
    return said(response.headers.get("Content-Type"), body)


async def _aclose(response: httpx.Response) -> str | None:
    try:
        body = await response.aread()
    finally:
        await response.aclose()
    return said(response.headers.get("Content-Type"), body)


class _Request:
    """What both wires know of an httpx request: stamping it and reading its answers."""

    __slots__ = ("_transport", "body", "method", "replayable", "request", "url")
    url: AnyURL
    lost: tuple[type[BaseException], ...] = _LOST

    def __init__(self, request: httpx.Request, transport: object) -> None:
        self.request = request
        self.method = request.method
        self.url = request.url
        self.replayable = _replayable(request)
        self.body = _body(request)
        self._transport = transport

    def stamp(self, key: str | None) -> None:
        _stamp(self.request, key)

    def status(self, response: httpx.Response) -> int:
        return response.status_code

    def retry_after(self, response: httpx.Response) -> str | None:
        return _retry_after(response)

    def unsent(self, error: BaseException) -> bool:
        return _unsent(error)


class _Wire(_Request, Wire[httpx.Response]):
    """A request through an httpx transport, for the engine."""

    __slots__ = ()
    _transport: httpx.BaseTransport

    def send(self) -> httpx.Response:
        return self._transport.handle_request(self.request)

    def discard(self, response: httpx.Response) -> str | None:
        return _close(response)


class _AsyncWire(_Request, AsyncWire[httpx.Response]):
    """A request through an async httpx transport, for the engine."""

    __slots__ = ()
    _transport: httpx.AsyncBaseTransport

    async def send(self) -> httpx.Response:
        return await self._transport.handle_async_request(self.request)

    async def discard(self, response: httpx.Response) -> str | None:
        return await _aclose(response)


class ResilientTransport(httpx.BaseTransport):
    """Wrap an httpx transport so RunPod 401s recover the key and transient failures retry.

    ::

        credentials = Credentials(recovery=recovery.from_file("/var/run/secrets/runpod"))
        client = httpx.Client(transport=ResilientTransport(credentials))

    Args:
        credentials: The key, the recovery and the retry policy, shareable by many clients.
        transport: The transport that does the I/O (default: ``httpx.HTTPTransport()``).

    Raises (from requests to RunPod hosts):
        AuthenticationError: the key was rejected and recovery found none accepted.
        PermissionDeniedError: RunPod answered 403: the key is valid but may not do this.
        TransientError: 429/5xx/lost connections outlasted the retry policy, or a retry
            would be unsafe (``POST …/run`` after a 502). It is also the last send's
            ``httpx.TransportError`` (``ConnectError``, ...), or ``httpx.HTTPError`` for
            a status, so ``except`` clauses written for httpx still catch it.
        BodyNotReplayableError: a streamed body would have to be sent again.
    """

    def __init__(
        self, credentials: Credentials, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.credentials = credentials
        self._transport = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request*; to RunPod hosts with the current key, recovering on 401."""
        try:
            return run_sync(self.credentials, _Wire(request, self._transport))
        except TransientError as exc:
            raise _as_httpx_error(exc, request) from exc.__cause__

    def __enter__(self) -> Self:
        self._transport.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        self._transport.__exit__(exc_type, exc_value, traceback)

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()

    def __repr__(self) -> str:
        return f"<ResilientTransport {self.credentials!r} over {type(self._transport).__name__}>"


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """`ResilientTransport` for ``httpx.AsyncClient`` on asyncio or trio; never blocks the loop."""

    def __init__(
        self, credentials: Credentials, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.credentials = credentials
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request*; to RunPod hosts with the current key, recovering on 401."""
        try:
            return await run_async(self.credentials, _AsyncWire(request, self._transport))
        except TransientError as exc:
            raise _as_httpx_error(exc, request) from exc.__cause__

    async def __aenter__(self) -> Self:
        await self._transport.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self._transport.__aexit__(exc_type, exc_value, traceback)

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()

    def __repr__(self) -> str:
        return (
            f"<AsyncResilientTransport {self.credentials!r} over {type(self._transport).__name__}>"
        )


class RunPodAuth(httpx.Auth):
    """The same recovery as an ``httpx.Auth``, for those who prefer ``auth=``.

    ::

        client = httpx.Client(auth=RunPodAuth(credentials))

    Works with ``httpx.Client`` and ``httpx.AsyncClient`` (asyncio or trio). httpx keeps
    each discarded response in the final response's ``history``. Statuses (401, 403,
    429, 5xx) are handled as by the transports; a lost connection is not, as httpx
    raises it past the auth flow: use the transport for that.
    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Carry out the engine's sends from httpx's sync auth hook."""
        credentials = self.credentials
        if not credentials.hosts.allows(request.url):
            if (yield request).status_code == UNAUTHORIZED:
                warn_foreign_401(request.url)
            return
        state = credentials.current
        _stamp(request, state.key)
        response = yield request
        if stands(credentials, state, response.status_code):
            return
        first = Reply(response.status_code, _retry_after(response))
        flow = rule(
            credentials,
            request.method,
            request.url,
            state,
            first,
            replayable=_replayable(request),
            body=_body(request),
        )
        reply: object = None
        try:
            while True:
                try:
                    command = flow.send(reply)
                except StopIteration:
                    return
                except TransientError as exc:
                    raise _as_httpx_error(exc, request) from exc.__cause__
                if isinstance(command, Send):
                    _stamp(request, command.key)
                    # httpx sends it, after this generator yields: the span cannot be
                    # current there, but it times the resend and carries its count.
                    with resending(command, current=False) as trace:
                        response = yield request
                        reply = trace.got(Reply(response.status_code, _retry_after(response)))
                    continue
                if command is DISCARD:
                    # httpx keeps it in `history` and reads it there: read it first, for
                    # what a refusal said.
                    reply = said(response.headers.get("Content-Type"), response.read())
                    continue
                reply = carry_out(credentials, flow, command)  # recovery, or a pause
        finally:
            flow.close()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Carry out the engine's sends from httpx's async auth hook."""
        credentials = self.credentials
        if not credentials.hosts.allows(request.url):
            if (yield request).status_code == UNAUTHORIZED:
                warn_foreign_401(request.url)
            return
        state = credentials.current
        _stamp(request, state.key)
        response = yield request
        if stands(credentials, state, response.status_code):
            return
        first = Reply(response.status_code, _retry_after(response))
        flow = rule(
            credentials,
            request.method,
            request.url,
            state,
            first,
            replayable=_replayable(request),
            body=_body(request),
        )
        reply: object = None
        try:
            while True:
                try:
                    command = flow.send(reply)
                except StopIteration:
                    return
                except TransientError as exc:
                    raise _as_httpx_error(exc, request) from exc.__cause__
                if isinstance(command, Send):
                    _stamp(request, command.key)
                    # httpx sends it, after this generator yields: the span cannot be
                    # current there, but it times the resend and carries its count.
                    with resending(command, current=False) as trace:
                        response = yield request
                        reply = trace.got(Reply(response.status_code, _retry_after(response)))
                    continue
                if command is DISCARD:
                    body = await response.aread()
                    reply = said(response.headers.get("Content-Type"), body)
                    continue
                reply = await acarry_out(credentials, flow, command)  # recovery, or a pause
        finally:
            flow.close()

    def __repr__(self) -> str:
        return f"<RunPodAuth {self.credentials!r}>"
