"""`wrap`: what SDK users hold, recovering from rejected keys.

This module imports nothing from ``runpod``, ``requests`` or ``aiohttp`` until `wrap`
is called, so that ``import resilient_runpod`` works without the ``sdk`` extra.
"""

from __future__ import annotations

import threading
import types
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .._credentials import Credentials

__all__ = ["wrap"]

T = TypeVar("T")

_INSTALL_HINT = (
    "resilient_runpod.wrap needs the runpod SDK and the HTTP clients it uses: "
    "pip install 'resilient-runpod[sdk]'"
)

_default: Credentials | None = None
_default_lock = threading.Lock()


def _default_credentials(runpod: Any) -> Credentials:
    """One `Credentials` shared by every ``wrap`` without one: one recovery for them all."""
    global _default  # noqa: PLW0603 -- a lazily made process-wide default
    with _default_lock:
        if _default is None:
            from .._credentials import Credentials  # noqa: PLC0415 -- see the module docstring

            # The SDK's own key first (runpod.api_key, from ~/.runpod/config.toml or set in
            # code); without one, the key RunPod's other tools would use (RUNPOD_API_KEY).
            # Never an object's own key: that one is the object's alone.
            _default = Credentials(api_key=runpod.api_key or None)
        return _default


def wrap(obj: T, credentials: Credentials | None = None) -> T:
    """Make an object of the ``runpod`` SDK recover when RunPod rejects the key.

    Accepts a ``runpod.Endpoint`` or its ``Job``, a ``runpod.AsyncioEndpoint`` or its
    ``AsyncioJob``, an API function (``runpod.get_pods``, ``runpod.create_pod``, ...),
    or the ``runpod`` module itself. Endpoints and jobs are changed in place and
    returned; a function comes back as a new function with the same signature; the
    module comes back as a stand-in whose API functions (``rp.api`` and its modules
    included) and endpoint classes recover.
    Jobs returned by a wrapped endpoint recover too.

    Wrapping hands the credentials' key to the SDK (``runpod.api_key``) if it has
    none, so a key found only in ``RUNPOD_API_KEY`` works with either SDK line. The
    requests are intercepted where the SDK sends them (its ``requests`` sessions and
    calls, its ``aiohttp`` sessions), so API functions a later SDK adds are covered.

    On a 401 the key is recovered once for everyone using *credentials*, every copy
    of the key the SDK keeps (``runpod.api_key``, clients, endpoints, jobs) is
    updated, and the request is sent again. An object made with a key of its own
    (``api_key=``) sends that key; if RunPod rejects it, recovery runs the same way and
    the new key replaces it for that object only. When recovery gives up, the error is
    a `resilient_runpod.AuthenticationError` that is also a
    ``runpod.error.AuthenticationError`` and a ``RuntimeError``, so existing ``except``
    clauses keep working. A 403, and GraphQL's ``"Unauthorized"`` error on HTTP 200,
    raise `PermissionDeniedError` (also a ``runpod.error.QueryError``) without recovery.

    ::

        rp = resilient_runpod.wrap(runpod)
        endpoint = rp.Endpoint("ENDPOINT_ID")
        print(endpoint.run_sync({"prompt": "hello"}))

    Args:
        obj: The SDK object.
        credentials: The key and the recovery policy. ``None`` uses one `Credentials`
            shared by all such calls, starting from ``runpod.api_key`` (else
            ``RUNPOD_API_KEY`` or ``~/.runpod/config.toml``), with the default recovery.

    Raises:
        ImportError: the ``runpod`` SDK is not installed.
        TypeError: *obj* is not something this function knows how to wrap.

    """
    try:
        import runpod  # noqa: PLC0415 -- optional dependency, see the module docstring

        from . import _asyncio, _endpoint, _functions  # noqa: PLC0415 -- they import runpod
        from ._bindings import shared  # noqa: PLC0415 -- imports runpod
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT, name=exc.name) from exc

    if credentials is None:
        credentials = _default_credentials(runpod)

    def again(inner: Any) -> Any:
        return wrap(inner, credentials)

    result: Any
    if isinstance(obj, types.ModuleType) and obj is runpod:
        shared(credentials).copies.refresh()  # hands the key to the SDK before it needs one
        result = _functions.WrappedModule(runpod, credentials, again)
    elif isinstance(obj, runpod.Endpoint):
        result = _endpoint.wrap_endpoint(obj, credentials)
    elif isinstance(obj, runpod.endpoint.Job):
        result = _endpoint.wrap_job(obj, credentials)
    elif isinstance(obj, runpod.AsyncioEndpoint):
        result = _asyncio.wrap_async_endpoint(obj, credentials)
    elif isinstance(obj, runpod.AsyncioJob):
        result = _asyncio.wrap_async_job(obj, credentials)
    elif _functions.is_api_function(obj):
        result = _functions.wrap_function(obj, credentials)  # type: ignore[arg-type]
    else:
        raise TypeError(
            f"resilient_runpod.wrap cannot wrap a {type(obj).__name__}: it takes a "
            "runpod.Endpoint or its Job, a runpod.AsyncioEndpoint or its AsyncioJob, an API "
            "function such as runpod.get_pods, or the runpod module itself"
        )
    return result  # type: ignore[no-any-return]
