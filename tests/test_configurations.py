"""One semantics of a 401 in every configuration: the decision table, end to end.

What a rejected key leads to must not depend on how the hook is composed. Every test
here runs one scenario over every configuration below, against the emulator over real
sockets:

- a first 401 on the current key: the request is resent once, at once, with the same
  key, through the caller's own transport; a 200 ends it without reading any source;
- rejected again: one flight asks the source (one hook call); a new key is adopted;
- nothing new, on a key RunPod accepted before: the store may be stale, so cheap
  sources are re-read with backoff and the request resent, within ``recovery_window``;
- nothing new, on a key RunPod never accepted: `AuthenticationError` at once.

"Nothing new" means the same for a bare source, `chain`, `default`, `persist`,
`shared`, `callback`, a watched file and a `prompt` that cannot ask (nobody is at the
keyboard here: ``RESILIENT_RUNPOD_NO_PROMPT=1``). During recovery the library opens no
connection of its own: every lookup of a RunPod host is refused and recorded, and the
emulator must have seen only what the caller's transport sent.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from resilient_runpod import (
    AuthenticationError,
    Credentials,
    ResilientTransport,
    RetryPolicy,
    fingerprint,
    recovery,
    wrap,
)
from resilient_runpod.testing import Emulator
from resilient_runpod.typing import RecoveryContext, RecoveryHook

from .helpers import PATIENCE, Counting, make_key

# RunPod's own names: a lookup of any of them during a test is a side channel.
RUNPOD_DOMAINS = ("runpod.io", "runpod.ai")

# Scenario c: the store shows the new key this many seconds after the revocation.
STORE_LAG = 3.0

# Seconds a request may take, recovery included: far above what any scenario needs
# (nothing but scenario c's store lag waits), far below the 150-s default window, so a
# request that polls instead of failing ends in time to be counted.
DEADLINE = 20.0
RETRY = RetryPolicy(deadline=DEADLINE)


# -- the world each test runs in --------------------------------------------------------


@pytest.fixture(autouse=True)
def _nobody_at_the_keyboard(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A prompt cannot ask; `shared` keeps its lock and result files in this test's directory."""
    monkeypatch.setenv(recovery.NO_PROMPT_VARIABLE, "1")
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))


@pytest.fixture(autouse=True)
def runpod_lookups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every DNS lookup of a RunPod host is refused and recorded; none may happen.

    Loopback (the emulator) resolves as usual. A recorded lookup means the library tried
    to reach RunPod on a connection of its own, beside the caller's request.
    """
    lookups: list[str] = []
    resolve = socket.getaddrinfo

    def refusing(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = (host.decode() if isinstance(host, bytes) else str(host or "")).rstrip(".")
        if any(name == d or name.endswith("." + d) for d in RUNPOD_DOMAINS):
            lookups.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: refused by the test")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", refusing)
    yield lookups
    assert [] == lookups


@dataclass(frozen=True)
class World:
    """What a configuration is built from."""

    emulator: Emulator
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch


Update = Callable[[str], None]
"""Make the store show this key, as an operator's rotation would."""


