"""The wrapped sync ``runpod.Endpoint`` and its jobs: the real SDK against the emulator.

The SDK copies ``runpod.endpoint_url_base`` (read from ``RUNPOD_ENDPOINT_BASE_URL`` when
``runpod`` is first imported, possibly by another test module) into each client it
makes, so patching that module global per test points new endpoints at the emulator
without a subprocess. ``RUNPOD_API_BASE_URL`` is read on every GraphQL call.
"""

from __future__ import annotations

import pytest
import requests
import runpod
import runpod.error

import resilient_runpod
from resilient_runpod import (
    AuthenticationError,
    Credentials,
    PermissionDeniedError,
    TransientError,
    wrap,
)
from resilient_runpod.sdk import _wrap

from .helpers import BRIEF, closed_port, in_threads, make_key


def test_every_endpoint_method_recovers_after_a_rotation(sdk, runpod_emulator, vault, credentials):
    """run, run_sync, status, output, health, purge_queue and cancel each survive a rotation.

    Each of the 8 rotations costs one hook call and two 401s: the call's send with the
    old key, and its probe (the same key once more), whose 401 reads the vault.
    """
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    runpod_emulator.job_seconds = 60.0  # jobs stay unfinished: status is asked of the server
    vault.rotate()
    job = endpoint.run({"n": 1})
    vault.rotate()
    assert "IN_PROGRESS" == job.status()
    vault.rotate()
    assert "CANCELLED" == job.cancel()["status"]
    runpod_emulator.job_seconds = 0.0
    vault.rotate()
    done = endpoint.run({"n": 2})
    vault.rotate()
    assert {"echo": {"n": 2}} == done.output()
    vault.rotate()
    assert {"echo": {"n": 3}} == endpoint.run_sync({"n": 3})
    vault.rotate()
    assert "jobs" in endpoint.health()
    vault.rotate()
    assert "completed" == endpoint.purge_queue()["status"]
    assert 8 == vault.calls
    assert 16 == runpod_emulator.counters().by_status[401]


def test_a_rotation_in_the_middle_of_a_batch_costs_one_recovery(
    sdk, runpod_emulator, vault, credentials
):
    """Jobs submitted before and after a rotation all finish; the hook runs once."""
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    jobs = []
    for n in range(10):
        if n == 5:
            vault.rotate()
        jobs.append(endpoint.run({"n": n}))
    assert [{"echo": {"n": n}} for n in range(10)] == [job.output() for job in jobs]
    assert 1 == vault.calls


def test_every_copy_of_the_key_is_updated_so_old_and_new_endpoints_work(
    sdk, runpod_emulator, vault, credentials
):
    """After a recovery, the global key, the client's key and its header hold the new key."""
    before = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    new_key = vault.rotate()
    assert "jobs" in before.health()
    assert new_key == runpod.api_key
    assert new_key == before.rp_client.api_key
    assert f"Bearer {new_key}" == before.rp_client.headers["Authorization"]
    plain_after = runpod.Endpoint(runpod_emulator.endpoint_id)  # not wrapped: reads runpod.api_key
    wrapped_after = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    assert "jobs" in plain_after.health()
    assert "jobs" in wrapped_after.health()
    assert 1 == vault.calls


def test_a_job_made_by_an_unwrapped_endpoint_can_be_wrapped(
    sdk, runpod_emulator, vault, credentials
):
    """wrap() takes a sync Job on its own."""
    runpod_emulator.job_seconds = 60.0
    job = runpod.Endpoint(runpod_emulator.endpoint_id).run({"n": 1})
    vault.rotate()
    assert "IN_PROGRESS" == wrap(job, credentials).status()
    assert 1 == vault.calls


@pytest.mark.parametrize(
    "clause", [RuntimeError, runpod.error.AuthenticationError, AuthenticationError]
)
def test_existing_except_clauses_catch_the_give_up(
    sdk, runpod_emulator, vault, credentials, clause
):
    """When recovery gives up, ``except RuntimeError`` (the SDK's 401) still catches it."""
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    runpod_emulator.revoke(runpod_emulator.api_key)
    vault.key = None  # the vault has nothing newer
    with pytest.raises(clause) as caught:
        endpoint.health()
    assert isinstance(caught.value, resilient_runpod.AuthenticationError)
    assert credentials.fingerprint == caught.value.fingerprint
    assert str(caught.value).startswith("RunPod rejected API key")


def test_a_403_is_not_recovered(sdk, runpod_emulator, vault):
    """A read-only key gets 403 on /run: PermissionDeniedError, and the hook never runs."""
    read_key = runpod_emulator.add_key(scope="read")
    credentials = Credentials(read_key, recovery=vault, hosts=[runpod_emulator.host])
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    with pytest.raises(PermissionDeniedError):
        endpoint.run({"n": 1})
    assert 0 == vault.calls


