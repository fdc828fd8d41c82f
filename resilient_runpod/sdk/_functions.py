"""The SDK's API functions (``get_pods``, ``create_pod``, ...), and the wrapped module.

A wrapped API function runs the SDK's own function inside a `_transport.scope`: the
requests it sends, however it sends them (GraphQL or REST, ``requests`` or
``aiohttp``), go through our adapters with the key of the call's `Binding`. A call
that passes its own ``api_key=`` sends that key, and a recovery replaces it for that
call's key only (see `_bindings`). A call that passes its own aiohttp ``session=``
sends through that session, with our middleware added to its requests (see
`_asyncio.through`). A call that asks to be ``anonymous`` sends no key, and is left
to the SDK. Nothing here lists the SDK's functions: any function of a ``runpod.api``
module is one, including those a later SDK adds.
"""

from __future__ import annotations

import functools
import inspect
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._asyncio import through
from ._bindings import Binding, acall_with_key, binding_for, call_with_key, shared
from ._transport import importing_stand_ins, install, scope

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._credentials import Credentials

__all__ = ["WrappedModule", "is_api_function", "wrap_function", "wrapping_subclass"]


def is_api_function(obj: object) -> bool:
    """Whether *obj* is one of the SDK's API functions (a function of a ``runpod.api`` module)."""
    return inspect.isfunction(obj) and (obj.__module__ or "").startswith("runpod.api.")


def wrap_function(function: Callable[..., Any], credentials: Credentials) -> Callable[..., Any]:
    """Return *function* with the same signature, recovering from rejected keys."""
    install()
    signature = inspect.signature(function)
    sends = importing_stand_ins(function)

    def prepared(
        args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Binding, inspect.BoundArguments] | None:
        """The call's binding and arguments (a caller's session made ours); None: the SDK's."""
        install()  # modules the SDK loaded since (2.x loads lazily) get the stand-ins too
        try:
            arguments = signature.bind_partial(*args, **kwargs)
        except TypeError:
            return None  # the SDK's own call raises the right TypeError
        given = arguments.arguments
        if given.get("anonymous"):
            return None  # sent without a key on purpose: nothing to stamp or recover
        binding = binding_for(credentials, given.get("api_key"))
        if binding is not None and given.get("session") is not None:
            given["session"] = through(given["session"], binding)
        return None if binding is None else (binding, arguments)

    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def wrapped_async(*args: Any, **kwargs: Any) -> Any:
            call = prepared(args, kwargs)
            if call is None:
                return await function(*args, **kwargs)
            binding, arguments = call
            with scope(binding):
                return await acall_with_key(
                    binding, lambda: sends(*arguments.args, **arguments.kwargs)
                )

        return wrapped_async

    @functools.wraps(function)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        call = prepared(args, kwargs)
        if call is None:
            return function(*args, **kwargs)
        binding, arguments = call
        with scope(binding):
            return call_with_key(binding, lambda: sends(*arguments.args, **arguments.kwargs))

    return wrapped


def wrapping_subclass(
    base: type[Any],
    wrap_object: Callable[[Any], Any],
    around: Callable[[Callable[[], None]], None] | None = None,
) -> type[Any]:
    """Subclass *base* so instances are wrapped as they are made (``isinstance`` holds).

    *around* (if given) is handed the SDK's ``__init__`` call to make.
    """

    def __init__(instance: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
        def init() -> None:
            base.__init__(instance, *args, **kwargs)

        if around is None:
            init()
        else:
            around(init)
        wrap_object(instance)

    namespace = {
        "__init__": functools.wraps(base.__init__)(__init__),
        "__module__": base.__module__,
        "__qualname__": base.__qualname__,
        "__doc__": base.__doc__,
    }
    return type(base.__name__, (base,), namespace)


class WrappedModule:
    """The ``runpod`` module with every API function, and every endpoint made, recovering.

    Its ``api`` package comes back wrapped the same way, down to its modules, so that
    ``rp.api.graphql.run_graphql_query`` recovers as ``rp.get_pods`` does. Everything
    else (constants, config helpers, ``serverless``) is the module's own; setting an
    attribute sets it on the module.
    """

    def __init__(
        self,
        module: ModuleType,
        credentials: Credentials,
        wrap_object: Callable[[Any], Any],
    ) -> None:
        state = {
            "_module": module,
            "_credentials": credentials,
            "_wrap": wrap_object,
            "_cache": {},
        }
        self.__dict__.update(state)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._module, name)
        cache: dict[str, Any] = self._cache
        if name in cache and cache[name][0] is value:
            return cache[name][1]
        made: Any
        if is_api_function(value):
            made = wrap_function(value, self._credentials)
        elif _is_api_module(value):
            made = WrappedModule(value, self._credentials, self._wrap)
        elif (
            inspect.isclass(value)
            and self._module.__name__ == "runpod"
            and value in _wrappable_classes(self._module)
        ):
            made = self._subclass(value)
        else:
            return value
        cache[name] = (value, made)
        return made

    def _subclass(self, base: type[Any]) -> type[Any]:
        binding = shared(self._credentials)

        def around(init: Callable[[], None]) -> None:
            # The SDK refuses to make an endpoint while no key is anywhere.
            call_with_key(binding, init)

        return wrapping_subclass(base, self._wrap, around)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._module, name, value)

    def __dir__(self) -> list[str]:
        return dir(self._module)

    def __repr__(self) -> str:
        name = self._module.__name__
        return f"<module {name!r}, wrapped by resilient_runpod with {self._credentials!r}>"


def _is_api_module(obj: object) -> bool:
    """Whether *obj* is ``runpod.api`` or one of its modules."""
    return isinstance(obj, ModuleType) and (
        obj.__name__ == "runpod.api" or obj.__name__.startswith("runpod.api.")
    )


def _wrappable_classes(module: Any) -> tuple[type[Any], ...]:
    return (module.Endpoint, module.AsyncioEndpoint, module.AsyncioJob)
