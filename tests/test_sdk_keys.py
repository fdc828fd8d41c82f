"""Which key a wrapped SDK object sends: its own if it was given one, else the shared one.

The rule: an object created with its own key sends that key; if RunPod rejects it,
recovery runs (once for all its users) and the recovered key replaces it for that
object only; objects created without a key follow the shared `Credentials`. And a key
found only in ``RUNPOD_API_KEY`` reaches the SDK through ``wrap(runpod)``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import aiohttp
import pytest
import runpod
import runpod.error
import tenacity

from resilient_runpod import Credentials, RetryPolicy, wrap
from resilient_runpod._keys import fingerprint
from resilient_runpod.sdk import _wrap
from resilient_runpod.sdk._bindings import binding_for

from .helpers import Counting, in_threads


def replacements(table: dict[str, str]) -> Counting:
    """A counting hook that replaces each rejected key by the one listed for it."""
    by_fingerprint = {fingerprint(old): new for old, new in table.items()}
    return Counting(lambda context: by_fingerprint.get(context.fingerprint), name="replacements")


@pytest.fixture
def own_key(runpod_emulator) -> str:
    """A second full-access key of the same account, for an object of its own."""
    return runpod_emulator.add_key()


def sent_by(runpod_emulator, key: str) -> int:
    """How many requests the emulator answered that carried *key*."""
    return runpod_emulator.counters().by_key.get(fingerprint(key), 0)


def test_an_endpoint_made_with_its_own_key_sends_that_key(sdk, runpod_emulator, own_key):
    """rp.Endpoint(..., api_key=K) sends K, not the shared key."""
    shared = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host])
    rp = wrap(runpod, shared)
    endpoint = rp.Endpoint(runpod_emulator.endpoint_id, api_key=own_key)
    assert "jobs" in endpoint.health()
    assert 1 == sent_by(runpod_emulator, own_key)
    assert 0 == sent_by(runpod_emulator, runpod_emulator.api_key)


def test_a_rejected_own_key_is_replaced_for_that_object_only(sdk, runpod_emulator, own_key):
    """The recovered key serves the object that held K; the shared key and the global stay."""
    replacement = runpod_emulator.add_key()
    hook = replacements({own_key: replacement})
    shared = Credentials(runpod_emulator.api_key, recovery=hook, hosts=[runpod_emulator.host])
    rp = wrap(runpod, shared)
    own = rp.Endpoint(runpod_emulator.endpoint_id, api_key=own_key)
    follower = rp.Endpoint(runpod_emulator.endpoint_id)
    runpod_emulator.revoke(own_key)
    assert "jobs" in own.health()
    assert "jobs" in follower.health()
    assert 1 == hook.calls
    assert replacement == own.rp_client.api_key
    assert runpod_emulator.api_key == follower.rp_client.api_key
    assert runpod_emulator.api_key == shared.api_key
    assert runpod_emulator.api_key == runpod.api_key
    assert 1 == sent_by(runpod_emulator, replacement)


def test_an_explicit_key_survives_wrapping_without_credentials(sdk, runpod_emulator, own_key):
    """wrap(runpod.Endpoint(..., api_key=K)) with the shared default still sends K."""
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id, api_key=own_key))
    assert "jobs" in endpoint.health()
    assert 1 == sent_by(runpod_emulator, own_key)
    assert _wrap._default is not None
    assert runpod_emulator.api_key == _wrap._default.api_key


def test_64_threads_on_an_endpoint_with_its_own_key_share_one_recovery(
    sdk, runpod_emulator, own_key
):
    """Single flight holds for a key of the object's own: 64 rejected threads, one hook call."""
    replacement = runpod_emulator.add_key()
    hook = replacements({own_key: replacement})
    shared = Credentials(runpod_emulator.api_key, recovery=hook, hosts=[runpod_emulator.host])
    endpoint = wrap(runpod.Endpoint(runpod_emulator.endpoint_id, api_key=own_key), shared)
    runpod_emulator.revoke(own_key)
    results = in_threads(endpoint.health)
    assert 64 == sum("jobs" in result for result in results)
    assert 1 == hook.calls


def test_an_own_key_keeps_every_setting_of_the_shared_credentials(sdk, runpod_emulator, own_key):
    """An endpoint with its own key gets the shared retry policy, window and probe interval:
    with ``retry_unsafe=True``, a 503 on its ``POST /run`` is sent again, not raised."""
    policy = RetryPolicy(deadline=5, retry_unsafe=True, backoff=tenacity.wait_none())
    shared = Credentials(
        runpod_emulator.api_key,
        hosts=[runpod_emulator.host],
        retry=policy,
        recovery_window=0,
        probe_interval=1,
    )
    rp = wrap(runpod, shared)
    endpoint = rp.Endpoint(runpod_emulator.endpoint_id, api_key=own_key)
    binding = binding_for(shared, own_key)
    assert binding is not None
    derived = binding.credentials
    assert own_key == derived.api_key
    assert (policy, 0, 1) == (derived.retry, derived.recovery_window, derived.probe_interval)
    runpod_emulator.inject(503, path_prefix=f"/v2/{runpod_emulator.endpoint_id}/run")
    job = endpoint.run({"n": 1})
    assert job.job_id
    assert {503: 1, 200: 1} == dict(runpod_emulator.counters().by_key_status[fingerprint(own_key)])
    assert [{"n": 1}] == runpod_emulator.job_inputs()


