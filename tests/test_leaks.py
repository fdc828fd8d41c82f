"""The key never leaks: every engine scenario run with canary keys, and every trace searched.

A scenario returns the objects a user could print (errors, credentials, transports,
hook contexts). The sweep then looks for the canaries in those objects' ``str`` and
``repr`` (and their causes), in every structlog event and in every stdlib log record,
httpx's and httpcore's included. The canary test at the end plants a key at each place
a key can enter (environment, file, config, AWS, command, callback, prompt).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import secrets
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
import tenacity
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput
from structlog.testing import capture_logs

from resilient_runpod import (
    AsyncResilientTransport,
    BodyNotReplayableError,
    Credentials,
    RecoveryContext,
    ResilientRunPodError,
    ResilientTransport,
    RunPodAuth,
    fingerprint,
    recovery,
)
from resilient_runpod._config import config_path
from resilient_runpod.testing import Emulator

from .conftest import Aws
from .helpers import BRIEF, make_key, places_of, serving
from .test_aws import context_for

Scenario = Callable[[Emulator, Path, pytest.MonkeyPatch], list[object]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(fn: Scenario) -> Scenario:
    SCENARIOS[fn.__name__] = fn
    return fn


def _client(emulator: Emulator, credentials: Credentials) -> httpx.Client:
    return httpx.Client(
        transport=ResilientTransport(credentials),
        base_url=f"{emulator.serverless_url}/{emulator.endpoint_id}",
    )


def _attempt(call: Callable[[], object]) -> list[object]:
    try:
        return [call()]
    except ResilientRunPodError as exc:
        return [exc]


@scenario
def rotation_via_secret_file(emulator, tmp_path, monkeypatch):
    contexts: list[RecoveryContext] = []
    secret = tmp_path / "secret"
    source = recovery.from_file(secret)

    def hook(context: RecoveryContext) -> object:
        contexts.append(context)
        return source(context)

    credentials = Credentials(emulator.api_key, hook, hosts=[emulator.host])
    secret.write_text(emulator.add_key() + "\n")
    emulator.revoke(emulator.api_key)
    transport = ResilientTransport(credentials)
    with httpx.Client(transport=transport) as client:
        client.post(f"{emulator.serverless_url}/e/run", json={"input": {}})
    return [credentials, transport, *contexts]


@scenario
def revoked_key_recovered_from_environment(emulator, tmp_path, monkeypatch):
    credentials = Credentials(emulator.api_key, hosts=[emulator.host])
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.add_key())
    emulator.revoke(emulator.api_key)
    with _client(emulator, credentials) as client:
        client.get("/health")
    return [credentials, credentials.recovery]


@scenario
def permanently_bad_key(emulator, tmp_path, monkeypatch):
    fresh = iter([emulator.add_key() for _ in range(3)])
    credentials = Credentials(
        emulator.api_key, lambda c: next(fresh), hosts=[emulator.host], wait=tenacity.wait_none()
    )
    emulator.inject(401, count=10)
    with _client(emulator, credentials) as client:
        return [credentials, *_attempt(lambda: client.get("/health"))]


@scenario
def forbidden_key(emulator, tmp_path, monkeypatch):
    credentials = Credentials(emulator.add_key(scope="read"), hosts=[emulator.host])
    with _client(emulator, credentials) as client:
        return _attempt(lambda: client.post("/run", json={"input": {}}))


@scenario
def hook_that_quotes_the_key_in_its_error(emulator, tmp_path, monkeypatch):
    old = emulator.api_key

    def hook(context: RecoveryContext) -> str:
        raise ValueError(f"vault refused: token {old} is wrong")  # a careless hook

    credentials = Credentials(old, hook, hosts=[emulator.host])
    emulator.revoke(old)
    with _client(emulator, credentials) as client:
        # The whole chain is searched: the error must not carry the hook's text as it was.
        return [credentials, *_attempt(lambda: client.get("/health"))]


@scenario
def chained_hooks_that_quote_the_key(emulator, tmp_path, monkeypatch):
    old = emulator.api_key

    def vault(context: RecoveryContext) -> str:
        try:
            raise KeyError(old)  # noqa: TRY301 -- a chain, as a vault client builds one
        except KeyError as exc:  # the key in the context of the error, too
            raise ValueError(f"vault refused: token {old} is wrong") from exc

    hook = recovery.chain(recovery.callback(vault, name="vault"), recovery.from_env())
    credentials = Credentials(old, hook, hosts=[emulator.host])
    emulator.revoke(old)
    with _client(emulator, credentials) as client:
        return [credentials, hook, *_attempt(lambda: client.get("/health"))]


@scenario
def key_in_the_url_path(emulator, tmp_path, monkeypatch):
    old = emulator.api_key
    credentials = Credentials(old, lambda c: None, hosts=[emulator.host])
    emulator.revoke(old)
    with _client(emulator, credentials) as client:
        # An endpoint id mixed up with the key: the URL in events and errors holds it.
        return _attempt(lambda: client.get(f"{emulator.serverless_url}/{old}/health"))


@scenario
def hook_returning_the_rejected_key(emulator, tmp_path, monkeypatch):
    old = emulator.api_key
    credentials = Credentials(old, lambda c: old, hosts=[emulator.host], recovery_window=0.2)
    emulator.revoke(old)
    with _client(emulator, credentials) as client:
        return _attempt(lambda: client.get("/health"))


@scenario
def streamed_body(emulator, tmp_path, monkeypatch):
    credentials = Credentials(emulator.api_key, hosts=[emulator.host])
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.add_key())
    emulator.revoke(emulator.api_key)

    def body():
        yield b'{"input": {}}'

    with _client(emulator, credentials) as client:
        found = _attempt(lambda: client.post("/run", content=body()))
    assert isinstance(found[0], BodyNotReplayableError)
    return found


@scenario
def graphql_query_parameter_and_auth_flow(emulator, tmp_path, monkeypatch):
    credentials = Credentials(emulator.api_key, hosts=[emulator.host])
    auth = RunPodAuth(credentials)
    with httpx.Client(auth=auth) as client:
        client.post(
            f"{emulator.graphql_url}?api_key={emulator.api_key}",
            json={"query": "query { myself { id } }"},
        )
    return [auth, credentials]


@scenario
def async_rotation(emulator, tmp_path, monkeypatch):
    import asyncio

    credentials = Credentials(emulator.api_key, hosts=[emulator.host])
    monkeypatch.setenv("RUNPOD_API_KEY", emulator.add_key())
    emulator.revoke(emulator.api_key)
    transport = AsyncResilientTransport(credentials)

    async def run() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            await asyncio.gather(
                *(client.get(f"{emulator.serverless_url}/e/health") for _ in range(20))
            )

    asyncio.run(run())
    return [transport, credentials]


@scenario
def cross_origin(emulator, tmp_path, monkeypatch):
    credentials = Credentials(emulator.api_key)  # the emulator is not an allowed host here
    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        response = client.get(f"{emulator.serverless_url}/e/health")
    assert 401 == response.status_code
    return [credentials]


def _texts(obj: object) -> list[str]:
    """str and repr of *obj* and, for an exception, of everything in its chain."""
    texts: list[str] = []
    pending, seen = [obj], set()
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current)]
        if isinstance(current, BaseException):
            texts += [repr(arg) for arg in current.args]
            pending += [current.__cause__, current.__context__]
    return texts


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_no_key_in_logs_errors_or_reprs(name, runpod_emulator, tmp_path, monkeypatch, caplog):
    """Run the scenario; no key it used appears in any log line, error or repr."""
    with caplog.at_level(logging.DEBUG), capture_logs() as events:
        shown = SCENARIOS[name](runpod_emulator, tmp_path, monkeypatch)
    canaries = _all_keys(runpod_emulator)

    haystacks = [repr(events)]
    haystacks += [record.getMessage() for record in caplog.records]
    haystacks += [text for obj in shown for text in _texts(obj)]

    leaks = sorted({fingerprint(c) for c in canaries for h in haystacks if c in h})
    assert [] == leaks


def _all_keys(emulator: Emulator) -> set[str]:
    """Every key the emulator ever registered (the test may read its private state)."""
    state = emulator._state
    records = getattr(state, "_keys", None)
    assert isinstance(records, dict), "emulator state layout changed: update this helper"
    return set(records)


# -- every adapter, at DEBUG, whatever the application did with logging ------------------
#
# Each adapter below is driven through a recovery (its first key revoked, the vault holds
# the next) with the key in ``?api_key=`` too, then through a server that echoes the key
# back in a response header. The first key has no ``rpa_`` prefix, so only the library's
# memory of the keys it held can remove it. Everything a person could read is searched:
# every line any logger wrote, stdout and stderr, exception chains and reprs.


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers 200, repeating the bearer token in a header, as a careless server might."""

    def do_GET(self) -> None:
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        self.send_response(200)
        self.send_header("X-Seen-Key", token)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the stdlib's name
        """Quiet: a test server's access log is not the library's output."""


