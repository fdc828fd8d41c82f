"""The sync ``runpod.Endpoint`` and its ``Job``s, and the requests layer GraphQL uses.

Where we look: the sync endpoint sends every request through one ``requests.Session``
(``endpoint.rp_client.rp_session``), shared with the jobs it returns. We mount our
requests adapter on that session, over the adapters already there (so the SDK's
urllib3 retries for 408/429 stay). Each HTTP request then runs through the engine on
its own: the adapter sees the real status, stamps the current key, and a 401 is
recovered and that request (not the whole SDK method) is sent again. Retrying at this
level matters: ``run_sync`` that falls back to polling would submit a second job if
the whole method were retried after a 401 while polling.

The SDK never sees the 401 it would have turned into ``RuntimeError``; when recovery
gives up, the adapter raises our `AuthenticationError` as a class that is also the
``RuntimeError`` and ``runpod.error.AuthenticationError`` callers already catch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import ResilientRunPodError
from ..adapters._requests import ResilientHTTPAdapter
from ._copies import KeyCopies, write_header
from ._errors import compatible

if TYPE_CHECKING:
    from collections.abc import Mapping

    import requests
    from requests import PreparedRequest, Response
    from requests.adapters import BaseAdapter

    from .._credentials import Credentials

__all__ = ["SDKAdapter", "mount", "wrap_endpoint", "wrap_job"]


class SDKAdapter(ResilientHTTPAdapter):
    """`ResilientHTTPAdapter` that keeps the SDK's key copies current and raises its errors."""

    def __init__(self, credentials: Credentials, adapter: BaseAdapter, copies: KeyCopies) -> None:
        super().__init__(credentials, adapter)
        self.copies = copies

    def send(  # noqa: PLR0917 -- requests' adapter signature
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> Response:
        """Send as `ResilientHTTPAdapter` does; give-ups are also the SDK's error types."""
        self.copies.refresh()
        try:
            return super().send(request, stream, timeout, verify, cert, proxies)
        except ResilientRunPodError as exc:
            raise compatible(exc) from exc.__cause__
        finally:
            self.copies.refresh()


def mount(session: requests.Session, credentials: Credentials, copies: KeyCopies) -> None:
    """Put an `SDKAdapter` over every adapter mounted on *session* (once per session)."""
    for prefix, adapter in list(session.adapters.items()):
        inner = adapter.adapter if isinstance(adapter, ResilientHTTPAdapter) else adapter
        session.mount(prefix, SDKAdapter(credentials, inner, copies))


def _write_client(client: Any, key: str) -> None:
    client.api_key = key
    write_header(client.headers, key)


def _wrap_client(client: Any, credentials: Credentials, copies: KeyCopies) -> None:
    mount(client.rp_session, credentials, copies)
    copies.add(client, _write_client)


def wrap_endpoint(endpoint: Any, credentials: Credentials, copies: KeyCopies) -> Any:
    """Make *endpoint* (and every job it returns, which share its client) recover."""
    _wrap_client(endpoint.rp_client, credentials, copies)
    return endpoint


def wrap_job(job: Any, credentials: Credentials, copies: KeyCopies) -> Any:
    """Make a sync *job* recover (jobs of a wrapped endpoint already do)."""
    _wrap_client(job.rp_client, credentials, copies)
    return job
