"""One cheap authenticated call that says whether a key works: RunPod's ``myself { id }``.

Used by `Credentials.validate`, ``login`` and ``doctor`` ("validate keys on startup").
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass

import httpx

from ._answers import HTML_PAGE, said
from ._hosts import HostPolicy, redact_url
from ._keys import fingerprint

__all__ = [
    "KeyStatus",
    "Validation",
    "checked_graphql_url",
    "graphql_url",
    "validate",
    "validate_async",
]

_QUERY = {"query": "query { myself { id } }"}
_TIMEOUT = httpx.Timeout(10.0)


class KeyStatus(str, enum.Enum):
    """What RunPod said about a key."""

    ACCEPTED = "accepted"  # 200 with a user
    REJECTED = "rejected"  # 401: invalid, expired or revoked
    FORBIDDEN = "forbidden"  # 403 or a GraphQL "Unauthorized" error: valid, lacks permission
    MISSING = "missing"  # no key was sent (GraphQL answers 200 with myself: null)
    UNREACHABLE = "unreachable"  # network failure or an unexpected answer: nothing is known


@dataclass(frozen=True, slots=True)
class Validation:
    """The outcome of `Credentials.validate`.

    Attributes:
        status: What RunPod said.
        fingerprint: The checked key's fingerprint.
        url: The URL asked, without secrets.
        detail: A short explanation (an HTTP status, a network error), never the key.
    """

    status: KeyStatus
    fingerprint: str
    url: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Whether RunPod accepted the key."""
        return self.status is KeyStatus.ACCEPTED


def graphql_url(api_url: str | None = None) -> str:
    """RunPod's GraphQL URL: *api_url*, else ``RUNPOD_API_BASE_URL``, else RunPod's own."""
    base = api_url or os.environ.get("RUNPOD_API_BASE_URL") or "https://api.runpod.io"
    base = base.rstrip("/")
    return base if base.endswith("/graphql") else f"{base}/graphql"


def checked_graphql_url(hosts: HostPolicy, api_url: str | None = None) -> str:
    """`graphql_url`, refused with ValueError if *hosts* may not receive the key there."""
    url = graphql_url(api_url)
    if not hosts.allows(url):
        raise ValueError(
            f"will not send the key to {redact_url(url)}: not a RunPod host. "
            "Add it with Credentials(hosts=[...]) if it is yours (an emulator, a proxy)."
        )
    return url


def _request(key: str | None) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return {"json": _QUERY, "headers": headers}


def _errors_verdict(errors: object) -> tuple[KeyStatus, str] | None:
    """What GraphQL's ``errors`` field says about the key; None: there are no errors.

    GraphQL sends errors as a non-empty list of objects; any other shape is not an
    answer about the key.
    """
    if errors is None or errors == []:
        return None
    if not isinstance(errors, list) or not all(isinstance(error, dict) for error in errors):
        return KeyStatus.UNREACHABLE, "GraphQL's errors were not a list of objects"
    # RunPod says "key without permission" only through this message.
    if "unauthorized" in str(errors[0].get("message", "")).lower():
        return KeyStatus.FORBIDDEN, "GraphQL answered Unauthorized"
    return KeyStatus.UNREACHABLE, "GraphQL answered an error"


_FIREWALL = (
    "HTTP 403 with an HTML page: a firewall or proxy in front of RunPod refused the request "
    "(check the network, VPN or proxy)"
)


def _forbidden(shown: str, where: str, response: httpx.Response) -> Validation:
    """A 403: RunPod's verdict on the key, unless its body is a page (a firewall's)."""
    # Imported here: only a 403 needs it, and the engine brings tenacity and structlog.

    if said(response.headers.get("content-type"), response.content) == HTML_PAGE:
        # A firewall or proxy in front of RunPod answers with a page: RunPod never saw
        # the key, so this says nothing about it.
        return Validation(KeyStatus.UNREACHABLE, shown, where, _FIREWALL)
    return Validation(KeyStatus.FORBIDDEN, shown, where, "HTTP 403: the key lacks permission")


def _interpret(  # noqa: PLR0911 -- one return per kind of answer RunPod gives
    key: str | None, url: str, response: httpx.Response
) -> Validation:
    shown, where = fingerprint(key), redact_url(url)
    status = response.status_code
    if status == httpx.codes.UNAUTHORIZED:
        return Validation(KeyStatus.REJECTED, shown, where, "HTTP 401: RunPod rejected the key")
    if status == httpx.codes.FORBIDDEN:
        return _forbidden(shown, where, response)
    if status != 200:  # noqa: PLR2004
        return Validation(KeyStatus.UNREACHABLE, shown, where, f"unexpected HTTP {status}")
    try:
        body = response.json()
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep to parse
        return Validation(KeyStatus.UNREACHABLE, shown, where, "the answer was not JSON")
    if not isinstance(body, dict):
        # Not GraphQL: a proxy or another service answered. It says nothing about the key.
        return Validation(
            KeyStatus.UNREACHABLE, shown, where, "the answer was JSON but not a GraphQL object"
        )
    verdict = _errors_verdict(body.get("errors"))
    if verdict is not None:
        return Validation(verdict[0], shown, where, verdict[1])
    data = body.get("data")
    if not isinstance(data, dict) or "myself" not in data:
        return Validation(KeyStatus.UNREACHABLE, shown, where, "the answer had no data.myself")
    if data["myself"] is None:
        if key is None:
            return Validation(KeyStatus.MISSING, shown, where, "no key was sent")
        return Validation(
            KeyStatus.REJECTED, shown, where, "RunPod did not recognise the key (myself: null)"
        )
    return Validation(KeyStatus.ACCEPTED, shown, where, "RunPod accepted the key")


def validate(
    key: str | None,
    api_url: str | None = None,
    *,
    transport: httpx.BaseTransport | None = None,
    timeout: float | None = None,
) -> Validation:
    """Ask RunPod whether *key* works, within *timeout* seconds (default 10) per step.

    Never raises for HTTP or network failures, nor for an answer of any shape: what
    cannot be read as GraphQL is `KeyStatus.UNREACHABLE`, with the reason in ``detail``.
    """
    url = graphql_url(api_url)
    try:
        limit = _TIMEOUT if timeout is None else httpx.Timeout(timeout)
        with httpx.Client(timeout=limit, transport=transport) as client:
            response = client.post(url, **_request(key))  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return Validation(
            KeyStatus.UNREACHABLE, fingerprint(key), redact_url(url), type(exc).__name__
        )
    return _interpret(key, url, response)


async def validate_async(
    key: str | None,
    api_url: str | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Validation:
    """`validate` for asyncio."""
    url = graphql_url(api_url)
    try:
        async with httpx.AsyncClient(timeout=_TIMEOUT, transport=transport) as client:
            response = await client.post(url, **_request(key))  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        return Validation(
            KeyStatus.UNREACHABLE, fingerprint(key), redact_url(url), type(exc).__name__
        )
    return _interpret(key, url, response)
