"""Give-up errors that the ``except`` clauses SDK users already have still catch.

The SDK reports a rejected key as ``runpod.error.AuthenticationError`` (GraphQL) or
``RuntimeError`` (the sync endpoint). When recovery gives up, the wrapped SDK raises
our `AuthenticationError` (or `CooldownError`) as a class that is also both of those.
The classes are made on first use, so importing resilient_runpod never imports runpod.
"""

from __future__ import annotations

import threading

import runpod.error

from .._errors import AuthenticationError

__all__ = ["compatible"]

_classes: dict[type[BaseException], type[BaseException]] = {}
_lock = threading.Lock()


def _compatible_class(cls: type[AuthenticationError]) -> type[BaseException]:
    with _lock:
        made = _classes.get(cls)
        if made is None:
            made = type(
                cls.__name__,
                (cls, runpod.error.AuthenticationError, RuntimeError),
                {
                    "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__,
                    "__doc__": (
                        f"{cls.__doc__}\n\nAlso a ``runpod.error.AuthenticationError`` and a "
                        "``RuntimeError``, as the SDK's own 401 errors are."
                    ),
                },
            )
            _classes[cls] = made
        return made


def compatible(error: BaseException) -> BaseException:
    """*error* as the SDK's callers can catch it; errors other than give-ups unchanged."""
    if not isinstance(error, AuthenticationError) or isinstance(
        error, runpod.error.AuthenticationError
    ):
        return error
    cls = _compatible_class(type(error))
    copy = cls.__new__(cls, *error.args)
    copy.args = error.args
    copy.__dict__.update(error.__dict__)
    # runpod.error.RunPodError renders `message`; keep one text for str() whatever the MRO.
    copy.message = str(error)  # type: ignore[attr-defined]
    copy.__cause__ = error.__cause__
    copy.__suppress_context__ = True
    return copy
