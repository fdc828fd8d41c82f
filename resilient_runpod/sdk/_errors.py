"""Our errors, raised as classes that the ``except`` clauses SDK users have still catch.

- A rejected key the SDK reports as ``runpod.error.AuthenticationError`` (GraphQL and
  REST) or ``RuntimeError`` (the sync endpoint). When recovery gives up, the wrapped
  SDK raises our `AuthenticationError` (or `CooldownError`) as a class that is also
  both of those.
- A key without permission the SDK reports as ``runpod.error.QueryError``: GraphQL's
  ``"Unauthorized"`` error on HTTP 200, or (2.x) REST's 403. The wrapped SDK raises our
  `PermissionDeniedError` as a class that is also a ``runpod.error.QueryError``, with
  its ``status_code`` (403), ``query`` and ``errors`` attributes.
- A failing status (429, 5xx) the SDK reports as ``runpod.error.QueryError`` (2.x REST,
  GraphQL's error bodies) or ``requests.HTTPError`` (the sync endpoint). A
  `TransientError` with a status is also a ``runpod.error.QueryError``; the adapters
  below the SDK already make it the HTTP client's error (``requests.HTTPError``,
  ``aiohttp.ClientError``), and after lost connections the client's connection error.

The classes are made on first use, so importing resilient_runpod never imports runpod.
"""

from __future__ import annotations

import runpod.error

from .._errors import AuthenticationError, PermissionDeniedError, TransientError
from .._redact import also_as

__all__ = ["compatible"]

_AUTHENTICATION = (runpod.error.AuthenticationError, RuntimeError)
_QUERY = (runpod.error.QueryError,)


def compatible(error: BaseException) -> BaseException:
    """*error* as the SDK's callers can catch it; errors other than ours unchanged."""
    if isinstance(error, AuthenticationError):
        bases: tuple[type[BaseException], ...] = _AUTHENTICATION
        extra: dict[str, object] = {}
    elif isinstance(error, PermissionDeniedError) or (
        isinstance(error, TransientError) and error.status_code is not None
    ):
        # QueryError's attributes, as 2.x sets them (1.12 has only `query`); status_code
        # is already ours.
        bases, extra = _QUERY, {"query": None, "errors": []}
    else:
        return error
    # runpod.error.RunPodError renders `message`; keep one text for str() whatever the MRO.
    # An error made compatible already is returned as it is.
    return also_as(error, *bases, message=str(error), **extra)
