"""The key never leaks from the SDK paths: events, log records, errors, reprs.

A canary key goes through every path (sync endpoint, async endpoint, GraphQL functions,
the wrapped module, both transport adapters, retry_init), is rejected and recovered
from, then rejected for good; its text must appear nowhere a person could read it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import aiohttp
import pytest
import requests
import runpod
import structlog

from resilient_runpod import AuthenticationError, Credentials, retry_init, wrap
from resilient_runpod.adapters import ResilientHTTPAdapter, ResilientMiddleware
from resilient_runpod.sdk import _wrap

from .helpers import make_key

if TYPE_CHECKING:
    from resilient_runpod.testing import Emulator


pytestmark = pytest.mark.anyio


class Vault:
    """Hands out the next key, then nothing."""

    name = "vault"

    def __init__(self) -> None:
        self.key: str | None = None
        self._lock = threading.Lock()

    def __call__(self, _context: object) -> str | None:
        with self._lock:
            key, self.key = self.key, None
            return key


async def test_no_path_shows_the_key(  # noqa: PLR0915 -- one scenario through every path
    runpod_emulator: Emulator, monkeypatch, caplog
):
    """Canary keys appear in no structlog event, log record, exception text or repr."""
    canary, successor = make_key(), make_key()
    runpod_emulator.add_key(canary)
    runpod_emulator.add_key(successor)
    monkeypatch.setattr(runpod, "endpoint_url_base", runpod_emulator.serverless_url)
    for name, value in runpod_emulator.sdk_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(runpod, "api_key", canary)
    monkeypatch.setattr(_wrap, "_default", None)
    caplog.set_level(logging.DEBUG)
    vault = Vault()
    # No waiting for an empty vault to catch up: the give-ups below come at once.
    credentials = Credentials(
        canary, recovery=vault, hosts=[runpod_emulator.host], recovery_window=0
    )
    texts: list[str] = []
    errors: list[BaseException] = []

    def expect_give_up(call) -> None:
        try:
            call()
        except AuthenticationError as exc:
            errors.append(exc)
        else:
            pytest.fail("expected the give-up error")

    def rotate() -> None:
        # The current key dies; the vault holds the successor for one recovery.
        runpod_emulator.revoke(credentials.api_key)
        vault.key = successor if credentials.api_key == canary else canary
        runpod_emulator.add_key(vault.key)

    with structlog.testing.capture_logs() as events:
        endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
        get_user = wrap(runpod.get_user, credentials)
        module = wrap(runpod, credentials)
        rotate()
        endpoint.run_sync({"n": 1})
        rotate()
        get_user()
        rotate()
        module.get_pods()
        async with aiohttp.ClientSession() as session:
            async_endpoint = wrap(
                runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials
            )
            rotate()
            job = await async_endpoint.run({"n": 1})
            texts += [repr(async_endpoint.session), repr(job.session)]
            runpod_emulator.revoke(credentials.api_key)
            try:
                await async_endpoint.health()
            except AuthenticationError as exc:
                errors.append(exc)
            middleware = ResilientMiddleware(credentials)
            texts.append(repr(middleware))
        adapter = ResilientHTTPAdapter(credentials)
        with requests.Session() as plain:
            plain.mount("http://", adapter)
            expect_give_up(lambda: plain.get(f"{runpod_emulator.serverless_url}/e/health"))
        expect_give_up(endpoint.health)
        expect_give_up(get_user)
        expect_give_up(module.get_pods)
        expect_give_up(lambda: retry_init(lambda key: key, credentials))
        texts += [repr(endpoint), repr(module), repr(adapter), repr(credentials), repr(get_user)]

    assert 4 == len([e for e in events if e["event"] == "runpod.auth.recovered"])
    assert 6 == len(errors)
    for error in errors:
        chain: BaseException | None = error
        while chain is not None:
            texts += [str(chain), repr(chain)]
            chain = chain.__cause__ or chain.__context__
    texts += [repr(event) for event in events]
    texts += [record.getMessage() for record in caplog.records]
    texts += [repr(record.args) for record in caplog.records]
    for secret in (canary, successor):
        assert [] == [text for text in texts if secret in text]


def test_a_key_of_an_objects_own_does_not_leak_either(
    runpod_emulator: Emulator, monkeypatch, caplog
):
    """An endpoint's own key, rejected, recovered, then rejected for good: shown nowhere."""
    own, successor = make_key(), make_key()
    runpod_emulator.add_key(own)
    monkeypatch.setattr(runpod, "endpoint_url_base", runpod_emulator.serverless_url)
    for name, value in runpod_emulator.sdk_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(runpod, "api_key", runpod_emulator.api_key)
    caplog.set_level(logging.DEBUG)
    vault = Vault()
    shared = Credentials(
        runpod_emulator.api_key, recovery=vault, hosts=[runpod_emulator.host], recovery_window=0
    )
    texts: list[str] = []
    with structlog.testing.capture_logs() as events:
        endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id, api_key=own), shared)
        runpod_emulator.revoke(own)
        runpod_emulator.add_key(successor)
        vault.key = successor
        assert "jobs" in endpoint.health()
        runpod_emulator.revoke(successor)
        with pytest.raises(AuthenticationError) as caught:
            endpoint.health()
        adapter = endpoint.rp_client.rp_session.get_adapter(runpod_emulator.url)
        texts += [repr(endpoint), repr(adapter), repr(adapter.credentials), str(caught.value)]
        texts += [repr(caught.value), repr(caught.value.__cause__)]
    assert 1 == len([e for e in events if e["event"] == "runpod.auth.recovered"])
    texts += [repr(event) for event in events]
    texts += [record.getMessage() for record in caplog.records]
    for secret in (own, successor):
        assert [] == [text for text in texts if secret in text]
