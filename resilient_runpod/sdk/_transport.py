"""Where the SDK's API functions send: the ``requests`` and ``aiohttp`` names of its modules.

The API functions build their requests inside the SDK: 1.12's GraphQL calls
``requests.post``; 2.x's REST calls ``requests.request``, and its async variants open
an ``aiohttp.ClientSession`` of their own. There is no session to mount an adapter on,
and following the SDK function by function would miss the next function it adds.

So every loaded ``runpod.*`` module whose global ``requests`` (or ``aiohttp``) is that
library gets a stand-in for it. Outside a wrapped call the stand-in is the library
itself: every name is looked up on the real module at each use, so a test's patch
of ``requests.post`` still applies. Inside a wrapped call (a context variable holds
its `Binding`), the module-level functions of ``requests`` send through a session
carrying our `SDKAdapter`, and ``aiohttp.ClientSession(...)`` gets our middleware
ahead of its own. The status is then read at the HTTP layer, a 401 is recovered and
that request sent again, and the SDK parses the answer as usual.

`install` is idempotent and cheap (it rescans only when modules were loaded since),
and `uninstall` puts the libraries back.

A library imported inside a function rather than at module level (2.x's
``run_graphql_query_async`` does ``import aiohttp`` in its body) is handed to it by
Python from ``sys.modules``, which only a process-wide patch could change, and a
library must not make one. `importing_stand_ins` gives such a function, and only the
copy a wrapped call runs, an ``__import__`` of its own that returns the stand-ins. A
session the caller passes in (``session=``) is the caller's; `wrap_function` hands the
SDK the same session with our middleware added to its requests (see `_asyncio`).
"""

from __future__ import annotations

import builtins
import contextlib
import contextvars
import dis
import sys
import threading
import types
from types import ModuleType
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from ._endpoint import SDKAdapter

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ._bindings import Binding

__all__ = ["importing_stand_ins", "install", "scope", "uninstall"]

_binding: contextvars.ContextVar[Binding | None] = contextvars.ContextVar(
    "resilient_runpod_sdk_call", default=None
)

# requests' module-level functions, each with the parameters it takes by position after url.
_VERBS: dict[str, tuple[str, ...]] = {
    "get": ("params",),
    "options": (),
    "head": (),
    "post": ("data", "json"),
    "put": ("data",),
    "patch": ("data",),
    "delete": (),
}
_ORIGINALS = {name: getattr(requests, name) for name in (*_VERBS, "request")}


@contextlib.contextmanager
def scope(binding: Binding) -> Iterator[None]:
    """Within this block, the SDK's own requests send with *binding*'s key and recover."""
    token = _binding.set(binding)
    try:
        yield
    finally:
        _binding.reset(token)


def _send(binding: Binding, method: str, url: Any, kwargs: dict[str, Any]) -> requests.Response:
    with requests.Session() as session:
        adapter = SDKAdapter(binding, HTTPAdapter())
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session.request(method, url, **kwargs)


class _Requests(ModuleType):
    """Stands in for ``requests`` in the SDK's modules; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("requests", requests.__doc__)

    def __getattr__(self, name: str) -> Any:
        # Only names not set on the stand-in itself (a test's patch is) come here.
        real = getattr(requests, name)
        binding = _binding.get()
        if binding is None or real is not _ORIGINALS.get(name):
            # Outside a wrapped call, or patched by someone (a test's mock): theirs.
            return real
        if name == "request":

            def request(method: str, url: Any, **kwargs: Any) -> requests.Response:
                return _send(binding, method, url, kwargs)

            return request
        names = _VERBS[name]

        def verb(url: Any, *args: Any, **kwargs: Any) -> requests.Response:
            kwargs.update(zip(names, args, strict=False))
            if name == "head":
                kwargs.setdefault("allow_redirects", False)
            return _send(binding, name.upper(), url, kwargs)

        return verb

    def __repr__(self) -> str:
        return "<module 'requests', routed through resilient_runpod inside wrapped SDK calls>"


class _Aiohttp(ModuleType):
    """Stands in for ``aiohttp`` in the SDK's modules; see the module docstring."""

    def __init__(self) -> None:
        super().__init__("aiohttp", sys.modules["aiohttp"].__doc__)

    def __getattr__(self, name: str) -> Any:
        real = getattr(sys.modules["aiohttp"], name)
        binding = _binding.get()
        if binding is None or name != "ClientSession":
            return real
        from ._asyncio import SDKMiddleware  # noqa: PLC0415 -- imports aiohttp

        def client_session(*args: Any, **kwargs: Any) -> Any:
            own = tuple(kwargs.get("middlewares") or ())
            kwargs["middlewares"] = (SDKMiddleware(binding), *own)
            return real(*args, **kwargs)

        return client_session

    def __repr__(self) -> str:
        return "<module 'aiohttp', routed through resilient_runpod inside wrapped SDK calls>"


