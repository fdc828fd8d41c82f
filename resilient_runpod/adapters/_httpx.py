"""httpx adapters: a transport middleware (sync and async) and an `httpx.Auth`.

Both only translate between httpx and the engine (`_engine.negotiate`): they stamp
the key on requests to RunPod's hosts, report statuses, close discarded responses.
Requests to any other host pass through untouched and never see the key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING

import httpx

from .._engine import Negotiation, Recover, Send, Sleep, negotiate, run_async, run_sync
from .._errors import AuthenticationError
from .._hosts import with_api_key_param
from .._logging import install_httpx_filter

if TYPE_CHECKING:
    from .._credentials import Credentials

__all__ = ["AsyncResilientTransport", "ResilientTransport", "RunPodAuth"]

try:  # multipart bodies re-read (and rewind) their files on each iteration
    from httpx._multipart import MultipartStream as _MultipartStream
except ImportError:  # pragma: no cover -- a future httpx may move it; then we are conservative
    _MultipartStream = ()  # type: ignore[assignment,misc]


def _replayable(request: httpx.Request) -> bool:
    return isinstance(request.stream, (httpx.ByteStream, _MultipartStream))


def _stamp(request: httpx.Request, key: str | None) -> None:
    """Put *key* where RunPod reads it, replacing any stale key the request carried."""
    if key is None:
        request.headers.pop("Authorization", None)
    else:
        request.headers["Authorization"] = f"Bearer {key}"
    if b"api_key=" in request.url.query:  # a cheap test first: this runs on every request
        url = with_api_key_param(request.url, key)
        if url is not None:
            request.url = url


class ResilientTransport(httpx.BaseTransport):
    """Wrap an httpx transport so RunPod 401s recover the key and retry.

    ::

        credentials = Credentials(recovery=recovery.from_file("/var/run/secrets/runpod"))
        client = httpx.Client(transport=ResilientTransport(credentials))

    Args:
        credentials: The key and the recovery policy, shareable by many clients.
        transport: The transport that does the I/O (default: ``httpx.HTTPTransport()``).

    Raises (from requests to RunPod hosts):
        AuthenticationError: the key was rejected and recovery found none accepted.
        PermissionDeniedError: RunPod answered 403: the key is valid but may not do this.
        BodyNotReplayableError: recovered, but a streamed body cannot be resent.
    """

    def __init__(
        self, credentials: Credentials, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.credentials = credentials
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        install_httpx_filter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request*; to RunPod hosts with the current key, recovering on 401."""
        inner = self._transport
        if not self.credentials.hosts.allows(request.url):
            return inner.handle_request(request)

        def send(key: str | None) -> httpx.Response:
            _stamp(request, key)
            return inner.handle_request(request)

        return run_sync(
            self.credentials,
            request.method,
            request.url,
            send,
            _status,
            _close,
            replayable=_replayable(request),
        )

    def close(self) -> None:
        """Close the wrapped transport."""
        self._transport.close()

    def __repr__(self) -> str:
        return f"<ResilientTransport {self.credentials!r} over {type(self._transport).__name__}>"


class AsyncResilientTransport(httpx.AsyncBaseTransport):
    """`ResilientTransport` for ``httpx.AsyncClient``; recovery never blocks the event loop."""

    def __init__(
        self, credentials: Credentials, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.credentials = credentials
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        install_httpx_filter()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send *request*; to RunPod hosts with the current key, recovering on 401."""
        inner = self._transport
        if not self.credentials.hosts.allows(request.url):
            return await inner.handle_async_request(request)

        async def send(key: str | None) -> httpx.Response:
            _stamp(request, key)
            return await inner.handle_async_request(request)

        return await run_async(
            self.credentials,
            request.method,
            request.url,
            send,
            _status,
            _aclose,
            replayable=_replayable(request),
        )

    async def aclose(self) -> None:
        """Close the wrapped transport."""
        await self._transport.aclose()

    def __repr__(self) -> str:
        return (
            f"<AsyncResilientTransport {self.credentials!r} over {type(self._transport).__name__}>"
        )


def _status(response: httpx.Response) -> int:
    return response.status_code


def _close(response: httpx.Response) -> None:
    # Reading the (small) 401 body first lets the connection go back to the pool.
    try:
        response.read()
    finally:
        response.close()


async def _aclose(response: httpx.Response) -> None:
    try:
        await response.aread()
    finally:
        await response.aclose()


class RunPodAuth(httpx.Auth):
    """The same recovery as an ``httpx.Auth``, for those who prefer ``auth=``.

    ::

        client = httpx.Client(auth=RunPodAuth(credentials))

    Works with ``httpx.Client`` and ``httpx.AsyncClient`` alike. httpx keeps each
    rejected response in the final response's ``history``.
    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        install_httpx_filter()

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        """Drive the engine from httpx's sync auth hook."""
        if not self.credentials.hosts.allows(request.url):
            yield request
            return
        flow = self._negotiate(request)
        reply: int | None = None
        try:
            while True:
                command = flow.send(reply)
                reply = None
                if type(command) is Send:
                    _stamp(request, command.key)
                    reply = (yield request).status_code
                elif type(command) is Recover:
                    try:
                        self.credentials.recover(command.generation, command.context)
                    except AuthenticationError as exc:
                        flow.throw(exc)
                elif type(command) is Sleep:
                    time.sleep(command.seconds)
                # DISCARD: httpx reads each earlier response and keeps it in `history`.
        except StopIteration:
            return
        finally:
            flow.close()

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        """Drive the engine from httpx's async auth hook."""
        if not self.credentials.hosts.allows(request.url):
            yield request
            return
        flow = self._negotiate(request)
        reply: int | None = None
        try:
            while True:
                command = flow.send(reply)
                reply = None
                if type(command) is Send:
                    _stamp(request, command.key)
                    reply = (yield request).status_code
                elif type(command) is Recover:
                    try:
                        await self.credentials.arecover(command.generation, command.context)
                    except AuthenticationError as exc:
                        flow.throw(exc)
                elif type(command) is Sleep:
                    await asyncio.sleep(command.seconds)
        except StopIteration:
            return
        finally:
            flow.close()

    def _negotiate(self, request: httpx.Request) -> Negotiation:
        return negotiate(
            self.credentials,
            request.method,
            request.url,
            replayable=_replayable(request),
        )

    def __repr__(self) -> str:
        return f"<RunPodAuth {self.credentials!r}>"
