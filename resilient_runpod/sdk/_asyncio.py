"""``runpod.AsyncioEndpoint`` and its ``AsyncioJob``s.

Where we look: the async endpoint has no 401 handling of its own (a rejected key shows
up as ``KeyError('id')`` from ``run`` or as an error body returned from ``health``), so
symptoms say nothing reliable. Every request it and its jobs make goes through the
``aiohttp.ClientSession`` they hold; we give them a thin stand-in for that session
which adds our aiohttp middleware to each request (aiohttp's per-request
``middlewares=``, ahead of the session's own). The middleware sees the real status and
runs the engine for that request, so the SDK only ever sees the answer to a key that
worked, or our give-up error. The user's session itself is not changed.

Each ``AsyncioJob`` holds its own copy of the headers; jobs returned by a wrapped
endpoint follow the endpoint's key and their copy is kept current too. The same
middleware goes into the ``aiohttp.ClientSession``s the SDK's API modules open for
themselves (see `_transport`), and the same stand-in carries a session the caller
hands an API function (``session=``, see `through`).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import aiohttp

from .._errors import ResilientRunPodError
from ..adapters._aiohttp import ResilientMiddleware
from ._bindings import Binding, binding_for
from ._copies import write_header
from ._errors import compatible

if TYPE_CHECKING:
    from aiohttp import ClientRequest, ClientResponse
    from aiohttp.client_middlewares import ClientHandlerType

    from .._credentials import Credentials

__all__ = ["SDKMiddleware", "through", "wrap_async_endpoint", "wrap_async_job"]


class SDKMiddleware(ResilientMiddleware):
    """`ResilientMiddleware` that keeps the SDK's key copies current and raises its errors."""

    def __init__(self, binding: Binding) -> None:
        super().__init__(binding.credentials)
        self.copies = binding.copies

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        """Send as `ResilientMiddleware` does; give-ups and denials are the SDK's errors too."""
        self.copies.refresh()
        try:
            return await super().__call__(request, handler)
        except ResilientRunPodError as exc:
            raise compatible(exc) from exc.__cause__
        finally:
            self.copies.refresh()


_METHODS = ("request", "get", "post", "put", "patch", "delete", "head", "options")


class _Session:
    """Stands in for an ``aiohttp.ClientSession``, adding the middleware to each request."""

    __slots__ = ("_middleware", "_session")

    def __init__(self, session: Any, middleware: SDKMiddleware) -> None:
        self._session = session
        self._middleware = middleware

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if "middlewares" not in kwargs:
            # Per-request middlewares replace the session's: keep the session's after ours.
            own = tuple(getattr(self._session, "_middlewares", ()) or ())
            kwargs["middlewares"] = (self._middleware, *own)
        return kwargs

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._session, name)
        if name not in _METHODS:
            return attribute

        @functools.wraps(attribute)
        def call(*args: Any, **kwargs: Any) -> Any:
            return attribute(*args, **self._options(kwargs))

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        # The SDK sets options on the session it is handed (2.x: ``_retry_connection``).
        if name in _Session.__slots__:
            object.__setattr__(self, name, value)
        else:
            setattr(self._session, name, value)

    def __repr__(self) -> str:
        return f"<resilient {self._session!r} {self._middleware!r}>"


def through(session: Any, binding: Binding) -> Any:
    """*session*, a caller's ``aiohttp.ClientSession``, sending with *binding*'s recovery.

    Every request still goes through the caller's session (its connector, its own
    middlewares, its cookies); ours runs first. Anything else is returned as it is.
    """
    inner = session._session if isinstance(session, _Session) else session  # noqa: SLF001
    if not isinstance(inner, aiohttp.ClientSession):
        return session
    return _Session(inner, SDKMiddleware(binding))


def _session_of(holder: Any, binding: Binding, credentials: Credentials) -> _Session:
    session = holder.session
    inner = session._session if isinstance(session, _Session) else session  # noqa: SLF001
    if binding.credentials is credentials and getattr(inner, "headers", None) is not None:
        # An AsyncClientSession carries the shared key as a bare default header.
        binding.copies.add(inner, lambda s, key: write_header(s.headers, key))
    return _Session(inner, SDKMiddleware(binding))


def _write_endpoint(endpoint: Any, key: str) -> None:
    endpoint.api_key = key
    write_header(endpoint.headers, key)


def _write_job(job: Any, key: str) -> None:
    write_header(job.headers, key)


def _header_key(headers: Any) -> str | None:
    value = str(headers.get("Authorization") or "")
    return value.removeprefix("Bearer ") or None


def wrap_async_job(job: Any, credentials: Credentials, binding: Binding | None = None) -> Any:
    """Make an ``AsyncioJob`` recover; *binding*: its endpoint's (else from its headers)."""
    binding = binding or binding_for(credentials, _header_key(job.headers))
    if binding is None:
        return job
    job.session = _session_of(job, binding, credentials)
    binding.copies.add(job, _write_job)
    return job


def wrap_async_endpoint(endpoint: Any, credentials: Credentials) -> Any:
    """Make an ``AsyncioEndpoint`` recover, and the jobs its ``run`` returns."""
    binding = binding_for(credentials, endpoint.api_key)
    if binding is None:
        return endpoint
    endpoint.session = _session_of(endpoint, binding, credentials)
    binding.copies.add(endpoint, _write_endpoint)
    run = type(endpoint).run.__get__(endpoint)  # the SDK's own, even if wrapped before

    @functools.wraps(run)
    async def wrapped_run(*args: Any, **kwargs: Any) -> Any:
        return wrap_async_job(await run(*args, **kwargs), credentials, binding)

    endpoint.run = wrapped_run
    return endpoint
