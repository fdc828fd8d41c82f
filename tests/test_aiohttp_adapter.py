"""`ResilientMiddleware` in a real ``aiohttp.ClientSession``, against the emulator."""

from __future__ import annotations

import aiohttp
import pytest

from resilient_runpod import (
    AuthenticationError,
    Credentials,
    PermissionDeniedError,
    TransientError,
)
from resilient_runpod._keys import fingerprint
from resilient_runpod.adapters import ResilientMiddleware

from .helpers import BRIEF, closed_port, make_key

pytestmark = pytest.mark.anyio


async def test_a_rotated_key_is_recovered_and_the_request_sent_again(
    runpod_emulator, vault, credentials
):
    """A GET and a JSON POST both succeed after a rotation; the hook runs once each time."""
    base = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}"
    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(credentials),)) as session:
        vault.rotate()
        async with session.get(f"{base}/health") as response:
            assert 200 == response.status
        vault.rotate()
        async with session.post(f"{base}/runsync", json={"input": {"n": 1}}) as response:
            assert {"echo": {"n": 1}} == (await response.json())["output"]
    assert 2 == vault.calls


async def test_the_key_goes_only_to_allowed_hosts(runpod_emulator, vault):
    """A host not in the policy gets the request as it was: no key, no recovery."""
    credentials = Credentials(runpod_emulator.api_key, recovery=vault)
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    middlewares = (ResilientMiddleware(credentials),)
    async with (
        aiohttp.ClientSession(middlewares=middlewares) as session,
        session.get(url) as response,
    ):
        assert 401 == response.status
    assert {"<no key>": 1} == dict(runpod_emulator.counters().by_key)
    assert 0 == vault.calls


async def test_a_403_raises_permission_denied_without_recovery(runpod_emulator, vault):
    """403 means the key is valid: PermissionDeniedError, the hook never runs."""
    read_key = runpod_emulator.add_key(scope="read")
    credentials = Credentials(read_key, recovery=vault, hosts=[runpod_emulator.host])
    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(credentials),)) as session:
        with pytest.raises(PermissionDeniedError):
            await session.post(f"{runpod_emulator.serverless_url}/e/run", json={"input": {}})
    assert 0 == vault.calls


async def test_recovery_that_finds_nothing_gives_up(runpod_emulator, vault, credentials):
    """A dead key and an empty vault: AuthenticationError after the probe and one read."""
    runpod_emulator.revoke(runpod_emulator.api_key)
    vault.key = None
    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(credentials),)) as session:
        with pytest.raises(AuthenticationError):
            await session.get(f"{runpod_emulator.serverless_url}/e/health")
    assert 1 == vault.calls
    assert 2 == runpod_emulator.counters().total  # the send and its probe


async def test_a_key_in_the_query_moves_to_the_header(runpod_emulator, vault, credentials):
    """A GraphQL request carrying the key as ``?api_key=`` is sent with the key in its
    ``Authorization`` header alone, the rejected key's sends and the recovered key's."""
    sent: list[tuple[str | None, str | None]] = []

    async def seen(request: aiohttp.ClientRequest, handler):
        sent.append((request.url.query.get("api_key"), request.headers.get("Authorization")))
        return await handler(request)

    old = runpod_emulator.api_key
    new = vault.rotate()
    middlewares = (ResilientMiddleware(credentials), seen)
    async with (
        aiohttp.ClientSession(middlewares=middlewares) as session,
        session.post(
            f"{runpod_emulator.graphql_url}?api_key={old}",
            json={"query": "query { myself { id } }"},
        ) as response,
    ):
        assert 200 == response.status
    # The send, its probe, the resend after recovery.
    assert [(None, f"Bearer {old}"), (None, f"Bearer {old}"), (None, f"Bearer {new}")] == sent
    by_key = runpod_emulator.counters().by_key_status
    assert {fingerprint(old): {401: 2}, fingerprint(new): {200: 1}} == {
        fp: dict(codes) for fp, codes in by_key.items()
    }
    assert 1 == vault.calls


@pytest.mark.parametrize(
    "clause", [aiohttp.ClientConnectionError, aiohttp.ClientError, TransientError]
)
async def test_lost_connections_that_outlast_the_retries_are_aiohttp_connection_errors(clause):
    """A refused connection, retried until the policy gives up, raises a TransientError
    that ``except aiohttp.ClientConnectionError`` catches too, its reason and history intact."""
    host = closed_port()
    credentials = Credentials(make_key(), hosts=[host], retry=BRIEF)
    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(credentials),)) as session:
        with pytest.raises(clause) as info:
            await session.get(f"http://{host}/v2/e/health")
    error = info.value
    assert isinstance(error, TransientError)
    assert isinstance(error, aiohttp.ClientConnectionError)
    assert isinstance(error.__cause__, aiohttp.ClientConnectorError)
    assert ("exhausted", None) == (error.reason, error.status_code)
    assert 2 == len(error.history)
    assert str(error).startswith(f"GET http://{host}/v2/e/health failed with")


@pytest.mark.parametrize("clause", [aiohttp.ClientError, TransientError])
async def test_a_503_on_run_not_sent_again_is_an_aiohttp_client_error(runpod_emulator, clause):
    """``POST …/run`` answered 503 is not resent (a job may exist): the TransientError is
    also an ``aiohttp.ClientError``, though not a connection error."""
    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host], retry=BRIEF)
    runpod_emulator.inject(503)
    async with aiohttp.ClientSession(middlewares=(ResilientMiddleware(credentials),)) as session:
        with pytest.raises(clause) as info:
            await session.post(f"{runpod_emulator.serverless_url}/e/run", json={"input": {}})
    error = info.value
    assert isinstance(error, TransientError)
    assert isinstance(error, aiohttp.ClientError)
    assert not isinstance(error, aiohttp.ClientConnectionError)
    assert ("unsafe", 503) == (error.reason, error.status_code)
    assert 1 == runpod_emulator.counters().total
