"""Wrapped GraphQL API functions and the wrapped ``runpod`` module, against the emulator.

``RUNPOD_API_BASE_URL`` is read by the SDK on every GraphQL call, so setting it per
test is enough; see test_sdk_endpoint.py for the serverless base.
"""

from __future__ import annotations

import inspect

import pytest
import runpod
import runpod.error

from resilient_runpod import AuthenticationError, Credentials, wrap


def test_wrapped_functions_recover_and_keep_their_signatures(
    sdk, runpod_emulator, vault, credentials
):
    """get_user, get_pods and create_pod recover after a rotation; signatures are the SDK's."""
    get_user = wrap(runpod.get_user, credentials)
    get_pods = wrap(runpod.get_pods, credentials)
    create_pod = wrap(runpod.create_pod, credentials)
    assert inspect.signature(runpod.create_pod) == inspect.signature(create_pod)
    new_key = vault.rotate()
    assert "id" in get_user()
    pod = create_pod("worker", "runpod/pytorch", "NVIDIA GeForce RTX 4090")
    vault.rotate()
    assert [pod["id"]] == [p["id"] for p in get_pods()]
    assert 2 == vault.calls
    assert vault.key == runpod.api_key
    assert new_key != runpod.api_key


def test_the_wrapped_module_recovers_every_api_function_and_endpoint(
    sdk, runpod_emulator, vault, credentials
):
    """wrap(runpod): its API functions and the endpoints it makes recover; isinstance holds."""
    rp = wrap(runpod, credentials)
    vault.rotate()
    assert [] == rp.get_pods()
    vault.rotate()
    endpoint = rp.Endpoint(runpod_emulator.endpoint_id)
    assert isinstance(endpoint, runpod.Endpoint)
    assert "jobs" in endpoint.health()
    assert runpod.__version__ == rp.__version__
    assert 2 == vault.calls


def test_setting_an_attribute_on_the_wrapped_module_sets_it_on_runpod(sdk, credentials):
    """The stand-in has no state of its own."""
    rp = wrap(runpod, credentials)
    rp.profile = "other"
    assert "other" == runpod.profile
    runpod.profile = "default"


@pytest.mark.parametrize("clause", [runpod.error.AuthenticationError, AuthenticationError])
def test_existing_except_clauses_catch_the_give_up(
    sdk, runpod_emulator, vault, credentials, clause
):
    """``except runpod.error.AuthenticationError`` still catches a rejection recovery gave up on."""
    get_user = wrap(runpod.get_user, credentials)
    runpod_emulator.revoke(runpod_emulator.api_key)
    vault.key = None
    with pytest.raises(clause):
        get_user()
    assert 1 == vault.calls


def test_an_explicit_api_key_argument_is_the_callers_choice(
    sdk, runpod_emulator, vault, credentials
):
    """A call passing its own api_key= is sent as the SDK sends it, without recovery."""
    get_user = wrap(runpod.get_user, credentials)
    stale = vault.key
    vault.rotate()
    with pytest.raises(runpod.error.AuthenticationError) as caught:
        get_user(api_key=stale)
    assert not isinstance(caught.value, AuthenticationError)
    assert 0 == vault.calls


def test_unwrapped_functions_are_unchanged(sdk, runpod_emulator, vault, credentials):
    """Wrapping one function leaves runpod.get_user itself as it was: no recovery there."""
    wrap(runpod.get_user, credentials)
    vault.rotate()
    with pytest.raises(runpod.error.AuthenticationError) as caught:
        runpod.get_user()
    assert not isinstance(caught.value, AuthenticationError)
    assert 0 == vault.calls


def test_a_key_the_application_sets_on_runpod_api_key_is_adopted(
    sdk, runpod_emulator, vault, credentials
):
    """Code that rotates the SDK way (runpod.api_key = new) keeps working, without a hook call."""
    get_user = wrap(runpod.get_user, credentials)
    assert "id" in get_user()
    new_key = vault.rotate()
    runpod.api_key = new_key
    assert "id" in get_user()
    assert new_key == credentials.api_key
    assert 0 == vault.calls


def test_a_graphql_permission_error_is_left_to_the_sdk(sdk, runpod_emulator, vault):
    """A read-only key's mutation gets GraphQL's "Unauthorized" (HTTP 200): the SDK's QueryError."""
    read_key = runpod_emulator.add_key(scope="read")
    credentials = Credentials(read_key, recovery=vault, hosts=[runpod_emulator.host])
    with pytest.raises(runpod.error.QueryError):
        wrap(runpod.create_pod, credentials)("worker", "runpod/pytorch", "NVIDIA GeForce RTX 4090")
    assert 0 == vault.calls