@pytest.fixture(scope="module")
def echo_host() -> Iterator[str]:
    """``HOST:PORT`` of a real HTTP server on loopback that echoes the key it is sent."""
    with serving(_EchoHandler) as host:
        yield host


class _OnceVault:
    """A recovery hook that hands out one new key, then nothing."""

    name = "vault"

    def __init__(self, key: str) -> None:
        self.key: str | None = key

    def __call__(self, _context: object) -> str | None:
        key, self.key = self.key, None
        return key


def _legacy_key() -> str:
    """A key of the old shape, with no prefix a pattern could match."""
    return secrets.token_hex(16)


Drive = Callable[[Credentials, str, str], list[object]]
ADAPTERS: dict[str, Drive] = {}


def adapter(fn: Drive) -> Drive:
    ADAPTERS[fn.__name__] = fn
    return fn


@adapter
def httpx_transport(credentials: Credentials, run_url: str, echo_url: str) -> list[object]:
    transport = ResilientTransport(credentials)
    with httpx.Client(transport=transport) as client:
        assert 200 == client.post(run_url, json={"input": {}}).status_code
        assert 200 == client.get(echo_url).status_code
    return [transport]


@adapter
def httpx_async_transport(credentials: Credentials, run_url: str, echo_url: str) -> list[object]:
    import asyncio

    transport = AsyncResilientTransport(credentials)

    async def run() -> None:
        async with httpx.AsyncClient(transport=transport) as client:
            assert 200 == (await client.post(run_url, json={"input": {}})).status_code
            assert 200 == (await client.get(echo_url)).status_code

    asyncio.run(run())
    return [transport]


