"""An aiohttp client middleware (aiohttp >= 3.12) that recovers from RunPod 401s.

It only translates between aiohttp and the engine (`resilient_runpod._engine`): it
stamps the key on requests to RunPod's hosts, reports statuses and releases discarded
responses. Requests to any other host pass through untouched and never see the key.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

try:
    import aiohttp
    from aiohttp.payload import BytesPayload
except ImportError as exc:  # the `sdk` extra: say what to install, as `wrap` does
    raise ImportError(
        "ResilientMiddleware needs aiohttp >= 3.12: pip install 'resilient-runpod[sdk]'"
    ) from exc

from .._answers import said
from .._engine import AsyncWire, run_async
from .._errors import TransientError
from .._redact import also_as

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientResponse
    from aiohttp.client_middlewares import ClientHandlerType

    from .._credentials import Credentials

__all__ = ["ResilientMiddleware"]


def _stamp(request: ClientRequest, key: str | None) -> None:
    if key is None:
        request.headers.popall("Authorization", None)
    else:
        request.headers["Authorization"] = f"Bearer {key}"
    # GraphQL scripts may carry the key as ?api_key=: it goes in the header alone, as
    # `without_api_key_param` says why. ``url`` is a plain attribute of ClientRequest,
    # read again when the request is written.
    url = request.url
    if "api_key=" in url.raw_query_string and "api_key" in url.query:
        request.url = url.without_query_params("api_key")


def _replayable(request: ClientRequest) -> bool:
    # aiohttp (>= 3.12) can write bytes, text and JSON bodies again; a stream only once.
    body = request.body
    return body == b"" or isinstance(body, BytesPayload)


def _body(request: ClientRequest) -> bytes | None:
    body = request.body
    if body == b"":
        return None
    return body._value if isinstance(body, BytesPayload) else None  # noqa: SLF001 -- as_bytes(), without awaiting


def _retry_after(response: ClientResponse) -> str | None:
    return response.headers.get("Retry-After")


# The connection errors the engine handles, and which of them happen before any of the
# request went out.
_LOST = (aiohttp.ClientConnectionError, asyncio.TimeoutError)


def _unsent(error: BaseException) -> bool:
    return isinstance(error, aiohttp.ClientConnectorError)


def _as_aiohttp_error(error: TransientError) -> TransientError:
    """*error* as what aiohttp raises: the last send's connection error or timeout.

    For a status, ``aiohttp.ClientError``: aiohttp itself raises nothing for one, and
    ``ClientResponseError``'s text would show the URL, with any ``?api_key=`` in it.
    """
    cause = error.__cause__
    # Without a cause (the ceiling on sends ended the request): the family.
    bases = tuple(kind for kind in _LOST if isinstance(cause, kind)) or (aiohttp.ClientError,)
    return also_as(error, *bases)


async def _release(response: ClientResponse) -> str | None:
    # Reading the (small) error body first lets the connection go back to the pool.
    try:
        body = await response.read()
    finally:
        response.release()
    return said(response.headers.get("Content-Type"), body)


class _Wire(AsyncWire["ClientResponse"]):
    """A request through an aiohttp middleware's handler, for the engine."""

    __slots__ = ("_handler", "body", "method", "replayable", "request", "url")
    lost = _LOST

    def __init__(self, request: ClientRequest, handler: ClientHandlerType) -> None:
        self.request = request
        self.method = request.method
        self.url = request.url  # parsed already: the host check reads its origin
        self.replayable = _replayable(request)
        self.body = _body(request)
        self._handler = handler

    def stamp(self, key: str | None) -> None:
        _stamp(self.request, key)

    async def send(self) -> ClientResponse:
        return await self._handler(self.request)

    def status(self, response: ClientResponse) -> int:
        return response.status

    def retry_after(self, response: ClientResponse) -> str | None:
        return _retry_after(response)

    async def discard(self, response: ClientResponse) -> str | None:
        return await _release(response)

    def unsent(self, error: BaseException) -> bool:
        return _unsent(error)


class ResilientMiddleware:
    """An aiohttp client middleware: RunPod 401s recover the key, then the request is resent.

    Pass it to the session::

        async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(credentials),)) as s:
            async with s.get(f"https://api.runpod.ai/v2/{endpoint_id}/health") as response:
                ...

    Requests to RunPod's hosts (and those in ``Credentials(hosts=...)`` or the SDK's
    ``RUNPOD_*_BASE_URL`` variables) carry ``Authorization: Bearer <current key>``;
    every other request passes through without it. Recovery never blocks the event loop.

    Raises (from requests to RunPod hosts):
        AuthenticationError: the key was rejected and recovery found none accepted.
        PermissionDeniedError: RunPod answered 403: the key is valid but may not do this.
        BodyNotReplayableError: recovered, but a streamed body cannot be resent.
        TransientError: 429, 5xx or lost connections outlasted the retry policy; also an
            ``aiohttp.ClientError``, and after lost connections the
            ``aiohttp.ClientConnectionError`` or ``asyncio.TimeoutError`` the last send
            raised.

    """

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Send *request* through *handler*; to RunPod hosts with the current key."""
        try:
            return await run_async(self.credentials, _Wire(request, handler))
        except TransientError as exc:
            raise _as_aiohttp_error(exc) from exc.__cause__

    def __repr__(self) -> str:
        return f"<ResilientMiddleware {self.credentials!r}>"
