"""The SDK's GraphQL API functions (``get_pods``, ``create_pod``, ...), and the module.

Where we look: every API function calls ``runpod.api.graphql.run_graphql_query``,
which sends one ``requests.post`` and turns a 401 into ``runpod.error.AuthenticationError``.
``requests.post`` builds a fresh session each time, so there is no session to mount an
adapter on. Instead, ``runpod.api.graphql`` is given (once) a stand-in for the
``requests`` module it uses: outside a wrapped call it is plain ``requests``; inside
one (a context variable says which credentials) its ``post`` sends through a session
with our requests adapter. So the status is read at the HTTP layer, the 401 is
recovered and that request sent again, and the SDK parses the answer as usual.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any

import requests
import runpod.api.graphql
from requests.adapters import HTTPAdapter

from ._endpoint import SDKAdapter

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from .._credentials import Credentials
    from ._copies import KeyCopies

__all__ = ["WrappedModule", "is_api_function", "wrap_function"]

_scope: contextvars.ContextVar[tuple[Credentials, KeyCopies] | None] = contextvars.ContextVar(
    "resilient_runpod_graphql", default=None
)
_install_lock = threading.Lock()


class _Requests:
    """Stands in for ``requests`` inside ``runpod.api.graphql``; see the module docstring."""

    def __getattr__(self, name: str) -> Any:
        return getattr(requests, name)

    def post(self, url: str, *args: Any, **kwargs: Any) -> requests.Response:
        scope = _scope.get()
        if scope is None:
            # Looked up on each call, so a test's patch of requests.post still applies.
            return requests.post(url, *args, **kwargs)  # noqa: S113 -- the SDK passes its own
        credentials, copies = scope
        with requests.Session() as session:
            adapter = SDKAdapter(credentials, HTTPAdapter(), copies)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            return session.post(url, *args, **kwargs)

    def __repr__(self) -> str:
        return "<requests, as used by runpod.api.graphql under resilient_runpod.wrap>"


def _install() -> None:
    with _install_lock:
        if not isinstance(runpod.api.graphql.requests, _Requests):
            runpod.api.graphql.requests = _Requests()


def is_api_function(obj: object) -> bool:
    """Whether *obj* is one of the SDK's API functions (they all go through GraphQL)."""
    return inspect.isfunction(obj) and (obj.__module__ or "").startswith("runpod.api.")


def wrap_function(
    function: Callable[..., Any], credentials: Credentials, copies: KeyCopies
) -> Callable[..., Any]:
    """Return *function* with the same signature, recovering from rejected keys.

    A call that passes its own ``api_key=`` is the caller's choice of key and is sent
    as the SDK would send it, without recovery.
    """
    _install()
    signature = inspect.signature(function)
    takes_key = "api_key" in signature.parameters

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if takes_key and signature.bind_partial(*args, **kwargs).arguments.get("api_key"):
            return function(*args, **kwargs)
        copies.refresh()  # the SDK refuses to send at all while runpod.api_key is None
        token = _scope.set((credentials, copies))
        try:
            return function(*args, **kwargs)
        finally:
            _scope.reset(token)

    return wrapped


class WrappedModule:
    """The ``runpod`` module with every API function, and every endpoint made, recovering.

    Everything else (constants, config helpers, ``serverless``) is the module's own;
    setting an attribute sets it on the module.
    """

    def __init__(
        self,
        module: ModuleType,
        credentials: Credentials,
        copies: KeyCopies,
        wrap_object: Callable[[Any], Any],
    ) -> None:
        state = {
            "_module": module,
            "_credentials": credentials,
            "_copies": copies,
            "_wrap": wrap_object,
            "_cache": {},
        }
        self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        cache: dict[str, Any] = self._cache
        if name in cache and cache[name][0] is value:
            return cache[name][1]
        if is_api_function(value):
            made = wrap_function(value, self._credentials, self._copies)
        elif inspect.isclass(value) and value in _wrappable_classes(self._module):
            made = self._subclass(value)
        else:
            return value
        cache[name] = (value, made)
        return made

    def _subclass(self, base: type[Any]) -> type[Any]:
        """Subclass *base* so instances are wrapped as they are made (``isinstance`` holds)."""
        wrap_object, copies = self._wrap, self._copies

        def __init__(instance: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            copies.refresh()  # new endpoints read runpod.api_key when they are made
            base.__init__(instance, *args, **kwargs)
            wrap_object(instance)

        namespace = {
            "__init__": functools.wraps(base.__init__)(__init__),
            "__module__": base.__module__,
            "__qualname__": base.__qualname__,
            "__doc__": base.__doc__,
        }
        return type(base.__name__, (base,), namespace)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._module, name, value)

    def __dir__(self) -> list[str]:
        return dir(self._module)

    def __repr__(self) -> str:
        return f"<module 'runpod', wrapped by resilient_runpod with {self._credentials!r}>"


def _wrappable_classes(module: Any) -> tuple[type[Any], ...]:
    return (module.Endpoint, module.AsyncioEndpoint, module.AsyncioJob)