@pytest.mark.anyio
async def test_an_async_endpoint_keeps_its_own_key_and_its_jobs_follow_it(
    sdk, runpod_emulator, own_key
):
    """AsyncioEndpoint(..., api_key=K) and the jobs it runs send K, then K's replacement."""
    replacement = runpod_emulator.add_key()
    hook = replacements({own_key: replacement})
    shared = Credentials(runpod_emulator.api_key, recovery=hook, hosts=[runpod_emulator.host])
    runpod_emulator.job_seconds = 60.0
    async with aiohttp.ClientSession() as session:
        endpoint = wrap(
            runpod.AsyncioEndpoint(runpod_emulator.endpoint_id, session, api_key=own_key), shared
        )
        job = await endpoint.run({"n": 1})
        runpod_emulator.revoke(own_key)
        assert "IN_PROGRESS" == await job.status()
    assert 1 == hook.calls
    assert f"Bearer {replacement}" == job.headers["Authorization"]
    assert replacement == endpoint.api_key
    assert runpod_emulator.api_key == shared.api_key
    assert 0 == sent_by(runpod_emulator, runpod_emulator.api_key)


def test_the_readme_example_works_with_the_key_only_in_the_environment(runpod_emulator, child_env):
    """Only RUNPOD_API_KEY set, no config file: wrap(runpod) hands the key to the SDK.

    A fresh interpreter, as a new user runs it; on 1.12 the SDK alone would refuse to
    make the endpoint ("Expected run_pod.api_key to be initialized").
    """
    program = textwrap.dedent(
        f"""
        import runpod, resilient_runpod

        rp = resilient_runpod.wrap(runpod)
        endpoint = rp.Endpoint({runpod_emulator.endpoint_id!r})
        print(endpoint.run_sync({{"prompt": "hello"}}))
        print(rp.get_pods())
        """
    )
    env = {
        **child_env,
        **runpod_emulator.sdk_env,
        "RUNPOD_API_KEY": runpod_emulator.api_key,
        "RESILIENT_RUNPOD_NO_PROMPT": "1",
    }
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )
    assert 0 == result.returncode, result.stderr
    assert ["{'echo': {'prompt': 'hello'}}", "[]"] == result.stdout.splitlines()
    assert runpod_emulator.api_key not in result.stdout + result.stderr


def test_an_endpoint_made_before_a_rotation_follows_the_shared_key(
    sdk, runpod_emulator, vault, credentials
):
    """An endpoint that took the old runpod.api_key has no key of its own: wrapped later,
    it follows the shared credentials and needs no second recovery."""
    wrap(runpod.get_user, credentials)()  # wrap puts the shared key in runpod.api_key
    before = runpod.Endpoint(runpod_emulator.endpoint_id)
    vault.rotate()
    assert "id" in wrap(runpod.get_user, credentials)()
    assert "jobs" in wrap(before, credentials).health()
    assert 1 == vault.calls
    assert vault.key == before.rp_client.api_key


def test_with_no_key_anywhere_recovery_finds_one_before_the_sdk_refuses(
    sdk, runpod_emulator, vault, monkeypatch
):
    """No key in the credentials or the SDK: making an endpoint or calling a function
    runs recovery first (once), instead of the SDK's "api_key not initialized"."""
    monkeypatch.setattr(runpod, "api_key", None)
    credentials = Credentials(None, recovery=vault, hosts=[runpod_emulator.host])
    rp = wrap(runpod, credentials)
    endpoint = rp.Endpoint(runpod_emulator.endpoint_id)
    assert "jobs" in endpoint.health()
    assert "id" in rp.get_user()
    assert 1 == vault.calls
    assert vault.key == runpod.api_key


@pytest.mark.parametrize("clause", [RuntimeError, runpod.error.AuthenticationError])
def test_with_no_key_and_none_found_the_sdk_errors_still_catch_it(
    sdk, runpod_emulator, vault, monkeypatch, clause
):
    """Recovery finds nothing: the give-up is caught where the SDK's own refusal was."""
    monkeypatch.setattr(runpod, "api_key", None)
    vault.key = None
    credentials = Credentials(None, recovery=vault, hosts=[runpod_emulator.host])
    rp = wrap(runpod, credentials)
    with pytest.raises(clause):
        rp.Endpoint(runpod_emulator.endpoint_id)
    with pytest.raises(clause):
        rp.get_user()
    assert 0 == runpod_emulator.counters().total


def test_with_no_key_a_call_that_needs_none_runs_no_recovery(
    sdk, runpod_emulator, vault, monkeypatch
):
    """Recovery waits for the SDK's own refusal: a call failing its checks first runs none."""
    monkeypatch.setattr(runpod, "api_key", None)
    credentials = Credentials(None, recovery=vault, hosts=[runpod_emulator.host])

    def create_thing(name: str) -> None:
        raise ValueError(f"{name!r} is not a valid name")

    create_thing.__module__ = "runpod.api.future"
    with pytest.raises(ValueError, match="not a valid name"):
        wrap(create_thing, credentials)("?")
    assert 0 == vault.calls