def _write(path: Path, text: str) -> None:
    """Replace *path* in one step, as a Kubernetes volume or a Vault agent does."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _secret_file(world: World, key: str) -> tuple[Path, Update]:
    path = world.tmp_path / "runpod-key"
    _write(path, key + "\n")
    return path, lambda new: _write(path, new + "\n")


def _file(world: World, key: str) -> tuple[RecoveryHook, Update]:
    path, update = _secret_file(world, key)
    return recovery.from_file(path), update


def _env(world: World, key: str) -> tuple[RecoveryHook, Update]:
    world.monkeypatch.setenv("RUNPOD_API_KEY", key)
    return recovery.from_env(), lambda new: world.monkeypatch.setenv("RUNPOD_API_KEY", new)


def _persist(world: World, key: str) -> tuple[RecoveryHook, Update]:
    path, update = _secret_file(world, key)
    saved = world.tmp_path / "saved-key"
    return recovery.persist(recovery.from_file(path), to=saved), update


def _shared(world: World, key: str) -> tuple[RecoveryHook, Update]:
    path, update = _secret_file(world, key)
    # Named after this test's directory: no answer from another test is ever reused.
    return recovery.shared(recovery.from_file(path), name=f"matrix-{world.tmp_path.name}"), update


def _callback(world: World, key: str) -> tuple[RecoveryHook, Update]:
    path, update = _secret_file(world, key)
    # A lambda, not path.read_text: that takes arguments, so it would be handed the context.
    return recovery.callback(lambda: path.read_text()), update  # noqa: PLW0108


def _watched(world: World, key: str) -> tuple[RecoveryHook, Update]:
    path, update = _secret_file(world, key)
    return recovery.from_file(path, watch=True), update


def _chain_with_prompt(world: World, key: str) -> tuple[RecoveryHook, Update]:
    path, update = _secret_file(world, key)
    # The README's example; here the prompt cannot ask (nobody at the keyboard).
    return recovery.chain(recovery.from_file(path), recovery.prompt()), update


def _default(world: World, key: str) -> tuple[RecoveryHook, Update]:
    # RUNPOD_API_KEY is unset (conftest); the key lives where `runpod config` puts it.
    config = Path(os.environ["HOME"]) / ".runpod" / "config.toml"
    config.parent.mkdir(mode=0o700)

    def update(new: str) -> None:
        _write(config, f'[default]\napi_key = "{new}"\n')

    update(key)
    # What Credentials(recovery=None) builds: the environment, the config file, a prompt.
    return recovery.default(), update


@dataclass(frozen=True)
class Configuration:
    """A way of composing recovery; *sdk*: the request goes through ``wrap(runpod)``."""

    id: str
    store: Callable[[World, str], tuple[RecoveryHook, Update]]
    sdk: bool = False


HTTPX = [
    Configuration("from_file", _file),
    Configuration("from_env", _env),
    Configuration("persist", _persist),
    Configuration("shared", _shared),
    Configuration("callback", _callback),
    Configuration("watched_file", _watched),
    Configuration("chain_with_prompt", _chain_with_prompt),
    Configuration("default", _default),
]
EVERY = [*HTTPX, Configuration("sdk_wrap", _file, sdk=True)]


def configurations(chosen: list[Configuration]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("configuration", chosen, ids=[c.id for c in chosen])


class Counted(Counting):
    """Counts a hook's calls, and is otherwise that hook.

    The engine asks a hook more than its answer: whether it asks a person
    (``interactive``), how long it may take (``timeout``), whether it pushes keys
    (``subscribe``, a watched file) or wants to hear of an accepted key (``accepted``,
    `persist`). A plain wrapper would hide all that and change the configuration it
    counts; this one passes every such question on to the hook it wraps. That is how
    `default` is counted too: ``Counted(recovery.default())`` is the hook
    ``Credentials(recovery=None)`` would build, with a counter in front.
    """

    def __call__(self, context: RecoveryContext) -> Any:
        """Count the call; answer what the hook answers."""
        return super().__call__(context)

    def __getattr__(self, name: str) -> Any:
        if name == "hook":  # not set yet: never recurse
            raise AttributeError(name)
        return getattr(self.hook, name)


@dataclass(frozen=True)
class Setup:
    """One configuration, built: the credentials, its counted hook, its store, a request."""

    credentials: Credentials
    hook: Counted
    update: Update
    request: Callable[[], int]
    """GET the endpoint's health; returns the status the request ended with."""
    sent: Counter[str]
    """Sends that left through the caller's own transport, by key fingerprint."""


class Recording(httpx.BaseTransport):
    """The caller's own transport: counts what it sends, by the key each send carries."""

    def __init__(self, sent: Counter[str]) -> None:
        self.sent = sent
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        with self._lock:
            self.sent[fingerprint(key or None)] += 1
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


Build = Callable[..., Setup]


@pytest.fixture
def build(
    runpod_emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[Build]:
    """Builds a configuration around *key* (the credentials' key and the store's)."""
    world = World(runpod_emulator, tmp_path, monkeypatch)
    with ExitStack() as stack:

        def make(configuration: Configuration, key: str, **options: Any) -> Setup:
            bare, update = configuration.store(world, key)
            hook = Counted(bare, name=f"counted({configuration.id})")
            options.setdefault("retry", RETRY)
            credentials = Credentials(key, hook, hosts=[runpod_emulator.host], **options)
            sent: Counter[str] = Counter()
            if configuration.sdk:
                runpod: ModuleType = request.getfixturevalue("sdk")
                monkeypatch.setattr(runpod, "api_key", key)
                endpoint = wrap(runpod, credentials).Endpoint(runpod_emulator.endpoint_id)
                return Setup(credentials, hook, update, lambda: _healthy(endpoint), sent)
            client = stack.enter_context(
                httpx.Client(
                    transport=ResilientTransport(credentials, Recording(sent)),
                    base_url=f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}",
                )
            )
            return Setup(credentials, hook, update, lambda: client.get("/health").status_code, sent)

        yield make


def _healthy(endpoint: Any) -> int:
    """The SDK raises on anything but a 2xx; a health document is its 200."""
    assert "jobs" in endpoint.health()
    return 200


def within_patience(call: Callable[[], int]) -> int:
    """*call*'s result, raised error included; a hang fails the test instead of the suite."""
    (outcome,) = concurrently(call, 1)
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def concurrently(call: Callable[[], int], count: int) -> list[int | BaseException]:
    """Run *call* in *count* threads released together; each one's status or error."""
    outcomes: list[int | BaseException | None] = [None] * count
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        barrier.wait()
        try:
            outcomes[index] = call()
        except BaseException as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        # A safety net, not a timing assertion: the deadline ends every request sooner.
        thread.join(PATIENCE)
        if thread.is_alive():
            pytest.fail(f"a request was still running after {PATIENCE:g} s")
    return [o for o in outcomes if o is not None]


