"""Our errors, raised as classes that the ``except`` clauses SDK users have still catch.

- A rejected key the SDK reports as ``runpod.error.AuthenticationError`` (GraphQL and
  REST) or ``RuntimeError`` (the sync endpoint). When recovery gives up, the wrapped
  SDK raises our `AuthenticationError` (or `CooldownError`) as a class that is also
  both of those.
- A key without permission the SDK reports as ``runpod.error.QueryError``: GraphQL's
  ``"Unauthorized"`` error on HTTP 200, or (2.x) REST's 403. The wrapped SDK raises our
  `PermissionDeniedError` as a class that is also a ``runpod.error.QueryError``, with
  its ``status_code`` (403), ``query`` and ``errors`` attributes.

The classes are made on first use, so importing resilient_runpod never imports runpod.
"""

from __future__ import annotations

import threading

import runpod.error

from .._errors import AuthenticationError, PermissionDeniedError

__all__ = ["compatible"]

_classes: dict[type[BaseException], type[BaseException]] = {}
_lock = threading.Lock()


def _sdk_bases(cls: type[BaseException]) -> tuple[type[BaseException], ...]:
    if issubclass(cls, AuthenticationError):
        return (runpod.error.AuthenticationError, RuntimeError)
    return (runpod.error.QueryError,)


def _compatible_class(cls: type[BaseException]) -> type[BaseException]:
    with _lock:
        made = _classes.get(cls)
        if made is None:
            bases = _sdk_bases(cls)
            also = " and a ".join(f"``{b.__module__}.{b.__qualname__}``" for b in bases)
            made = type(
                cls.__name__,
                (cls, *bases),
                {
                    "__module__": cls.__module__,
                    "__qualname__": cls.__qualname__,
                    "__doc__": f"{cls.__doc__}\n\nAlso a {also}, as the SDK's own errors are.",
                },
            )
            _classes[cls] = made
        return made


def compatible(error: BaseException) -> BaseException:
    """*error* as the SDK's callers can catch it; errors other than ours unchanged."""
    if not isinstance(error, (AuthenticationError, PermissionDeniedError)) or isinstance(
        error, runpod.error.RunPodError
    ):
        return error
    cls = _compatible_class(type(error))
    copy = cls.__new__(cls, *error.args)
    copy.args = error.args
    copy.__dict__.update(error.__dict__)
    # runpod.error.RunPodError renders `message`; keep one text for str() whatever the MRO.
    copy.message = str(error)  # type: ignore[attr-defined]
    if isinstance(error, PermissionDeniedError):
        # QueryError's attributes, as 2.x sets them (1.12 has only `query`).
        copy.query = None  # type: ignore[attr-defined]
        copy.errors = []  # type: ignore[attr-defined]
    copy.__cause__ = error.__cause__
    copy.__suppress_context__ = True
    return copy
