"""The requests layer of the SDK: the sync ``runpod.Endpoint``, its ``Job``s, and the adapter.

Where we look: the sync endpoint sends every request through one ``requests.Session``
(``endpoint.rp_client.rp_session``), shared with the jobs it returns. We mount our
adapter on that session, over the adapters already there (so the SDK's urllib3
retries for 408/429 stay). Each HTTP request then runs through the engine on its own:
the adapter sees the real status, stamps the current key, and a 401 is recovered and
that request (not the whole SDK method) is sent again. Retrying at this level matters:
``run_sync`` that falls back to polling would submit a second job if the whole method
were retried after a 401 while polling. The API functions' requests go through the
same adapter (see `_transport`).

The SDK never sees the 401 it would have turned into ``RuntimeError``; when recovery
gives up, the adapter raises our `AuthenticationError` as a class that is also the
``RuntimeError`` and ``runpod.error.AuthenticationError`` callers already catch.

GraphQL reports a key without permission as HTTP 200 with ``errors[0].message ==
"Unauthorized"``. The adapter reports that answer to the engine as the 403 it means,
so it raises `PermissionDeniedError` (also a ``runpod.error.QueryError``) and nothing
is recovered, as for any 403.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .._engine import FORBIDDEN
from .._errors import ResilientRunPodError
from ..adapters._requests import ResilientHTTPAdapter
from ._bindings import Binding, binding_for
from ._copies import write_header
from ._errors import compatible

if TYPE_CHECKING:
    from collections.abc import Mapping

    import requests
    from requests import PreparedRequest, Response
    from requests.adapters import BaseAdapter

    from .._credentials import Credentials

__all__ = ["SDKAdapter", "mount", "wrap_endpoint", "wrap_job"]

_OK = 200
# RunPod's GraphQL answer to a key that may not do this (on HTTP 200).
_GRAPHQL_DENIED = "Unauthorized"


def _graphql_denied(response: Response) -> bool:
    """Whether a GraphQL 200 answer is RunPod's permission error."""
    body = response.content
    if not body or _GRAPHQL_DENIED.encode() not in body:
        return False  # the common case, decided without parsing
    try:
        errors = json.loads(body).get("errors")
        return bool(errors) and errors[0].get("message") == _GRAPHQL_DENIED
    except (ValueError, AttributeError, TypeError, IndexError):
        return False


def _status(response: Response) -> int:
    status = response.status_code
    path = urlsplit(response.url or "").path
    if status == _OK and path.endswith("/graphql") and _graphql_denied(response):
        return FORBIDDEN
    return status


class SDKAdapter(ResilientHTTPAdapter):
    """`ResilientHTTPAdapter` for the SDK: keeps its key copies current, raises its errors."""

    def __init__(self, binding: Binding, adapter: BaseAdapter) -> None:
        super().__init__(binding.credentials, adapter)
        self.binding = binding

    def send(  # noqa: PLR0917 -- requests' adapter signature
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        """Send as `ResilientHTTPAdapter` does; the SDK's errors for give-ups and denials."""
        copies = self.binding.copies
        copies.refresh()
        try:
            return super().send(request, stream, timeout, verify, cert, proxies)
        except ResilientRunPodError as exc:
            raise compatible(exc) from exc.__cause__
        finally:
            copies.refresh()

    status_of = staticmethod(_status)


def mount(session: requests.Session, binding: Binding) -> None:
    """Put an `SDKAdapter` over every adapter mounted on *session* (once per session)."""
    for prefix, adapter in list(session.adapters.items()):
        inner = adapter.adapter if isinstance(adapter, ResilientHTTPAdapter) else adapter
        session.mount(prefix, SDKAdapter(binding, inner))


def _write_client(client: Any, key: str) -> None:
    client.api_key = key
    write_header(client.headers, key)


def _wrap_client(client: Any, credentials: Credentials) -> None:
    binding = binding_for(credentials, client.api_key)
    if binding is None:
        return
    mount(client.rp_session, binding)
    binding.copies.add(client, _write_client)


def wrap_endpoint(endpoint: Any, credentials: Credentials) -> Any:
    """Make *endpoint* (and every job it returns, which share its client) recover."""
    _wrap_client(endpoint.rp_client, credentials)
    return endpoint


def wrap_job(job: Any, credentials: Credentials) -> Any:
    """Make a sync *job* recover (jobs of a wrapped endpoint already do)."""
    _wrap_client(job.rp_client, credentials)
    return job