def test_64_threads_at_a_rotation_share_one_recovery(sdk, runpod_emulator, vault, credentials):
    """64 threads calling one wrapped endpoint across a rotation: one hook call, no failures."""
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    vault.rotate()
    results = in_threads(endpoint.health)
    assert 64 == sum("jobs" in result for result in results)
    assert 1 == vault.calls


def test_the_sdk_base_url_hosts_may_receive_the_key(sdk, runpod_emulator, vault):
    """With no hosts= given, the host in RUNPOD_ENDPOINT_BASE_URL gets the key and recovers."""
    credentials = Credentials(runpod_emulator.api_key, recovery=vault)
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    vault.rotate()
    assert "jobs" in endpoint.health()
    assert 1 == vault.calls


def test_the_sdk_retries_for_408_and_429_stay_in_place(sdk, runpod_emulator, credentials):
    """Our adapter wraps the SDK's own adapters, so its urllib3 retry settings still apply."""
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    inner = endpoint.rp_client.rp_session.get_adapter("http://x").adapter
    assert isinstance(inner, requests.adapters.HTTPAdapter)
    assert 5 == inner.max_retries.total


def test_wrap_refuses_what_it_cannot_wrap(sdk, credentials):
    """A clear TypeError names what wrap() accepts."""
    with pytest.raises(TypeError, match=r"runpod\.Endpoint"):
        wrap(object(), credentials)


def test_wrap_without_credentials_shares_one_default(sdk, runpod_emulator):
    """wrap() without credentials starts from runpod.api_key, one Credentials for all."""
    first = wrap(runpod.Endpoint(runpod_emulator.endpoint_id))
    second = wrap(runpod.Endpoint(runpod_emulator.endpoint_id))
    assert "jobs" in first.health()
    assert _wrap._default is not None
    assert runpod_emulator.api_key == _wrap._default.api_key
    assert first.rp_client.rp_session.get_adapter("http://x").credentials is (
        second.rp_client.rp_session.get_adapter("http://x").credentials
    )


def test_unwrapped_a_503_on_run_is_a_requests_http_error(sdk, runpod_emulator):
    """What the SDK's callers catch today: its endpoint calls ``raise_for_status()``."""
    runpod_emulator.inject(503)
    with pytest.raises(requests.HTTPError):
        runpod.Endpoint(runpod_emulator.endpoint_id).run({"n": 1})


@pytest.mark.parametrize("clause", [requests.HTTPError, runpod.error.QueryError, TransientError])
def test_wrapped_a_503_on_run_is_caught_where_the_sdk_raised_it(sdk, runpod_emulator, clause):
    """A 503 on ``POST …/run`` is not resent (a job may exist): the TransientError is also
    the ``requests.HTTPError`` the endpoint raised, and the SDK's ``QueryError``."""
    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host], retry=BRIEF)
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id), credentials)
    runpod_emulator.inject(503)
    with pytest.raises(clause) as caught:
        endpoint.run({"n": 1})
    error = caught.value
    assert isinstance(error, TransientError)
    assert isinstance(error, requests.HTTPError)
    assert isinstance(error, runpod.error.QueryError)
    assert ("unsafe", 503, 1) == (error.reason, error.status_code, len(error.history))
    assert str(error).startswith("POST ")
    assert 1 == runpod_emulator.counters().total


@pytest.mark.parametrize("clause", [requests.ConnectionError, TransientError])
def test_wrapped_lost_connections_are_the_requests_connection_error_the_sdk_raised(
    sdk, monkeypatch, clause
):
    """An endpoint whose host refuses connections: after the retries, the TransientError is
    also the ``requests.ConnectionError`` the unwrapped SDK raises."""
    host = closed_port()
    # https: the SDK mounts its own urllib3 retries (with backoff) for http:// only.
    monkeypatch.setattr(runpod, "endpoint_url_base", f"https://{host}/v2")
    with pytest.raises(requests.ConnectionError):
        runpod.Endpoint("e").health()
    credentials = Credentials(make_key(), hosts=[host], retry=BRIEF)
    endpoint = wrap(runpod.Endpoint("e", api_key=credentials.api_key), credentials)
    with pytest.raises(clause) as caught:
        endpoint.health()
    error = caught.value
    assert isinstance(error, TransientError)
    assert isinstance(error, requests.ConnectionError)
    assert ("exhausted", None, 2) == (error.reason, error.status_code, len(error.history))