_lock = threading.Lock()
_patched: dict[tuple[str, str], Any] = {}  # (module, name) -> the library it held
_stand_ins: dict[str, ModuleType] = {}
_KINDS: dict[str, Callable[[], ModuleType]] = {"requests": _Requests, "aiohttp": _Aiohttp}
_seen = 0  # len(sys.modules) at the last scan


def _make_stand_ins() -> None:
    """A stand-in for each library loaded (under `_lock`)."""
    for name, kind in _KINDS.items():
        if name in sys.modules and name not in _stand_ins:
            _stand_ins[name] = kind()


def install() -> None:
    """Give every loaded ``runpod.*`` module the stand-ins (idempotent; rescans if needed)."""
    global _seen  # noqa: PLW0603 -- one process-wide installation
    if len(sys.modules) == _seen:
        return
    with _lock:
        _make_stand_ins()
        for module_name, module in list(sys.modules.items()):
            if module is None or not (module_name == "runpod" or module_name.startswith("runpod.")):
                continue
            for name, stand_in in _stand_ins.items():
                library = sys.modules.get(name)
                if library is None or getattr(module, name, None) is not library:
                    continue
                _patched[module_name, name] = library
                setattr(module, name, stand_in)
        _seen = len(sys.modules)


def uninstall() -> None:
    """Put the real libraries back in the SDK's modules."""
    global _seen  # noqa: PLW0603
    with _lock:
        for (module_name, name), library in _patched.items():
            module = sys.modules.get(module_name)
            if module is not None and getattr(module, name, None) is _stand_ins.get(name):
                setattr(module, name, library)
        _patched.clear()
        _seen = 0


def _import(
    name: str,
    globals: dict[str, Any] | None = None,  # noqa: A002 -- __import__'s own names
    locals: Any = None,  # noqa: A002
    fromlist: Any = (),
    level: int = 0,
) -> Any:
    """``__import__``, with the stand-ins for the libraries they stand in for."""
    module = builtins.__import__(name, globals, locals, fromlist, level)
    # Without a from-list, `import a.b` binds the top package: that is what is returned.
    top = name if fromlist else name.partition(".")[0]
    if level or top not in _KINDS or module is not sys.modules.get(top):
        return module
    if top not in _stand_ins:
        with _lock:
            _make_stand_ins()
    return _stand_ins.get(top, module)


def _imports_a_library(code: types.CodeType) -> bool:
    """Whether *code*, or code defined in it, imports a library we stand in for."""
    for instruction in dis.get_instructions(code):
        if instruction.opname == "IMPORT_NAME" and (
            str(instruction.argval).partition(".")[0] in _KINDS
        ):
            return True
    return any(
        _imports_a_library(const) for const in code.co_consts if isinstance(const, types.CodeType)
    )


def importing_stand_ins(function: Callable[..., Any]) -> Callable[..., Any]:
    """*function*, whose own ``import requests`` / ``import aiohttp`` get the stand-ins.

    A function that imports neither in its body is returned as it is. Otherwise each
    call runs a fresh copy of it over copies of its module's globals and of the builtins
    taken then (so a test's patch of either still applies), whose ``__import__`` returns
    the stand-ins. The SDK's function itself is not changed.
    """
    if not isinstance(function, types.FunctionType) or not _imports_a_library(function.__code__):
        return function
    original = function

    def copy(*args: Any, **kwargs: Any) -> Any:
        own = {**vars(builtins), "__import__": _import}
        namespace = {**original.__globals__, "__builtins__": own}
        made = types.FunctionType(
            original.__code__,
            namespace,
            original.__name__,
            original.__defaults__,
            original.__closure__,
        )
        made.__kwdefaults__ = original.__kwdefaults__
        return made(*args, **kwargs)

    return copy
