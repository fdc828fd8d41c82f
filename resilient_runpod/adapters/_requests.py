"""A ``requests`` transport adapter that recovers from RunPod 401s.

It only translates between requests and the engine (`resilient_runpod._engine`): it
stamps the key on requests to RunPod's hosts, reports statuses and closes discarded
responses. Requests to any other host pass through untouched and never see the key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

try:
    import requests.exceptions
    import urllib3.exceptions
    from requests.adapters import BaseAdapter, HTTPAdapter
except ImportError as exc:  # the `sdk` extra: say what to install, as `wrap` does
    raise ImportError(
        "ResilientHTTPAdapter needs requests: pip install 'resilient-runpod[sdk]'"
    ) from exc

from .._answers import said
from .._engine import Wire, run_sync
from .._errors import TransientError
from .._hosts import without_api_key_param
from .._redact import also_as

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from requests import PreparedRequest, Response

    from .._credentials import Credentials

__all__ = ["ResilientHTTPAdapter", "stamp"]

# The wrapper's own attributes; every other attribute is the wrapped adapter's.
_OWN = frozenset({"credentials", "adapter"})

_Timeout = float | tuple[float, float] | tuple[float, None] | None
_Cert = bytes | str | tuple[bytes | str, bytes | str] | None


def stamp(request: PreparedRequest, key: str | None) -> None:
    """Put *key* where RunPod reads it, replacing any stale key the request carried."""
    if key is None:
        request.headers.pop("Authorization", None)
    else:
        request.headers["Authorization"] = f"Bearer {key}"
    if "api_key=" in (request.url or ""):
        url = without_api_key_param(httpx.URL(request.url or ""))
        if url is not None:
            request.url = str(url)


def _replayable(request: PreparedRequest) -> bool:
    # Bytes and text can be sent again; a generator or a file object has been consumed.
    return request.body is None or isinstance(request.body, (bytes, str))


def _body(request: PreparedRequest) -> bytes | None:
    body = request.body
    if isinstance(body, str):
        return body.encode()
    return body if isinstance(body, bytes) else None


def _retry_after(response: Response) -> str | None:
    value: str | None = response.headers.get("Retry-After")
    return value


# The connection errors the engine handles, and which of them happen before any of the
# request went out.
_LOST = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)


def _unsent(error: BaseException) -> bool:
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True
    # A refused connection or a name that does not resolve: requests raises a plain
    # ConnectionError around urllib3's MaxRetryError, whose reason says it never connected
    # (NewConnectionError and NameResolutionError are ConnectTimeoutErrors).
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return isinstance(reason, urllib3.exceptions.ConnectTimeoutError)


def _as_requests_error(error: TransientError, request: PreparedRequest) -> TransientError:
    """*error* as what requests raises: its connection error or timeout, else HTTPError.

    A failing status is what ``raise_for_status()`` reports; lost connections are what
    the last send raised. The last response was closed already: ``response`` is None.
    """
    cause = error.__cause__
    if error.status_code is not None:
        bases: tuple[type[BaseException], ...] = (requests.exceptions.HTTPError,)
    else:
        bases = tuple(kind for kind in _LOST if isinstance(cause, kind)) or (
            requests.exceptions.RequestException,  # without a cause: the family
        )
    return also_as(error, *bases, request=request, response=None)


def _close(response: Response) -> str | None:
    # Reading the (small) error body first lets the connection go back to the pool.
    try:
        body = response.content
    finally:
        response.close()
    return said(response.headers.get("Content-Type"), body)


class _Wire(Wire["Response"]):
    """A prepared request through a requests adapter, for the engine."""

    __slots__ = ("_send", "_status", "body", "method", "replayable", "request", "url")
    lost = _LOST

    def __init__(
        self,
        request: PreparedRequest,
        send: Callable[[], Response],
        status: Callable[[Response], int],
    ) -> None:
        self.request = request
        self.method = request.method or "GET"
        self.url = request.url or ""
        self.replayable = _replayable(request)
        self.body = _body(request)
        self._send = send
        self._status = status  # the adapter's: a subclass may read the body

    def stamp(self, key: str | None) -> None:
        stamp(self.request, key)

    def send(self) -> Response:
        return self._send()

    def status(self, response: Response) -> int:
        return self._status(response)

    def retry_after(self, response: Response) -> str | None:
        return _retry_after(response)

    def discard(self, response: Response) -> str | None:
        return _close(response)

    def unsent(self, error: BaseException) -> bool:
        return _unsent(error)


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

    The wrapped adapter's attributes are read and written through the wrapper:
    ``session.get_adapter(url).max_retries = Retry(...)`` configures the adapter that
    sends, as it would without the wrapper.

    Raises (from requests to RunPod hosts):
        AuthenticationError: the key was rejected and recovery found none accepted.
        PermissionDeniedError: RunPod answered 403: the key is valid but may not do this.
        BodyNotReplayableError: recovered, but a streamed body cannot be resent.
        TransientError: 429, 5xx or lost connections outlasted the retry policy; also
            a ``requests.HTTPError`` for a status, else requests' ``ConnectionError``
            or ``Timeout`` that the last send raised.

    """

    def __init__(self, credentials: Credentials, adapter: BaseAdapter | None = None) -> None:
        super().__init__()
        self.credentials = credentials
        self.adapter = adapter if adapter is not None else HTTPAdapter()

    @staticmethod
    def status_of(response: Response) -> int:
        """The status the engine judges *response* by (a subclass may read the body too)."""
        return response.status_code

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
        wire = _Wire(
            request,
            lambda: inner.send(request, stream, timeout, verify, cert, proxies),
            self.status_of,
        )
        try:
            return run_sync(self.credentials, wire)
        except TransientError as exc:
            raise _as_requests_error(exc, request) from exc.__cause__

    def close(self) -> None:
        """Close the wrapped adapter."""
        self.adapter.close()

    def __getattr__(self, name: str) -> object:
        """Read what the wrapper lacks (``max_retries``, ``config``) from the wrapped adapter."""
        # Only called when normal lookup failed. Before __init__ has set ``adapter``
        # (unpickling, copying) there is nothing to delegate to.
        if name in _OWN or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.adapter, name)

    def __setattr__(self, name: str, value: object) -> None:
        """Set an attribute the wrapped adapter has on it; any other one here."""
        inner = self.__dict__.get("adapter")
        if name in _OWN or inner is None or not hasattr(inner, name):
            object.__setattr__(self, name, value)
        else:
            setattr(inner, name, value)

    def __repr__(self) -> str:
        return f"<ResilientHTTPAdapter {self.credentials!r} over {type(self.adapter).__name__}>"
