"""RunPod's GraphQL API at ``/graphql``, read lightly: enough for the SDK's calls.

No GraphQL parser: a query is recognised by the fields it names and a mutation by its
first field. Here: the key rules, ``myself`` (what a key check asks) and mutations with
no state behind them (templates, endpoints, registries, user settings), answered with an
id. The pod fields (``pod(``, ``gpuTypes`` and the pod mutations) are in `_graphql_pods`,
imported the first time a query names one.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ._auth import GRAPHQL_PATH, error_response, graphql_error, graphql_key

if TYPE_CHECKING:
    from starlette.requests import Request

    from ._pods import Pod
    from ._state import EmulatorState

__all__ = ["routes"]

_MUTATION = re.compile(r"^\s*mutation\b")
_MUTATION_FIELD = re.compile(r"^\s*mutation\b[^{]*\{\s*(\w+)")
_MYSELF = re.compile(r"\bmyself\b")
# Named here, so that recognising them does not import the pod surface.
_POD_QUERY = re.compile(r"\bpod\s*\(|\bgpuTypes\b")
_POD_MUTATIONS = frozenset({"podFindAndDeployOnDemand", "podStop", "podResume", "podTerminate"})


def _myself(user_id: str, pods: list[Pod]) -> dict[str, Any]:
    # The fields the SDK's queries read: get_user, get_endpoints, get_pods, create_pod.
    return {
        "id": user_id,
        "pubKey": "",
        "networkVolumes": [],
        "endpoints": [],
        "pods": [pod.graphql() for pod in pods],
    }


def _query(state: EmulatorState, key: str, query: str) -> Response:
    data: dict[str, Any] = {}
    if _MYSELF.search(query):
        data["myself"] = _myself(state.user_id(key), state.pod_list())
    if _POD_QUERY.search(query):
        from . import _graphql_pods  # noqa: PLC0415 (the pod surface, on first use)

        data.update(_graphql_pods.query(query, state.pods))
    if not data:
        return graphql_error("the RunPod emulator does not implement this query", 400)
    return JSONResponse({"data": data})


def _mutate(state: EmulatorState, query: str) -> Response:
    match = _MUTATION_FIELD.match(query)
    if match is None:
        return graphql_error("the RunPod emulator does not implement this mutation", 400)
    field = match.group(1)
    if field in _POD_MUTATIONS:
        from . import _graphql_pods  # noqa: PLC0415 (the pod surface, on first use)

        return _graphql_pods.mutate(field, query, state.pods)
    # No state behind it (templates, endpoints, registries, ...): an id is all callers read.
    return JSONResponse({"data": {field: {"id": secrets.token_hex(7)}}})


async def _read_query(request: Request) -> str | None:
    if request.method == "GET":
        return request.query_params.get("query")
    try:
        query = json.loads(await request.body()).get("query")
    except (ValueError, AttributeError):
        return None
    return query if isinstance(query, str) else None


def _answer(state: EmulatorState, key: str | None, query: str) -> Response:
    mutation = _MUTATION.match(query) is not None
    if key is None:
        # RunPod answers an anonymous caller as a nobody rather than with a 401.
        if _MYSELF.search(query) and not mutation:
            return JSONResponse({"data": {"myself": None}})
        return graphql_error("Unauthorized")
    scope = state.scope_of(key)
    if scope is None:
        return error_response(401, "graphql")
    if not mutation:
        return _query(state, key, query)
    if scope != "all":
        # Permission problems come back as a GraphQL error, not as an HTTP status.
        return graphql_error("Unauthorized")
    return _mutate(state, query)


def routes(state: EmulatorState) -> list[BaseRoute]:
    """Return the ``/graphql`` route, answering from *state*."""

    async def graphql(request: Request) -> Response:
        query = await _read_query(request)
        if query is None:
            return graphql_error("the request needs a JSON body with a query string", 400)
        return _answer(state, graphql_key(request), query)

    return [Route(GRAPHQL_PATH, graphql, methods=["GET", "POST"])]
