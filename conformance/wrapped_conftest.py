"""Loaded as the conftest of the runpod SDK's own tests: everything they touch is wrapped.

``Endpoint``, ``Job``, ``AsyncioEndpoint`` and ``AsyncioJob`` are replaced, in every
module that names them, by subclasses whose instances are wrapped as they are made;
every public function of ``runpod.api``'s modules (the API functions and the
transports they call) is replaced by its wrapped version. This runs before the test
modules are imported, so their ``from runpod... import Endpoint`` gets the wrapped one.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import runpod

from resilient_runpod import Credentials, recovery, wrap
from resilient_runpod.sdk._functions import wrapping_subclass

# No key of its own: it adopts whatever key a test puts in runpod.api_key. Its hook
# finds nothing, so a 401 the tests stage still ends in the SDK's error types.
CREDENTIALS = Credentials(recovery=recovery.callback(lambda: None, name="conformance"))

_CLASS_MODULES = {
    "runpod.endpoint.runner": ("Endpoint", "Job"),
    "runpod.endpoint.asyncio.asyncio_runner": ("Endpoint", "Job"),
}
# Where the SDK re-exports them (as AsyncioEndpoint, AsyncioJob, ...).
_ALIAS_MODULES = ("runpod", "runpod.endpoint", "runpod.endpoint.asyncio")


def _wrapped_class(base: type[Any]) -> type[Any]:
    return wrapping_subclass(base, lambda instance: wrap(instance, CREDENTIALS))


def _wrap_classes() -> None:
    made: dict[type[Any], type[Any]] = {}
    for module_name, names in _CLASS_MODULES.items():
        module = importlib.import_module(module_name)
        for name in names:
            base = getattr(module, name)
            made[base] = _wrapped_class(base)
            setattr(module, name, made[base])
    for module_name in _ALIAS_MODULES:
        module = importlib.import_module(module_name)
        for name in dir(module):
            value = getattr(module, name, None)
            if isinstance(value, type) and value in made:
                setattr(module, name, made[value])


def _wrap_functions() -> None:
    for module_name in ("runpod.api.ctl_commands", "runpod.api.graphql", "runpod.api.rest"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # runpod.api.rest is 2.x only
        for name, function in inspect.getmembers(module, inspect.isfunction):
            if name.startswith("_") or function.__module__ != module_name:
                continue
            wrapped = wrap(function, CREDENTIALS)
            setattr(module, name, wrapped)
            if module_name.endswith("ctl_commands"):
                setattr(runpod, name, wrapped)


_wrap_classes()
_wrap_functions()


def _check_wrapped() -> None:
    """Fail loudly if the harness did not take: a wrapped run must be wrapped."""
    from resilient_runpod.adapters import ResilientHTTPAdapter  # noqa: PLC0415

    endpoint = runpod.Endpoint("conformance-check", api_key="conformance-check-key")
    adapter = endpoint.rp_client.rp_session.get_adapter("https://api.runpod.ai")
    if not isinstance(adapter, ResilientHTTPAdapter):
        raise RuntimeError("the conformance conftest did not wrap runpod.Endpoint")


_check_wrapped()
