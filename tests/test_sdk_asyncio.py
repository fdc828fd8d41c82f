"""The wrapped ``runpod.AsyncioEndpoint`` and its jobs, in a real aiohttp session.

Unwrapped, this SDK path has no 401 handling: a rejected key surfaces as ``KeyError('id')``
or an error body returned as if it were the answer. Wrapped, the status is read at the
HTTP layer. See test_sdk_endpoint.py for how the SDK is pointed at the emulator.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
import runpod
import runpod.error

from resilient_runpod import AuthenticationError, Credentials, TransientError, wrap

from .helpers import BRIEF

pytestmark = pytest.mark.anyio


async def test_unwrapped_the_async_endpoint_fails_with_a_symptom(sdk, runpod_emulator):
    """The problem being solved: a revoked key makes the SDK's run() fail with KeyError('id')."""
    async with aiohttp.ClientSession() as session:
        endpoint = runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session)
        runpod_emulator.revoke(runpod_emulator.api_key)
        with pytest.raises(KeyError):
            await endpoint.run({"n": 1})


async def test_every_async_method_recovers_after_a_rotation(
    sdk, runpod_emulator, vault, credentials
):
    """run, status, output, health, purge_queue and cancel each survive a rotation."""
    async with aiohttp.ClientSession() as session:
        endpoint = wrap(runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials)
        runpod_emulator.job_seconds = 60.0
        vault.rotate()
        pending = await endpoint.run({"n": 1})
        vault.rotate()
        assert "IN_PROGRESS" == await pending.status()
        vault.rotate()
        assert "CANCELLED" == (await pending.cancel())["status"]
        runpod_emulator.job_seconds = 0.0
        vault.rotate()
        done = await endpoint.run({"n": 2})
        vault.rotate()
        assert {"echo": {"n": 2}} == await done.output(timeout=30)
        vault.rotate()
        assert "jobs" in await endpoint.health()
        vault.rotate()
        assert "completed" == (await endpoint.purge_queue())["status"]
    assert 7 == vault.calls


async def test_a_job_made_before_a_rotation_keeps_working(sdk, runpod_emulator, vault, credentials):
    """The job's own copy of the headers is updated; its status is fetched after the rotation."""
    async with aiohttp.ClientSession() as session:
        endpoint = wrap(runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials)
        runpod_emulator.job_seconds = 60.0
        job = await endpoint.run({"n": 1})
        new_key = vault.rotate()
        assert "IN_PROGRESS" == await job.status()
        assert f"Bearer {new_key}" == job.headers["Authorization"]
        assert f"Bearer {new_key}" == endpoint.headers["Authorization"]
        assert new_key == endpoint.api_key
        assert new_key == runpod.api_key
        after = wrap(runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials)
        assert "jobs" in await after.health()
    assert 1 == vault.calls


async def test_a_rotation_in_the_middle_of_a_concurrent_batch(
    sdk, runpod_emulator, vault, credentials
):
    """20 concurrent runs, rotated half way: every job finishes, one hook call."""
    async with aiohttp.ClientSession() as session:
        endpoint = wrap(runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials)
        first = await asyncio.gather(*(endpoint.run({"n": n}) for n in range(10)))
        vault.rotate()
        second = await asyncio.gather(*(endpoint.run({"n": n}) for n in range(10, 20)))
        outputs = await asyncio.gather(*(job.output(timeout=30) for job in first + second))
    assert [{"echo": {"n": n}} for n in range(20)] == outputs
    assert 1 == vault.calls


async def test_the_sdk_client_session_with_its_bare_key_header_recovers(
    sdk, runpod_emulator, vault, credentials, monkeypatch
):
    """The SDK's AsyncClientSession sends the bare key by default; that copy is updated too."""
    from runpod.http_client import AsyncClientSession

    monkeypatch.setenv("RUNPOD_AI_API_KEY", runpod_emulator.api_key)
    async with AsyncClientSession() as session:
        endpoint = wrap(runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials)
        new_key = vault.rotate()
        assert "jobs" in await endpoint.health()
        assert new_key == session.headers["Authorization"]
    assert 1 == vault.calls


@pytest.mark.parametrize("clause", [runpod.error.AuthenticationError, AuthenticationError])
async def test_the_give_up_is_an_sdk_authentication_error(
    sdk, runpod_emulator, vault, credentials, clause
):
    """Not KeyError('id'): an error the SDK's users already know to catch."""
    async with aiohttp.ClientSession() as session:
        endpoint = wrap(runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials)
        runpod_emulator.revoke(runpod_emulator.api_key)
        vault.key = None
        with pytest.raises(clause) as caught:
            await endpoint.run({"n": 1})
    assert isinstance(caught.value, AuthenticationError)
    assert isinstance(caught.value, runpod.error.AuthenticationError)


async def test_wrapping_leaves_the_session_alone_for_other_code(
    sdk, runpod_emulator, vault, credentials
):
    """The user's session is not changed: its other requests get no key and no recovery."""
    async with aiohttp.ClientSession() as session:
        wrap(runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials)
        vault.rotate()
        url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
        async with session.get(url) as response:
            assert 401 == response.status
    assert 0 == vault.calls


@pytest.mark.parametrize("clause", [aiohttp.ClientError, runpod.error.QueryError, TransientError])
async def test_a_503_on_run_not_sent_again_is_an_aiohttp_error_and_a_query_error(
    sdk, runpod_emulator, clause
):
    """A 503 on ``POST …/run`` is not resent (a job may exist): instead of ``KeyError('id')``,
    a TransientError that ``except aiohttp.ClientError`` and the SDK's QueryError catch."""
    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host], retry=BRIEF)
    runpod_emulator.inject(503)
    async with aiohttp.ClientSession() as session:
        endpoint = wrap(runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session), credentials)
        with pytest.raises(clause) as caught:
            await endpoint.run({"n": 1})
    error = caught.value
    assert isinstance(error, TransientError)
    assert isinstance(error, aiohttp.ClientError)
    assert isinstance(error, runpod.error.QueryError)
    assert ("unsafe", 503) == (error.reason, error.status_code)
    assert 1 == runpod_emulator.counters().total


async def test_the_callers_session_carries_every_send_of_an_endpoint_the_module_makes(
    sdk, runpod_emulator, vault, credentials
):
    """rp.AsyncioEndpoint(E, session): the 401, its probe and the resend all go through the
    caller's session, its own middleware included; nothing is sent past it."""
    seen: list[str] = []

    async def counting(request, handler):
        seen.append(request.headers.get("Authorization", ""))
        return await handler(request)

    rp = wrap(runpod, credentials)
    async with aiohttp.ClientSession(middlewares=(counting,)) as session:
        endpoint = rp.AsyncioEndpoint(runpod_emulator.endpoint_id, session)
        new_key = vault.rotate()
        runpod_emulator.reset_counters()
        assert "jobs" in await endpoint.health()
    assert 1 == vault.calls
    assert 3 == runpod_emulator.counters().total == len(seen)
    assert f"Bearer {new_key}" == seen[-1]
