"""The emulator's ASGI app: RunPod's surfaces behind a layer that counts, delays and fails.

Requests flow through `_Instrument` first (latency, injected faults, counters), then
to the routes: REST v2 (the SDK 2.x stand-ins, then pods), GraphQL, serverless, in
that order, so that ``/v2/pods/...`` is never taken for a serverless endpoint. The admin
API under ``/_emulator/`` skips the instrument layer: controlling the emulator is not
traffic.

Only the serverless routes and the admin API are imported with the app. REST v2
(`_rest_sdk`, `_rest`) and GraphQL (`_graphql`) are `_OnFirstUse` routes: their module
is imported the first time a request's path falls under theirs. The pods (`_pods`) come
with REST v2 or with GraphQL's pod fields (`_graphql_pods`), never with ``myself``. Most
suites only send jobs, and load none of them.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route, Router

from resilient_runpod._keys import fingerprint

from . import _serverless
from ._auth import GRAPHQL_PATH, REST_PATHS, error_response, presented_key, surface_of, under
from ._state import RESET, Chaos, EmulatorState, Fault, UnknownKeyError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from starlette.datastructures import URLPath
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    _Handler = Callable[[Request], Awaitable[Response]]

__all__ = ["ADMIN_PREFIX", "build_app"]

ADMIN_PREFIX = "/_emulator/"


def build_app(state: EmulatorState) -> ASGIApp:
    """Return the ASGI app that serves RunPod's auth surface from *state*."""
    app = Starlette(
        routes=[
            *_Admin(state).routes(),
            _OnFirstUse(REST_PATHS, _rest_routes, state),
            _OnFirstUse((GRAPHQL_PATH,), _graphql_routes, state),
            *_serverless.routes(state),
        ]
    )
    # Outside Starlette, so that even its own error pages are counted.
    return _Instrument(app, state)


def _rest_routes(state: EmulatorState) -> list[BaseRoute]:
    from . import _rest, _rest_sdk  # noqa: PLC0415 (on first use, see _OnFirstUse)

    # The stand-ins first: /v2/pods/{id}/action is theirs, not /v2/pods/{rest:path}'s.
    return [*_rest_sdk.routes(state), *_rest.routes(state)]


def _graphql_routes(state: EmulatorState) -> list[BaseRoute]:
    from . import _graphql  # noqa: PLC0415 (on first use, see _OnFirstUse)

    return _graphql.routes(state)