@adapter
def httpx_auth(credentials: Credentials, run_url: str, echo_url: str) -> list[object]:
    auth = RunPodAuth(credentials)
    with httpx.Client(auth=auth) as client:
        assert 200 == client.post(run_url, json={"input": {}}).status_code
        assert 200 == client.get(echo_url).status_code
    return [auth]


@adapter
def requests_adapter(credentials: Credentials, run_url: str, echo_url: str) -> list[object]:
    import requests

    from resilient_runpod.adapters import ResilientHTTPAdapter

    mounted = ResilientHTTPAdapter(credentials)
    with requests.Session() as session:
        session.mount("http://", mounted)
        assert 200 == session.post(run_url, json={"input": {}}).status_code
        assert 200 == session.get(echo_url).status_code
    return [mounted]


@adapter
def aiohttp_middleware(credentials: Credentials, run_url: str, echo_url: str) -> list[object]:
    import asyncio

    import aiohttp

    from resilient_runpod.adapters import ResilientMiddleware

    middleware = ResilientMiddleware(credentials)

    async def run() -> None:
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            async with session.post(run_url, json={"input": {}}) as response:
                assert 200 == response.status
            async with session.get(echo_url) as response:
                assert 200 == response.status

    asyncio.run(run())
    return [middleware]


@adapter
def wrapped_sdk(credentials: Credentials, run_url: str, echo_url: str) -> list[object]:
    import runpod

    from resilient_runpod import wrap

    get_user = wrap(runpod.get_user, credentials)  # GraphQL, through requests and urllib3
    get_user()
    return [get_user]


class _Sink(io.StringIO):
    """Where a configured application's log lines end up."""


