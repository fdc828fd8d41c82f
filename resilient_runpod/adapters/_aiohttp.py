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
from .._engine import run_async
from .._errors import TransientError, also_as

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
    # GraphQL scripts may carry the key as ?api_key=: that copy is replaced too, or a
    # resend after recovery would still present the rejected key. ``url`` is a plain
    # attribute of ClientRequest, read again when the request is written.
    url = request.url
    if "api_key=" in url.raw_query_string and "api_key" in url.query:
        request.url = url.update_query(api_key=key or "")


def _replayable(request: ClientRequest) -> bool:
    # aiohttp (>= 3.12) can write bytes, text and JSON bodies again; a stream only once.
    body = request.body
    return body == b"" or isinstance(body, BytesPayload)


def _status(response: ClientResponse) -> int:
    return response.status


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
            return await run_async(
                self.credentials,
                request.method,
                request.url,  # parsed already: the host check reads its origin
                stamp=lambda key: _stamp(request, key),
                send=lambda: handler(request),
                status_of=_status,
                discard=_release,
                retry_after_of=_retry_after,
                unsent=_unsent,
                lost_errors=_LOST,
                replayable=_replayable(request),
            )
        except TransientError as exc:
            raise _as_aiohttp_error(exc) from exc.__cause__

    def __repr__(self) -> str:
        return f"<ResilientMiddleware {self.credentials!r}>"