def seen(emulator: Emulator, *keys: str) -> dict[str, dict[int, int]]:
    """What the emulator answered to requests carrying *keys*, by fingerprint, then status."""
    by_key = emulator.counters().by_key_status
    return {fingerprint(k): dict(by_key[fingerprint(k)]) for k in keys if fingerprint(k) in by_key}


# -- the scenarios --------------------------------------------------------------------


def test_a_lookup_of_a_runpod_host_is_refused_and_recorded(runpod_lookups: list[str]) -> None:
    """The guard every test here relies on: RunPod's names do not resolve, loopback does."""
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("api.runpod.ai", 443)
    with pytest.raises(httpx.ConnectError):
        httpx.get("https://rest.runpod.io/v1/pods", trust_env=False)
    loopback = socket.getaddrinfo("127.0.0.1", 80)
    recorded = list(runpod_lookups)
    runpod_lookups.clear()  # seen here on purpose

    assert (["api.runpod.ai", "rest.runpod.io"], True) == (recorded, bool(loopback))


@configurations(EVERY)
def test_one_spurious_401_is_resent_once_without_asking_the_source(
    build: Build, runpod_emulator: Emulator, configuration: Configuration
) -> None:
    """A key RunPod accepted gets one 401: the request goes out once more with the same
    key and succeeds. No source is read, nobody is asked, nothing else is sent."""
    key = runpod_emulator.add_key()
    setup = build(configuration, key)
    warm_up = within_patience(setup.request)
    runpod_emulator.inject(401, path_prefix="/v2/")

    status = within_patience(setup.request)

    assert (200, 200, 0) == (warm_up, status, setup.hook.calls)
    assert {fingerprint(key): {200: 2, 401: 1}} == seen(runpod_emulator, key)


@configurations(EVERY)
def test_two_spurious_401s_ask_the_source_once_and_resend_the_same_key(
    build: Build, runpod_emulator: Emulator, configuration: Configuration
) -> None:
    """Two 401s in a row on a key RunPod accepted: the resend is rejected, one flight asks
    the source, which still holds the key, and the key is sent again and succeeds."""
    key = runpod_emulator.add_key()
    setup = build(configuration, key)
    warm_up = within_patience(setup.request)
    runpod_emulator.inject(401, 2, path_prefix="/v2/")

    status = within_patience(setup.request)

    assert (200, 200) == (warm_up, status)
    assert setup.hook.calls <= 1, setup.hook.calls
    assert {fingerprint(key): {200: 2, 401: 2}} == seen(runpod_emulator, key)


@configurations(HTTPX)
def test_a_revoked_key_waits_for_a_store_that_lags(
    build: Build,
    runpod_emulator: Emulator,
    configuration: Configuration,
    record_property: Callable[[str, object], None],
) -> None:
    """Revoked after it worked, the new key in the store only seconds later: three
    concurrent requests wait on one recovery that re-reads the store, and all succeed."""
    key = runpod_emulator.add_key()
    setup = build(configuration, key, recovery_window=30.0, retry=RetryPolicy(deadline=45.0))
    warm_up = within_patience(setup.request)
    new = runpod_emulator.rotate(key)
    store_catches_up = threading.Timer(STORE_LAG, setup.update, args=(new,))
    store_catches_up.start()
    try:
        outcomes = concurrently(setup.request, 3)
    finally:
        store_catches_up.cancel()
        store_catches_up.join()
    record_property("hook_calls", setup.hook.calls)

    assert (200, [200, 200, 200]) == (warm_up, outcomes)
    assert new == setup.credentials.api_key
    assert 1 <= setup.hook.calls <= 20, setup.hook.calls
    # Each request met the revocation: it was sent before the store changed.
    assert seen(runpod_emulator, key)[fingerprint(key)][401] >= 3
    # Everything the emulator got with either key left through the caller's transport:
    # recovery sent nothing of its own (no probe of the key beside the request).
    at_the_emulator = {fp: sum(n.values()) for fp, n in seen(runpod_emulator, key, new).items()}
    assert dict(setup.sent) == at_the_emulator


@configurations(EVERY)
def test_a_key_never_accepted_fails_at_once(
    build: Build, runpod_emulator: Emulator, configuration: Configuration
) -> None:
    """A wrong key from the start, the same in the store: RunPod never accepted it, so
    there is nothing to wait for. AuthenticationError after the resend and one look."""
    wrong = make_key()
    setup = build(configuration, wrong)

    with pytest.raises(AuthenticationError):
        within_patience(setup.request)

    sends = sum(seen(runpod_emulator, wrong).get(fingerprint(wrong), {}).values())
    assert sends <= 2, sends
    assert setup.hook.calls <= 3, setup.hook.calls