class _OnFirstUse(BaseRoute):
    """Routes made by *load* (which imports their module) when a path under *prefixes* arrives.

    Until then a request elsewhere costs one prefix test. Once loaded, it matches as its
    routes would in its place: the first full match, else the first partial one (a
    method the path does not allow, which Starlette answers with 405).
    """

    def __init__(
        self,
        prefixes: tuple[str, ...],
        load: Callable[[EmulatorState], list[BaseRoute]],
        state: EmulatorState,
    ) -> None:
        self._prefixes = prefixes
        self._load = load
        self._state = state
        self._router: Router | None = None

    def _routes(self) -> Router:
        router = self._router
        if router is None:
            # No lock: imports are idempotent, and a router made twice by a race answers
            # the same from the same state; the last one made stays.
            router = self._router = Router(self._load(self._state))
        return router

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Match as the loaded routes would, loading them if the path is under the prefixes."""
        if scope["type"] != "http" or not under(scope["path"], self._prefixes):
            return Match.NONE, {}
        partial: tuple[Match, Scope] = (Match.NONE, {})
        for route in self._routes().routes:
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                return match, child_scope
            if match is Match.PARTIAL and partial[0] is Match.NONE:
                partial = (match, child_scope)
        return partial

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request with the loaded routes (only called after `matches` said so)."""
        await self._routes()(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        """Not supported: the emulator's routes are never reversed."""
        raise NoMatchFound(name, path_params)


class _Instrument:
    """Pure ASGI middleware: cheaper than Starlette's BaseHTTPMiddleware at 256 connections."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self._app(scope, receive, send)
            return
        key_fingerprint = fingerprint(presented_key(Request(scope)))

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._state.count(key_fingerprint, message["status"])
            await send(message)

        self._state.arrived(+1)
        try:
            await self._serve(scope, receive, send, counting_send)
        finally:
            self._state.arrived(-1)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, counting_send: Send) -> None:
        if (latency := self._state.next_latency()) > 0:
            await asyncio.sleep(latency)
        fault = self._state.take_fault(scope["path"])
        if fault is None:
            await self._app(scope, receive, counting_send)
            return
        if fault.after:
            # Served for real (a job is created), then the answer is lost on the way back.
            await self._app(scope, receive, _swallow)
        if fault.status == RESET:
            _abort(send)
            return
        response: Response
        if fault.firewall:
            response = HTMLResponse(_FIREWALL_PAGE, fault.status)
        else:
            response = error_response(
                fault.status, surface_of(scope["path"]), retry_after=fault.retry_after
            )
        await response(scope, receive, counting_send)


# What the firewall in front of RunPod answers, in the shape that matters: a page.
_FIREWALL_PAGE = (
    "<!DOCTYPE html><html><head><title>Attention Required!</title></head>"
    "<body><h1>Sorry, you have been blocked</h1></body></html>"
)


def _abort(send: Send) -> None:
    """Drop the connection at once, without a byte of answer: what a reset looks like.

    uvicorn's ``send`` belongs to the request's cycle, which holds the connection's
    transport; ASGI itself has no way to say "reset".
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:  # pragma: no cover -- another server than uvicorn
        raise ConnectionResetError("the emulator cannot drop this connection")
    transport.abort()


async def _swallow(_message: Message) -> None:
    return None


class _Admin:
    """The admin API: the `Emulator` controls over HTTP, for other processes."""

    def __init__(self, state: EmulatorState) -> None:
        self._state = state

    def routes(self) -> list[BaseRoute]:
        table: list[tuple[str, _Handler, str]] = [
            ("keys", self.add_key, "POST"),
            ("keys", self.list_keys, "GET"),
            ("keys/revoke", self.revoke, "POST"),
            ("keys/rotate", self.rotate, "POST"),
            ("faults", self.inject, "POST"),
            ("faults", self.clear_faults, "DELETE"),
            ("chaos", self.chaos, "POST"),
            ("latency", self.latency, "POST"),
            ("counters", self.counters, "GET"),
            ("counters", self.reset_counters, "DELETE"),
            ("in_flight", self.in_flight, "GET"),
            ("reset", self.reset, "POST"),
        ]
        return [
            Route(ADMIN_PREFIX + path, _admin_errors(handler), methods=[method])
            for path, handler, method in table
        ]

    async def add_key(self, request: Request) -> Response:
        body = await _json_object(request)
        scope = body.get("scope", "all")
        key = self._state.add_key(body.get("key"), scope=scope)
        return JSONResponse({"key": key, "fingerprint": fingerprint(key), "scope": scope})

    async def list_keys(self, _request: Request) -> Response:
        infos = self._state.key_infos()
        return JSONResponse(
            [{"fingerprint": i.fingerprint, "scope": i.scope, "active": i.active} for i in infos]
        )

    async def revoke(self, request: Request) -> Response:
        key = (await _json_object(request))["key"]
        self._state.revoke(key)
        return JSONResponse({"fingerprint": fingerprint(key), "active": False})

    async def rotate(self, request: Request) -> Response:
        old = (await _json_object(request))["key"]
        new = self._state.rotate(old)
        revoked = fingerprint(old)
        return JSONResponse({"key": new, "fingerprint": fingerprint(new), "revoked": revoked})

    async def inject(self, request: Request) -> Response:
        body = await _json_object(request)
        status, count, prefix = body["status"], body.get("count", 1), body.get("path_prefix")
        retry_after, after = body.get("retry_after"), bool(body.get("after", False))
        firewall = bool(body.get("firewall", False))
        self._state.inject(Fault(status, prefix, retry_after, after, firewall), count)
        return JSONResponse({"status": status, "count": count, "path_prefix": prefix})

    async def chaos(self, request: Request) -> Response:
        body = await _json_object(request)
        latency = body.get("latency", (0.0, 0.0))
        chaos = Chaos(
            unauthorized=float(body.get("unauthorized", 0.0)),
            server_error=float(body.get("server_error", 0.0)),
            too_many=float(body.get("too_many", 0.0)),
            latency=(float(latency[0]), float(latency[1])),
            seed=body.get("seed"),
            path_prefix=body.get("path_prefix"),
        )
        self._state.set_chaos(chaos)
        return JSONResponse(body)

    async def clear_faults(self, _request: Request) -> Response:
        self._state.clear_faults()
        return JSONResponse({"cleared": True})

    async def latency(self, request: Request) -> Response:
        seconds = float((await _json_object(request))["seconds"])
        self._state.set_latency(seconds)
        return JSONResponse({"seconds": seconds})

    async def counters(self, _request: Request) -> Response:
        return JSONResponse(self._state.counters().to_json())

    async def in_flight(self, _request: Request) -> Response:
        """Requests that arrived and are not answered yet (`Emulator.in_flight`)."""
        return JSONResponse({"in_flight": self._state.in_flight})

    async def reset_counters(self, _request: Request) -> Response:
        self._state.reset_counters()
        return JSONResponse(self._state.counters().to_json())

    async def reset(self, _request: Request) -> Response:
        self._state.reset()
        return JSONResponse({"reset": True})


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    body = json.loads(raw) if raw else {}
    if not isinstance(body, dict):
        raise TypeError("the request body must be a JSON object")
    return body


def _admin_errors(handler: _Handler) -> _Handler:
    # Turns a bad admin call into a 400 or 404 that says why, instead of a bare 500.
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except UnknownKeyError as exc:
            return JSONResponse({"error": exc.args[0]}, 404)
        except KeyError as exc:
            return JSONResponse({"error": f"the request body needs {exc.args[0]!r}"}, 400)
        except (TypeError, ValueError) as exc:
            return JSONResponse({"error": str(exc)}, 400)

    return endpoint
