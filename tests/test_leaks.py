"""The key never leaks: every engine scenario run with canary keys, and every trace searched.

A scenario returns the objects a user could print (errors, credentials, transports,
hook contexts). The sweep then looks for the canaries in those objects' ``str`` and
``repr`` (and their causes), in every structlog event and in every stdlib log record,
httpx's and httpcore's included.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import tenacity
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
from resilient_runpod.testing import Emulator

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
        errors = _attempt(lambda: client.get("/health"))
    # Our error must not repeat it; the hook's own exception is the hook's business.
    return [credentials, *(str(e) for e in errors), *(repr(e) for e in errors)]


@scenario
def hook_returning_the_rejected_key(emulator, tmp_path, monkeypatch):
    old = emulator.api_key
    credentials = Credentials(old, lambda c: old, hosts=[emulator.host])
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
    texts = [str(obj), repr(obj)]
    cause = getattr(obj, "__cause__", None)
    if isinstance(obj, ResilientRunPodError) and isinstance(cause, ResilientRunPodError):
        texts += _texts(cause)
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
