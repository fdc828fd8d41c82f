"""`Emulator`: RunPod's auth surface on a loopback port, with controls for tests.

The server is uvicorn in a daemon thread; the controls change shared state that the
app reads on every request, so a test can revoke a key or inject a 401 between two
calls without restarting anything.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from ._state import RESET, Chaos, Counters, EmulatorState, Fault, KeyInfo, Scope

if TYPE_CHECKING:
    from collections.abc import Iterable
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["Emulator"]

_INSTALL_HINT = (
    "the RunPod emulator needs uvicorn and starlette: pip install 'resilient-runpod[emulator]'"
)
# Generous: on a loaded CI machine a thread can wait a while for its first time slice.
_START_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 10.0


def _server_modules() -> tuple[Any, Any]:
    # Imported here, not at the top, so that `import resilient_runpod.testing` works
    # without the extra and the error comes only when someone wants a server.
    try:
        import uvicorn  # noqa: PLC0415 (optional dependency, see above)

        from . import _app  # noqa: PLC0415 (imports starlette)
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT, name=exc.name) from exc
    return uvicorn, _app


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not the default 0: asyncio turns Nagle's algorithm off (TCP_NODELAY)
    # only for sockets that say they are TCP, and with it on every small answer on a
    # kept-alive connection waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # As uvicorn does: a restarted emulator can take its port back at once.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno, f"the RunPod emulator could not listen on {host}:{port}: {exc.strerror}"
        ) from exc
    return sock


def _serve(server: Any, sock: socket.socket) -> None:
    try:
        server.run(sockets=[sock])
    except SystemExit:
        # uvicorn's way of saying that startup failed; start() sees the thread end.
        return


class Emulator:
    """A RunPod look-alike on loopback: serverless, GraphQL and REST v2, with their 401s and 403s.

    Use it as a context manager, or call `start` and `stop`::

        with Emulator() as emu:
            httpx.get(f"{emu.serverless_url}/{emu.endpoint_id}/health",
                      headers={"Authorization": f"Bearer {emu.api_key}"})

    Point the ``runpod`` SDK at it with ``RUNPOD_ENDPOINT_BASE_URL=emu.serverless_url``
    (read when ``runpod`` is imported) and ``RUNPOD_API_BASE_URL=emu.api_url`` (read on
    every GraphQL call); `sdk_env` holds both.

    *keys* are registered with full access and *read_keys* read-only (see `add_key` for
    what a read-only key is refused, and which of those answers RunPod documents); with
    neither, one random full-access key is made. Every ``/run`` job completes at the first status
    check, or after *job_seconds* if that is more than zero. Any endpoint id works,
    except ``pods``, which REST v2 owns.

    Other processes (a CLI demo, a subprocess under test) reach the same controls over
    HTTP, without auth, under ``/_emulator/``: ``POST keys`` (``{"key"?, "scope"?}``),
    ``GET keys``, ``POST keys/revoke`` and ``keys/rotate`` (``{"key"}``), ``POST faults``
    (``{"status", "count"?, "path_prefix"?}``), ``DELETE faults``, ``POST latency``
    (``{"seconds"}``), ``GET``/``DELETE counters``, ``GET in_flight`` and ``POST reset``.
    Admin calls are neither delayed, faulted nor counted.
    """

    def __init__(
        self,
        keys: Iterable[str] = (),
        *,
        read_keys: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        job_seconds: float = 0.0,
        endpoint_id: str = "demo-endpoint",
    ) -> None:
        if isinstance(keys, str) or isinstance(read_keys, str):
            raise TypeError("keys must be a collection of keys, e.g. Emulator(keys=[key])")
        if job_seconds < 0:
            raise ValueError(f"job_seconds cannot be negative, not {job_seconds}")
        self._uvicorn, app_module = _server_modules()
        self._state = EmulatorState(keys, read_keys=read_keys, job_seconds=job_seconds)
        self._app = app_module.build_app(self._state)
        self._bind_host = host
        self._bind_port = port
        self._endpoint_id = endpoint_id
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._port: int | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Self:
        """Start serving; return when the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("this emulator is already running")
        config = self._uvicorn.Config(
            self._app,
            host=self._bind_host,
            port=self._bind_port,
            log_level="warning",
            # Access lines would print GraphQL's ?api_key= query parameters: keys.
            access_log=False,
            # Leave the application's own logging configuration alone.
            log_config=None,
            lifespan="off",
            loop="asyncio",
            http="h11",
            backlog=2048,
            timeout_keep_alive=30,
            # A request parked in injected latency must not hold up stop().
            timeout_graceful_shutdown=1,
        )
        server = self._uvicorn.Server(config)
        # Bound here rather than by uvicorn, so that a port in use raises OSError in the
        # caller's thread (uvicorn would log and sys.exit() inside the server thread).
        sock = _listening_socket(self._bind_host, self._bind_port)
        thread = threading.Thread(
            target=_serve, args=(server, sock), name="runpod-emulator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(_STOP_TIMEOUT_SECONDS)
                sock.close()
                raise OSError(f"the RunPod emulator did not start on {self._bind_host}")
            time.sleep(0.005)
        self._server, self._thread, self._socket = server, thread, sock
        self._port = sock.getsockname()[1]
        return self

    def stop(self) -> None:
        """Stop serving and wait for the server thread to end. Does nothing if stopped."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_SECONDS)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = self._port = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        keys = [
            info.fingerprint if info.active else f"{info.fingerprint} (revoked)"
            for info in self._state.key_infos()
        ]
        return f"<Emulator {where} keys={keys}>"

    # -- where it is --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server's root, e.g. ``http://127.0.0.1:52713``."""
        return f"http://{self.host}"

    @property
    def host(self) -> str:
        """``HOST:PORT`` as it appears in URLs: what an allow-list of hosts needs."""
        if self._port is None:
            raise RuntimeError("the emulator is not running: call start() or use `with`")
        host = f"[{self._bind_host}]" if ":" in self._bind_host else self._bind_host
        return f"{host}:{self._port}"

    @property
    def serverless_url(self) -> str:
        """The serverless base (``{url}/v2``): the SDK's ``RUNPOD_ENDPOINT_BASE_URL``."""
        return f"{self.url}/v2"

    @property
    def api_url(self) -> str:
        """The API base (``url``): the SDK's ``RUNPOD_API_BASE_URL``; it appends ``/graphql``."""
        return self.url

    @property
    def graphql_url(self) -> str:
        """The GraphQL URL, ``{url}/graphql``."""
        return f"{self.url}/graphql"

    @property
    def rest_url(self) -> str:
        """The REST v2 base, ``{url}/v2``: pods, and stand-ins for the SDK 2.x's other calls."""
        return f"{self.url}/v2"

    @property
    def sdk_env(self) -> dict[str, str]:
        """The environment variables that point the ``runpod`` SDK at this emulator."""
        return {
            "RUNPOD_ENDPOINT_BASE_URL": self.serverless_url,
            "RUNPOD_API_BASE_URL": self.api_url,
        }

    @property
    def endpoint_id(self) -> str:
        """A serverless endpoint id to use; any other works too."""
        return self._endpoint_id

    @property
    def job_seconds(self) -> float:
        """How long a job runs before a status check finds it finished."""
        return self._state.jobs.job_seconds

    @job_seconds.setter
    def job_seconds(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"job_seconds cannot be negative, not {seconds}")
        self._state.jobs.job_seconds = seconds

    # -- keys ---------------------------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The first active full-access key."""
        key = self._state.first_key()
        if key is None:
            raise LookupError("the emulator has no active full-access key: call add_key()")
        return key

    @property
    def keys(self) -> tuple[KeyInfo, ...]:
        """Every registered key, by fingerprint, scope and whether it is still active."""
        return self._state.key_infos()

    def add_key(self, key: str | None = None, *, scope: Scope = "all") -> str:
        """Register *key* (or a new random ``rpa_`` key) with *scope*; return it.

        A ``"read"`` key may look (status, stream, health, GraphQL queries, REST GETs)
        and gets 403 (GraphQL: an ``Unauthorized`` error) on everything that changes
        something. RunPod documents the REST v2 403 only: the serverless 403 is the
        emulator's reading of RunPod's scopes, not a documented answer. Registering a
        revoked key again makes it active.
        """
        return self._state.add_key(key, scope=scope)

    def revoke(self, key: str) -> None:
        """Make *key* get 401 from now on. Raises `KeyError` for a key never registered."""
        self._state.revoke(key)

    def rotate(self, old_key: str) -> str:
        """Revoke *old_key*; return a new key with the same scope."""
        return self._state.rotate(old_key)

    # -- faults -------------------------------------------------------------------------

    def inject(
        self,
        status: int,
        count: int = 1,
        *,
        path_prefix: str | None = None,
        retry_after: str | None = None,
        after: bool = False,
        firewall: bool = False,
    ) -> None:
        """Answer the next *count* requests (whose path starts with *path_prefix*) with *status*.

        The key is not looked at: an injected 401 is what a key revoked elsewhere looks
        like. The body is the one that surface sends with that status; 429 carries
        ``Retry-After`` (*retry_after* sets it, for any status). With *after*, the request
        is served first (a job is created) and the answer replaced: a gateway error on
        the way back. With *firewall*, the body is an HTML page, as from the firewall in
        front of RunPod (its 403 has nothing to do with the key). Faults queue up in the
        order they were injected.
        """
        self._state.inject(Fault(status, path_prefix, retry_after, after, firewall), count)

    def inject_reset(
        self, count: int = 1, *, path_prefix: str | None = None, after: bool = False
    ) -> None:
        """Drop the connection of the next *count* requests mid-response (after serving them)."""
        self._state.inject(Fault(RESET, path_prefix, None, after), count)

    def chaos(self, chaos: Chaos) -> None:
        """Draw random trouble for every request from now on: spurious 401s, 5xx, 429, latency.

        ``chaos(Chaos())`` (or `clear_faults`) ends it.
        """
        self._state.set_chaos(chaos)

    def set_latency(self, seconds: float) -> None:
        """Delay every request by *seconds* (without blocking other requests)."""
        self._state.set_latency(seconds)

    def clear_faults(self) -> None:
        """Drop the injected faults that are still pending, and the latency."""
        self._state.clear_faults()

    # -- traffic ------------------------------------------------------------------------

    def counters(self) -> Counters:
        """Return a snapshot of the requests answered so far, keys named by fingerprint."""
        return self._state.counters()

    @property
    def in_flight(self) -> int:
        """Requests that arrived and are not answered yet: proof that a request is in flight."""
        return self._state.in_flight

    def job_inputs(self) -> list[Any]:
        """The input of every job submitted so far, in order: duplicates show here."""
        return self._state.jobs.inputs()

    def reset_counters(self) -> None:
        """Start counting from zero."""
        self._state.reset_counters()

    def reset(self) -> None:
        """Go back to the state just after construction, without restarting the server.

        The keys given to the constructor (or the one it made) are active again with their
        first scope and every other key is gone; faults, latency, counters, jobs and pods are
        cleared and *job_seconds* is restored.
        """
        self._state.reset()
