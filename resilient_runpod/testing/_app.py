"""The emulator's ASGI app: RunPod's surfaces behind a layer that counts, delays and fails.

Requests flow through `_Instrument` first (latency, injected faults, counters), then
to the routes: REST v2 pods, GraphQL, serverless, in that order, so that
``/v2/pods/...`` is never taken for a serverless endpoint. The admin API under
``/_emulator/`` skips the instrument layer: controlling the emulator is not traffic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._keys import fingerprint
from . import _graphql, _rest, _serverless
from ._auth import error_response, presented_key, surface_of
from ._state import EmulatorState, UnknownKeyError

__all__ = ["ADMIN_PREFIX", "build_app"]

ADMIN_PREFIX = "/_emulator/"

_Handler = Callable[[Request], Awaitable[Response]]


def build_app(state: EmulatorState) -> ASGIApp:
    """Return the ASGI app that serves RunPod's auth surface from *state*."""
    app = Starlette(
        routes=[
            *_admin_routes(state),
            *_rest.routes(state),
            *_graphql.routes(state),
            *_serverless.routes(state),
        ]
    )
    # Outside Starlette, so that even its own error pages are counted.
    return _Instrument(app, state)


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

        if (latency := self._state.latency) > 0:
            await asyncio.sleep(latency)
        status = self._state.take_fault(scope["path"])
        if status is not None:
            response = error_response(status, surface_of(scope["path"]))
            await response(scope, receive, counting_send)
            return
        await self._app(scope, receive, counting_send)


def _admin_routes(state: EmulatorState) -> list[BaseRoute]:
    async def json_body(request: Request) -> dict[str, Any]:
        raw = await request.body()
        body = json.loads(raw) if raw else {}
        if not isinstance(body, dict):
            raise TypeError("the request body must be a JSON object")
        return body

    async def add_key(request: Request) -> Response:
        body = await json_body(request)
        scope = body.get("scope", "all")
        key = state.add_key(body.get("key"), scope=scope)
        return JSONResponse({"key": key, "fingerprint": fingerprint(key), "scope": scope})

    async def list_keys(request: Request) -> Response:
        infos = state.key_infos()
        return JSONResponse(
            [{"fingerprint": i.fingerprint, "scope": i.scope, "active": i.active} for i in infos]
        )

    async def revoke(request: Request) -> Response:
        key = (await json_body(request))["key"]
        state.revoke(key)
        return JSONResponse({"fingerprint": fingerprint(key), "active": False})

    async def rotate(request: Request) -> Response:
        old = (await json_body(request))["key"]
        new = state.rotate(old)
        return JSONResponse({"key": new, "fingerprint": fingerprint(new), "revoked": fingerprint(old)})

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            state.clear_faults()
            return JSONResponse({"cleared": True})
        body = await json_body(request)
        status, count, prefix = body["status"], body.get("count", 1), body.get("path_prefix")
        state.inject(status, count, prefix)
        return JSONResponse({"status": status, "count": count, "path_prefix": prefix})

    async def latency(request: Request) -> Response:
        seconds = float((await json_body(request))["seconds"])
        state.set_latency(seconds)
        return JSONResponse({"seconds": seconds})

    async def counters(request: Request) -> Response:
        if request.method == "DELETE":
            state.reset_counters()
        return JSONResponse(state.counters().to_json())

    async def reset(request: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    def admin(path: str, handler: _Handler, methods: list[str]) -> Route:
        return Route(ADMIN_PREFIX + path, _admin_errors(handler), methods=methods)

    return [
        admin("keys", add_key, ["POST"]),
        admin("keys", list_keys, ["GET"]),
        admin("keys/revoke", revoke, ["POST"]),
        admin("keys/rotate", rotate, ["POST"]),
        admin("faults", faults, ["POST", "DELETE"]),
        admin("latency", latency, ["POST"]),
        admin("counters", counters, ["GET", "DELETE"]),
        admin("reset", reset, ["POST"]),
    ]


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
