"""A ``requests`` transport adapter that recovers from RunPod 401s.

It only translates between requests and the engine (`resilient_runpod._engine`): it
stamps the key on requests to RunPod's hosts, reports statuses and closes discarded
responses. Requests to any other host pass through untouched and never see the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

try:
    from requests.adapters import BaseAdapter, HTTPAdapter
except ImportError as exc:  # the `sdk` extra: say what to install, as `wrap` does
    raise ImportError(
        "ResilientHTTPAdapter needs requests: pip install 'resilient-runpod[sdk]'"
    ) from exc

from .._engine import run_sync
from .._hosts import with_api_key_param

if TYPE_CHECKING:
    from collections.abc import Mapping

    from requests import PreparedRequest, Response

    from .._credentials import Credentials

__all__ = ["ResilientHTTPAdapter", "stamp"]

_Timeout = float | tuple[float, float] | tuple[float, None] | None
_Cert = bytes | str | tuple[bytes | str, bytes | str] | None


def stamp(request: PreparedRequest, key: str | None) -> None:
    """Put *key* where RunPod reads it, replacing any stale key the request carried."""
    if key is None:
        request.headers.pop("Authorization", None)
    else:
        request.headers["Authorization"] = f"Bearer {key}"
    if "api_key=" in (request.url or ""):
        url = with_api_key_param(httpx.URL(request.url or ""), key)
        if url is not None:
            request.url = str(url)


def _replayable(request: PreparedRequest) -> bool:
    # Bytes and text can be sent again; a generator or a file object has been consumed.
    return request.body is None or isinstance(request.body, (bytes, str))


def _status(response: Response) -> int:
    return response.status_code


def _close(response: Response) -> None:
    # Reading the (small) 401 body first lets the connection go back to the pool.
    try:
        _ = response.content
    finally:
        response.close()


class ResilientHTTPAdapter(BaseAdapter):
    """A requests adapter: RunPod 401s recover the key, then the request is sent again.

    Mount it on a ``requests.Session``::

        session = requests.Session()
        session.mount("https://", ResilientHTTPAdapter(credentials))

    Requests to RunPod's hosts (and those in ``Credentials(hosts=...)`` or the SDK's
    ``RUNPOD_*_BASE_URL`` variables) carry ``Authorization: Bearer <current key>``;
    every other request passes through without it.

    Args:
        credentials: The key and the recovery policy, shareable by many sessions.
        adapter: The adapter that does the I/O (default: a new ``HTTPAdapter()``); pass
            ``session.get_adapter(url)`` to keep an adapter's retries and pool settings.

    Raises (from requests to RunPod hosts):
        AuthenticationError: the key was rejected and recovery found none accepted.
        PermissionDeniedError: RunPod answered 403: the key is valid but may not do this.
        BodyNotReplayableError: recovered, but a streamed body cannot be resent.

    """

    def __init__(self, credentials: Credentials, adapter: BaseAdapter | None = None) -> None:
        super().__init__()
        self.credentials = credentials
        self.adapter = adapter if adapter is not None else HTTPAdapter()

    def send(  # noqa: PLR0917 -- requests' adapter signature
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: _Timeout = None,
        verify: bool | str = True,
        cert: _Cert = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        """Send *request*; to RunPod hosts with the current key, recovering on 401."""
        inner = self.adapter
        if not self.credentials.hosts.allows_str(request.url or ""):
            return inner.send(request, stream, timeout, verify, cert, proxies)

        def send(key: str | None) -> Response:
            stamp(request, key)
            return inner.send(request, stream, timeout, verify, cert, proxies)

        return run_sync(
            self.credentials,
            request.method or "GET",
            request.url or "",
            send,
            _status,
            _close,
            replayable=_replayable(request),
        )

    def close(self) -> None:
        """Close the wrapped adapter."""
        self.adapter.close()

    def __repr__(self) -> str:
        return f"<ResilientHTTPAdapter {self.credentials!r} over {type(self.adapter).__name__}>"
