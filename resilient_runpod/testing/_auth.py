"""How each RunPod surface reads a key, and what it answers when it will not take it.

- Serverless, ``/v2/{endpoint_id}/...``: ``Authorization: Bearer KEY`` or a bare
  ``Authorization: KEY``. Rejected key: 401 ``{"error": "Unauthorized"}``; key without
  access: 403 ``{"error": "Forbidden"}`` (inferred: RunPod documents only the 401 here).
- REST v2, ``/v2/pods...`` and the other `REST_PATHS`: ``Bearer`` only. 401 and 403 are
  ``application/problem+json``.
- GraphQL, ``/graphql``: ``Authorization: Bearer KEY`` or ``?api_key=KEY``. Rejected
  key: 401; key without access: 200 with ``errors[0].message == "Unauthorized"``; no key
  at all: 200 ``{"data": {"myself": null}}``. A bare ``Authorization: KEY`` is no key
  here (that form is serverless only): it gets the answer to no key at all.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import TYPE_CHECKING, Literal

from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = [
    "GRAPHQL_PATH",
    "REST_PATHS",
    "REST_PODS_PATH",
    "Surface",
    "bearer_key",
    "error_response",
    "graphql_error",
    "graphql_key",
    "header_key",
    "presented_key",
    "problem",
    "surface_of",
    "under",
]

Surface = Literal["serverless", "rest", "graphql"]

GRAPHQL_PATH = "/graphql"
REST_PODS_PATH = "/v2/pods"
REST_PATHS = (
    REST_PODS_PATH,
    "/v2/catalog",
    "/v2/templates",
    "/v2/serverless",
    "/v2/registries",
    "/v2/account",
)
"""The REST v2 collections the emulator serves; every other ``/v2/{id}`` is serverless."""

# What RunPod's REST v2 says for every missing, malformed, expired or invalid key.
_REST_401_DETAIL = "missing bearer token"
_REST_403_DETAIL = "access denied"


def under(path: str, prefixes: tuple[str, ...]) -> bool:
    """Whether *path* is one of *prefixes* or lies below one of them."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in prefixes)


def surface_of(path: str) -> Surface:
    """Name the RunPod surface that serves *path*."""
    if path == GRAPHQL_PATH:
        return "graphql"
    if under(path, REST_PATHS):
        return "rest"
    return "serverless"


def header_key(request: Request) -> str | None:
    """Return the key in ``Authorization``, sent either as ``Bearer KEY`` or bare."""
    value = request.headers.get("authorization", "").strip()
    scheme, _, rest = value.partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip() or None
    return value or None


def bearer_key(request: Request) -> str | None:
    """Return the key only if it came as ``Authorization: Bearer KEY`` (REST v2's rule)."""
    value = request.headers.get("authorization", "").strip()
    scheme, _, rest = value.partition(" ")
    return (rest.strip() or None) if scheme.lower() == "bearer" else None


def graphql_key(request: Request) -> str | None:
    """Return the key GraphQL reads: ``Authorization: Bearer KEY``, else ``?api_key=KEY``."""
    return bearer_key(request) or request.query_params.get("api_key") or None


def presented_key(request: Request) -> str | None:
    """Return whatever key the request carries, in any form a surface accepts."""
    return header_key(request) or request.query_params.get("api_key") or None


def problem(status: int, detail: str, **extra: object) -> JSONResponse:
    """Return an RFC 9457 ``application/problem+json`` answer, as REST v2 sends."""
    body = {"title": HTTPStatus(status).phrase, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status, media_type="application/problem+json")


def graphql_error(
    message: str, status: int = 200, headers: dict[str, str] | None = None
) -> JSONResponse:
    """Return GraphQL's answer carrying one error, *message*, and no data."""
    return JSONResponse({"errors": [{"message": message}], "data": None}, status, headers)


def error_response(
    status: int, surface: Surface, *, retry_after: str | None = None
) -> JSONResponse:
    """Return the answer *surface* gives with *status*, whatever the reason.

    Used for rejected keys and for injected faults alike, so that a fault looks exactly
    like the real thing to the client. *retry_after* overrides the ``Retry-After`` header.
    """
    phrase = HTTPStatus(status).phrase
    # Every surface names a rate-limit wait; REST v2 documents Retry-After.
    headers = {"Retry-After": "1"} if status == HTTPStatus.TOO_MANY_REQUESTS else None
    if retry_after is not None:
        headers = {"Retry-After": retry_after}
    if surface == "rest":
        detail = {
            HTTPStatus.UNAUTHORIZED: _REST_401_DETAIL,
            HTTPStatus.FORBIDDEN: _REST_403_DETAIL,
            HTTPStatus.TOO_MANY_REQUESTS: "rate limit exceeded for the minute window",
        }.get(HTTPStatus(status), phrase.lower())
        response = problem(status, detail)
        if headers:
            response.headers.update(headers)
        return response
    if surface == "graphql":
        return graphql_error(phrase, status, headers)
    return JSONResponse({"error": phrase}, status, headers)
