"""The adapters: each translates one HTTP client to the engine (`resilient_runpod._engine`).

- `ResilientTransport`, `AsyncResilientTransport`, `RunPodAuth` (``_httpx``): for httpx,
  exported from the package itself.
- `ResilientHTTPAdapter`: mount on a ``requests.Session``.
- `ResilientMiddleware`: pass to ``aiohttp.ClientSession(middlewares=...)`` (aiohttp >= 3.12).

Both run the same engine as the httpx transport. Each is imported on first use, so that
using one does not import the other's HTTP library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._aiohttp import ResilientMiddleware
    from ._requests import ResilientHTTPAdapter

__all__ = ["ResilientHTTPAdapter", "ResilientMiddleware"]


def __getattr__(name: str) -> Any:
    # Lazy: `requests` and `aiohttp` are optional (the `sdk` extra).
    if name == "ResilientHTTPAdapter":
        from ._requests import ResilientHTTPAdapter  # noqa: PLC0415 -- optional dependency

        return ResilientHTTPAdapter
    if name == "ResilientMiddleware":
        from ._aiohttp import ResilientMiddleware  # noqa: PLC0415 -- optional dependency

        return ResilientMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