@contextmanager
def _logging_setup(kind: str, sink: _Sink) -> Iterator[None]:
    """Logging as an application leaves it: untouched, stdlib at DEBUG, or structlog."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # Importing runpod quiets urllib3; an application debugging its requests turns it back.
    urllib3_logger = logging.getLogger("urllib3")
    urllib3_level = urllib3_logger.level
    if kind != "unconfigured":
        urllib3_logger.setLevel(logging.DEBUG)
    try:
        if kind == "stdlib":
            logging.basicConfig(level=logging.DEBUG, stream=sink, force=True)
        elif kind == "structlog":
            renderer = structlog.processors.JSONRenderer()
            structlog.configure(
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                logger_factory=structlog.PrintLoggerFactory(sink),
            )
            handler = logging.StreamHandler(sink)
            handler.setFormatter(structlog.stdlib.ProcessorFormatter(processors=[renderer]))
            logging.basicConfig(level=logging.DEBUG, handlers=[handler], force=True)
        yield
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        urllib3_logger.setLevel(urllib3_level)


@pytest.mark.parametrize("setup", ["unconfigured", "stdlib", "structlog"])
@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_no_adapter_shows_the_key_at_debug(  # noqa: PLR0917 -- fixtures
    name, setup, runpod_emulator, echo_host, monkeypatch, capfd
):
    """Through every adapter, at DEBUG: no key in any library's log line, on stdout or
    stderr, or in any repr; nothing at all on stdout; the events reach the app's logging.
    """
    first, second = _legacy_key(), make_key()
    for key in (first, second):
        runpod_emulator.add_key(key)
    runpod_emulator.revoke(first)
    monkeypatch.setattr("runpod.api_key", first)
    for variable, value in runpod_emulator.sdk_env.items():
        monkeypatch.setenv(variable, value)
    credentials = Credentials(
        first, recovery=_OnceVault(second), hosts=[runpod_emulator.host, echo_host]
    )
    run_url = f"{runpod_emulator.serverless_url}/ep/run?api_key={first}"
    sink = _Sink()

    with _logging_setup(setup, sink):
        shown = ADAPTERS[name](credentials, run_url, f"http://{echo_host}/echo")
    out, err = capfd.readouterr()

    assert second == credentials.api_key  # the recovery happened
    assert "" == out
    haystacks = [sink.getvalue(), err, repr(credentials), *map(repr, shown)]
    assert [] == [k for k in (first, second) for h in haystacks if k in h]
    if setup != "unconfigured":
        assert "runpod.auth.recovered" in sink.getvalue()
        # The libraries did log the risky lines at DEBUG: there was a key to remove.
        if name.startswith("httpx"):  # httpcore.http11, the echoed header included
            assert "X-Seen-Key" in sink.getvalue()
        elif name == "requests_adapter":  # urllib3, the ?api_key= URL
            assert "api_key=[REDACTED]" in sink.getvalue()
        elif name == "wrapped_sdk":  # urllib3 (the SDK sends the key in a header)
            assert "POST /graphql" in sink.getvalue()


# -- the canary: a key planted at every place a key can enter ------------------------------
#
# Each place gets a key of its own, of the legacy shape (no prefix for a pattern to find).
# It is recovered through that place, used (with ``?api_key=`` too), revoked, and then
# planted again in every broken form the place can hold it in (not UTF-8, padded inside,
# quoted, in an error's message, ...). Every logger is at DEBUG. The canary must show
# nowhere a person could read: any library's log line, stdout, stderr, the prompt's
# screen, any exception (text, repr, traceback, attributes, chain) or repr.

# Loggers of the libraries in the stack, all set to DEBUG (runpod's import quiets urllib3).
_DEBUGGED = ("botocore", "boto3", "urllib3", "httpx", "httpcore", "aiohttp", "requests")
# The test's own servers are not the library: moto's server runs in this process.
_SERVERS = ("moto", "werkzeug")


def _canary() -> str:
    return secrets.token_hex(20).upper()


class _NotServers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(_SERVERS)


@contextmanager
def _everything_at_debug(sink: _Sink) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in _DEBUGGED}
    handler = logging.StreamHandler(sink)
    handler.addFilter(_NotServers())
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    try:
        logging.basicConfig(level=logging.DEBUG, handlers=[handler], force=True)
        for name in _DEBUGGED:
            logging.getLogger(name).setLevel(logging.DEBUG)
        yield
    finally:
        root.removeHandler(handler)
        for kept in handlers:
            root.addHandler(kept)
        root.setLevel(level)
        for name, was in levels.items():
            logging.getLogger(name).setLevel(was)


def _raised(call: Callable[[], object]) -> list[object]:
    """What *call* raised (any exception a user could see), or what it returned."""
    try:
        return [call()]
    except Exception as exc:  # every error path is searched, whatever its class
        return [exc]


@dataclass
class _Ground:
    """Where a canary is planted, and what planting may use."""

    canary: str
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    aws: Aws
    screen: io.StringIO
    stack: ExitStack

    @property
    def padded(self) -> str:  # a space inside: a key that cannot be sent
        return f"{self.canary} x"

    @property
    def quoted(self) -> str:  # a stray quote pasted with it
        return f'"{self.canary}'


# Each returns the hook that hands out the canary from its place, and hooks over that
# place holding the canary in each broken form.
Planted = tuple[Any, list[Any]]


def _env(ground: _Ground) -> Planted:
    ground.monkeypatch.setenv("RUNPOD_API_KEY", ground.canary)
    ground.monkeypatch.setenv("BROKEN_KEY", ground.padded)
    return recovery.from_env(), [recovery.from_env("BROKEN_KEY")]


def _file(ground: _Ground) -> Planted:
    files = {name: ground.tmp_path / name for name in ("key", "binary", "padded", "quoted")}
    files["key"].write_text(ground.canary + "\n")
    files["binary"].write_bytes(ground.canary.encode() + b"\xff\n")
    files["padded"].write_text(ground.padded)
    files["quoted"].write_text(ground.quoted)
    broken = [recovery.from_file(files[n]) for n in ("binary", "padded", "quoted")]
    return recovery.from_file(files["key"]), broken


def _config(ground: _Ground) -> Planted:
    canary = ground.canary
    config = config_path()
    config.parent.mkdir()
    config.write_text(f'[default]\napi_key = "{canary}"\n')
    broken = {
        name: ground.tmp_path / f"{name}.toml" for name in ("binary", "padded", "torn", "list")
    }
    broken["binary"].write_bytes(f'[default]\napi_key = "{canary}\xff"\n'.encode("latin-1"))
    broken["padded"].write_text(f'[default]\napi_key = "{ground.padded}"\n')
    broken["torn"].write_text(f'[default]\napi_key = "{canary}\n')
    broken["list"].write_text(f'[default]\napi_key = ["{canary}"]\n')
    hooks = [recovery.from_runpod_config(path=path) for path in broken.values()]
    return recovery.from_runpod_config(), hooks


def _aws(ground: _Ground) -> Planted:
    aws, canary = ground.aws, ground.canary
    as_json = aws.secret(json.dumps({"api_key": canary}))
    binary = f"runpod/{secrets.token_hex(4)}"
    aws.client.create_secret(Name=binary, SecretBinary=canary.encode())
    return aws.hook(aws.secret(canary)), [
        aws.hook(as_json),
        aws.hook(as_json, field="key"),
        aws.hook(aws.secret(json.dumps({"api_key": ground.padded})), field="api_key"),
        aws.hook(aws.secret(ground.padded)),
        aws.hook(binary),
    ]


def _command(ground: _Ground) -> Planted:
    def command(code: str) -> Any:
        return recovery.from_command([sys.executable, "-c", code])

    canary = ground.canary
    return command(f"print({canary!r})"), [
        command(f"print({ground.padded!r})"),
        command(f"import sys; print({canary!r}); sys.exit({canary!r})"),
    ]


def _callback(ground: _Ground) -> Planted:
    canary = ground.canary

    def failing() -> str:
        raise RuntimeError(f"the vault answered {canary}")

    return recovery.callback(lambda: canary, name="vault"), [
        recovery.callback(failing, name="vault"),
        recovery.callback(lambda: ground.padded, name="vault"),
    ]


def _prompt(ground: _Ground) -> Planted:
    # A paste with a space in it, refused with a reason, then the key, as often as asked.
    pipe = ground.stack.enter_context(create_pipe_input())
    pipe.send_text(f"{ground.padded}\r{ground.canary}\r" * 8)
    return recovery.prompt(input=pipe, output=PlainTextOutput(ground.screen), timeout=60), []


PLACES: dict[str, Callable[[_Ground], Planted]] = {
    "aws": _aws,
    "callback": _callback,
    "command": _command,
    "config": _config,
    "env": _env,
    "file": _file,
    "prompt": _prompt,
}


@pytest.mark.parametrize("place", sorted(PLACES))
def test_a_canary_key_shows_nowhere(  # noqa: PLR0917 -- fixtures
    place, runpod_emulator, aws, tmp_path, monkeypatch, capfd
):
    """A unique key planted at *place*, with every logger at DEBUG, through a recovery, a
    GraphQL call with ``?api_key=``, transient failures, a rejected key and every broken
    form of the place: the key shows in no log line of any library, nowhere on stdout,
    stderr or the prompt's screen, and in no exception (its text, repr, traceback,
    attributes and chain) or repr.
    """
    import aiohttp
    import requests

    from resilient_runpod.adapters import ResilientHTTPAdapter, ResilientMiddleware

    canary, sink, screen = _canary(), _Sink(), io.StringIO()
    old = runpod_emulator.api_key
    runpod_emulator.add_key(canary)
    runpod_emulator.revoke(old)
    health = f"{runpod_emulator.serverless_url}/ep/health"
    graphql = f"{runpod_emulator.graphql_url}?api_key={canary}"
    query = {"query": "query { myself { id } }"}
    shown: list[object] = []

    def credentials(hook: Any, key: str | None = old) -> Credentials:
        return Credentials(
            key, recovery=hook, hosts=[runpod_emulator.host], recovery_window=0, retry=BRIEF
        )

    async def through_aiohttp(held: Credentials) -> int:
        async with (
            aiohttp.ClientSession(middlewares=(ResilientMiddleware(held),)) as session,
            session.get(health) as response,
        ):
            return response.status

    with ExitStack() as stack:
        # Planted first: the test's own calls to AWS (CreateSecret) are not the library's.
        good, broken = PLACES[place](_Ground(canary, tmp_path, monkeypatch, aws, screen, stack))
        stack.enter_context(_everything_at_debug(sink))
        held = credentials(good)
        with (
            httpx.Client(transport=ResilientTransport(held)) as client,
            requests.Session() as session,
        ):
            session.mount("http://", ResilientHTTPAdapter(held))
            statuses = [
                client.get(health).status_code,
                client.post(graphql, json=query).status_code,
            ]
            statuses.append(session.post(graphql, json=query).status_code)
            statuses.append(asyncio.run(through_aiohttp(held)))
            # A query is resent once (BRIEF) after a 502: two of them end it.
            runpod_emulator.inject(502, count=2, path_prefix="/graphql", after=True)
            shown += _raised(lambda: client.post(graphql, json=query))
            runpod_emulator.inject(502, count=2, path_prefix="/graphql", after=True)
            shown += _raised(lambda: session.post(graphql, json=query))
            runpod_emulator.revoke(canary)  # the source still holds it: recovery fails
            shown += _raised(lambda: client.get(health))
        for hook in broken:
            if place != "callback":  # a callback's own error is the caller's, raised as is
                shown += _raised(partial(hook, context_for(make_key())))
            with httpx.Client(
                transport=ResilientTransport(credentials(hook, make_key()))
            ) as client:
                shown += _raised(lambda: client.get(health))
        if place in ("env", "config"):  # read when no key is given
            shown += _raised(lambda: credentials(None, None))
        shown += [held, good, *broken]
    out, err = capfd.readouterr()

    assert [200, 200, 200, 200] == statuses  # the canary was recovered and used
    assert "" == out
    errors = [e for e in shown if isinstance(e, BaseException)]
    assert len(errors) >= 3 + len(broken)  # every error path was taken
    texts = {"logs": sink.getvalue(), "stderr": err, "screen": screen.getvalue()}
    assert [] == [line for text in texts.values() for line in text.splitlines() if canary in line]
    assert [] == [(repr(o)[:60], places_of(canary, o)) for o in errors if places_of(canary, o)]
    assert [] == [repr(o) for o in shown if canary in repr(o)]
