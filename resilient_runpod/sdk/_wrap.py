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


def _default_credentials(runpod: Any, key: str | None) -> Credentials:
    """One `Credentials` shared by every ``wrap`` without one: one recovery for them all."""
    global _default  # noqa: PLW0603 -- a lazily made process-wide default
    with _default_lock:
        if _default is None:
            from .._credentials import Credentials  # noqa: PLC0415 -- see the module docstring

            # The SDK's own key first (runpod.api_key, from ~/.runpod/config.toml or set in
            # code); without one, the key RunPod's other tools would use.
            _default = Credentials(api_key=runpod.api_key or key or None)
        return _default


def wrap(obj: T, credentials: Credentials | None = None) -> T:
    """Make an object of the ``runpod`` SDK recover when RunPod rejects the key.

    Accepts a ``runpod.Endpoint`` or its ``Job``, a ``runpod.AsyncioEndpoint`` or its
    ``AsyncioJob``, an API function (``runpod.get_pods``, ``runpod.create_pod``, ...),
    or the ``runpod`` module itself. Endpoints and jobs are changed in place and
    returned; a function comes back as a new function with the same signature; the
    module comes back as a stand-in whose API functions and endpoint classes recover.
    Jobs returned by a wrapped endpoint recover too.

    On a 401 the key is recovered once for everyone using *credentials*, every copy
    of the key the SDK keeps (``runpod.api_key``, clients, endpoints, jobs) is
    updated, and the request is sent again. When recovery gives up, the error is a
    `resilient_runpod.AuthenticationError` that is also a
    ``runpod.error.AuthenticationError`` and a ``RuntimeError``, so existing ``except``
    clauses keep working. A 403 raises `PermissionDeniedError` without recovery.

    ::

        endpoint = resilient_runpod.wrap(runpod.Endpoint("ENDPOINT_ID"))
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

        from . import _asyncio, _endpoint, _graphql  # noqa: PLC0415 -- they import runpod
        from ._copies import copies_for  # noqa: PLC0415
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT, name=exc.name) from exc

    if credentials is None:
        held = getattr(getattr(obj, "rp_client", obj), "api_key", None)
        credentials = _default_credentials(runpod, held if isinstance(held, str) else None)
    copies = copies_for(credentials)
    copies.refresh()

    def again(inner: Any) -> Any:
        return wrap(inner, credentials)

    result: Any
    if isinstance(obj, types.ModuleType) and obj is runpod:
        result = _graphql.WrappedModule(runpod, credentials, copies, again)
    elif isinstance(obj, runpod.Endpoint):
        result = _endpoint.wrap_endpoint(obj, credentials, copies)
    elif isinstance(obj, runpod.endpoint.Job):
        result = _endpoint.wrap_job(obj, credentials, copies)
    elif isinstance(obj, runpod.AsyncioEndpoint):
        result = _asyncio.wrap_async_endpoint(obj, credentials, copies)
    elif isinstance(obj, runpod.AsyncioJob):
        result = _asyncio.wrap_async_job(obj, credentials, copies)
    elif _graphql.is_api_function(obj):
        result = _graphql.wrap_function(obj, credentials, copies)  # type: ignore[arg-type]
    else:
        raise TypeError(
            f"resilient_runpod.wrap cannot wrap a {type(obj).__name__}: it takes a "
            "runpod.Endpoint or its Job, a runpod.AsyncioEndpoint or its AsyncioJob, an API "
            "function such as runpod.get_pods, or the runpod module itself"
        )
    return result  # type: ignore[no-any-return]
