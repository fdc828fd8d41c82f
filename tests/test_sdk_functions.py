"""Every API function of the installed SDK line recovers, wherever the SDK sends from.

The functions are listed from the installed ``runpod.api.ctl_commands`` (17 on 1.12,
all GraphQL; 17 on 2.x, 15 of them REST through ``requests.request``), not by hand, so
a function a new SDK adds is tested without a change here.
"""

from __future__ import annotations

import inspect
import sys

import pytest
import requests
import runpod
import runpod.api.ctl_commands
import runpod.error

from resilient_runpod import (
    AuthenticationError,
    Credentials,
    PermissionDeniedError,
    TransientError,
    wrap,
)
from resilient_runpod._keys import fingerprint
from resilient_runpod.sdk import _transport

from .helpers import BRIEF

GPU = "NVIDIA GeForce RTX 4090"

API_FUNCTIONS = sorted(
    name
    for name, function in inspect.getmembers(runpod.api.ctl_commands, inspect.isfunction)
    if function.__module__ == runpod.api.ctl_commands.__name__ and not name.startswith("_")
)

# A value for each parameter an API function may require, by name.
ARGUMENTS = {
    "name": "worker",
    "image_name": "runpod/pytorch",
    "gpu_type_id": GPU,
    "gpu_id": GPU,
    "gpu_count": 1,
    "template_id": "tpl123",
    "endpoint_id": "ep123",
    "registry_auth_id": "reg123",
    "username": "me",
    "password": "secret-password",
    "pubkey": "ssh-ed25519 AAAAC3Nza me@host",
}
# Optional parameters passed anyway: create_pod needs an image and a GPU on both lines.
ALWAYS = ("image_name", "gpu_type_id")


def arguments_for(function, pod_id: str) -> dict[str, object]:
    """The arguments to call *function* with, from its signature."""
    values = {**ARGUMENTS, "pod_id": pod_id}
    return {
        name: values[name]
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.default is inspect.Parameter.empty or name in ALWAYS
    }


def test_the_functions_are_read_from_the_installed_sdk():
    """The list is the SDK's: each is exported as runpod.NAME; both lines have at least 17."""
    assert len(API_FUNCTIONS) >= 17
    assert "get_pods" in API_FUNCTIONS
    assert [] == [name for name in API_FUNCTIONS if not hasattr(runpod, name)]


@pytest.mark.parametrize("name", API_FUNCTIONS)
def test_every_api_function_recovers_a_401_over_real_sockets(
    sdk, runpod_emulator, vault, credentials, name
):
    """Each API function, called through wrap(runpod) after a rotation: two 401s (the send
    and its probe with the same key), one recovery.
    """
    pod = runpod.create_pod("worker", "runpod/pytorch", GPU)  # the SDK alone, a valid key
    rp = wrap(runpod, credentials)
    function = getattr(rp, name)
    new_key = vault.rotate()
    runpod_emulator.reset_counters()
    function(**arguments_for(function, pod["id"]))
    counters = runpod_emulator.counters()
    by_new_key = counters.by_key_status[fingerprint(new_key)]
    assert 1 == vault.calls
    assert 2 == counters.by_status[401]
    assert [] == [status for status in by_new_key if status >= 400]
    assert sum(by_new_key.values()) >= 1
    assert new_key == runpod.api_key


def test_a_function_the_sdk_adds_later_is_covered_without_a_change(
    sdk, runpod_emulator, vault, credentials
):
    """Interception is where the SDK sends: a new runpod.api function recovers too."""
    from runpod.api.graphql import run_graphql_query

    def get_myself_id():
        return run_graphql_query("query { myself { id } }")["data"]["myself"]["id"]

    get_myself_id.__module__ = "runpod.api.future"
    vault.rotate()
    assert isinstance(wrap(get_myself_id, credentials)(), str)
    assert 1 == vault.calls


def test_installing_is_idempotent_and_reversible(sdk, credentials):
    """install() twice leaves one stand-in; uninstall() gives the SDK back real requests."""
    import runpod.api.graphql

    wrap(runpod.get_user, credentials)
    _transport.install()
    stand_in = runpod.api.graphql.requests
    _transport._seen = 0
    _transport.install()
    assert stand_in is runpod.api.graphql.requests
    assert requests is not stand_in
    _transport.uninstall()
    assert requests is runpod.api.graphql.requests
    _transport.install()
    assert stand_in is runpod.api.graphql.requests


def test_a_patched_requests_function_is_left_to_its_patcher(
    sdk, runpod_emulator, credentials, monkeypatch
):
    """A test's mock of requests.post wins inside a wrapped call too: we never bypass it."""
    calls: list[str] = []

    class Answer:
        status_code = 200

        def json(self):
            return {"data": {"myself": {"id": "mocked"}}}

    def fake_post(url, *args, **kwargs):
        calls.append(url)
        return Answer()

    get_user = wrap(runpod.get_user, credentials)
    monkeypatch.setattr(requests, "post", fake_post)
    assert {"id": "mocked"} == get_user()
    assert [f"{runpod_emulator.api_url}/graphql"] == calls


def test_a_graphql_permission_error_is_permission_denied_and_still_a_query_error(
    sdk, runpod_emulator, vault
):
    """A read-only key's mutation gets GraphQL "Unauthorized" on HTTP 200: never recovered.

    Raised as PermissionDeniedError, which is also the SDK's QueryError, so existing
    ``except runpod.error.QueryError`` clauses still catch it.
    """
    read_key = runpod_emulator.add_key(scope="read")
    credentials = Credentials(read_key, recovery=vault, hosts=[runpod_emulator.host])
    update = wrap(runpod.update_container_registry_auth, credentials)  # GraphQL on both lines
    with pytest.raises(runpod.error.QueryError) as caught:
        update("reg123", "me", "secret-password")
    assert isinstance(caught.value, PermissionDeniedError)
    assert 403 == caught.value.status_code
    assert 0 == vault.calls


def test_an_explicit_api_key_argument_is_sent_and_recovered_for_that_key_only(
    sdk, runpod_emulator, vault, credentials
):
    """get_user(api_key=K): K is sent; once rejected, its replacement serves K's calls only."""
    own = runpod_emulator.add_key()
    replacement = runpod_emulator.add_key()
    hook_keys = {fingerprint(own): replacement}

    def hook(context):
        return hook_keys.get(context.fingerprint, vault.key)

    shared = Credentials(runpod_emulator.api_key, recovery=hook, hosts=[runpod_emulator.host])
    get_user = wrap(runpod.get_user, shared)
    assert "id" in get_user(api_key=own)
    assert 1 == runpod_emulator.counters().by_key[fingerprint(own)]
    runpod_emulator.revoke(own)
    assert "id" in get_user(api_key=own)
    assert 1 == runpod_emulator.counters().by_key[fingerprint(replacement)]
    assert runpod_emulator.api_key == shared.api_key
    assert runpod_emulator.api_key == runpod.api_key
    assert "id" in get_user()
    assert 0 == shared.generation


@pytest.mark.runpod_line(2)
def test_async_api_functions_recover_on_the_2x_line(sdk, runpod_emulator, vault, credentials):
    """The SDK's own aiohttp sessions get the middleware (2.x REST async); 1.12 has none."""
    import asyncio

    rest = sys.modules["runpod.api.rest"]
    request = wrap(rest.run_rest_request_async, credentials)
    vault.rotate()
    answer = asyncio.run(request("GET", "/v2/pods"))
    assert {"pods": []} == answer
    assert 1 == vault.calls


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


def test_a_read_only_key_creating_a_pod_is_permission_denied_on_either_line(
    sdk, runpod_emulator, vault
):
    """create_pod with a read-only key: GraphQL "Unauthorized" (1.12) or REST 403 (2.x).

    Either way: PermissionDeniedError, also the SDK's QueryError, status 403, no recovery.
    """
    read_key = runpod_emulator.add_key(scope="read")
    credentials = Credentials(read_key, recovery=vault, hosts=[runpod_emulator.host])
    with pytest.raises(runpod.error.QueryError) as caught:
        wrap(runpod.create_pod, credentials)("worker", "runpod/pytorch", GPU)
    assert isinstance(caught.value, PermissionDeniedError)
    assert 403 == caught.value.status_code
    assert read_key not in str(caught.value)
    assert 0 == vault.calls


@pytest.mark.parametrize("clause", [runpod.error.QueryError, TransientError])
def test_a_503_that_outlasts_the_retries_is_the_query_error_the_sdk_raised(
    sdk, runpod_emulator, clause
):
    """get_pods answered 503 twice (a GraphQL query on 1.12, a REST GET on 2.x: either is
    resent once): the TransientError is also the ``runpod.error.QueryError`` the SDK raises
    for it, and requests' ``HTTPError``."""
    runpod_emulator.inject(503, count=2)
    with pytest.raises(runpod.error.QueryError):
        runpod.get_pods()  # unwrapped: the clause SDK users already have
    runpod_emulator.reset_counters()
    runpod_emulator.inject(503, count=2)
    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host], retry=BRIEF)
    with pytest.raises(clause) as caught:
        wrap(runpod.get_pods, credentials)()
    error = caught.value
    assert isinstance(error, TransientError)
    assert isinstance(error, runpod.error.QueryError)
    assert isinstance(error, requests.HTTPError)
    assert 503 == error.status_code
    assert 2 == len(error.history) == runpod_emulator.counters().total


def test_the_graphql_function_recovers_through_the_wrapped_module(
    sdk, runpod_emulator, vault, credentials
):
    """rp.api.graphql.run_graphql_query: the wrapped module's api package is wrapped too."""
    rp = wrap(runpod, credentials)
    new_key = vault.rotate()
    answer = rp.api.graphql.run_graphql_query("query { myself { id } }")
    assert isinstance(answer["data"]["myself"]["id"], str)
    assert 1 == vault.calls
    assert new_key == runpod.api_key
    assert runpod.api.graphql.requests is rp.api.graphql.requests  # the rest is the module's


@pytest.mark.runpod_line(2)
def test_the_async_graphql_function_recovers_a_401_on_the_2x_line(
    sdk, runpod_emulator, vault, credentials
):
    """2.x's run_graphql_query_async imports aiohttp in its body; through wrap(runpod), it
    recovers as the sync run_graphql_query does: two 401s (the send and its probe), one
    recovery. 1.12 has no such function."""
    import asyncio

    query = wrap(runpod, credentials).api.graphql.run_graphql_query_async
    new_key = vault.rotate()
    runpod_emulator.reset_counters()
    answer = asyncio.run(query("query { myself { id } }"))
    assert isinstance(answer["data"]["myself"]["id"], str)
    assert 1 == vault.calls
    assert 2 == runpod_emulator.counters().by_status[401]
    assert new_key == runpod.api_key


@pytest.mark.runpod_line(2)
def test_an_anonymous_async_graphql_call_is_sent_without_a_key_on_the_2x_line(
    sdk, runpod_emulator, vault, credentials
):
    """``anonymous=True`` asks the SDK to send no key (its login flow): wrapped, it still
    sends none, and nothing is recovered."""
    import asyncio

    graphql = sys.modules["runpod.api.graphql"]
    query = wrap(graphql.run_graphql_query_async, credentials)
    vault.rotate()
    runpod_emulator.reset_counters()
    asyncio.run(query("query { myself { id } }", anonymous=True))
    assert {"<no key>": 1} == dict(runpod_emulator.counters().by_key)
    assert 0 == vault.calls


@pytest.mark.runpod_line(2)
def test_a_session_the_caller_passes_recovers_and_carries_every_request_on_the_2x_line(
    sdk, runpod_emulator, vault, credentials
):
    """run_rest_request_async(session=S): recovery runs, and every send (the 401, its
    probe, the resend) goes through S, its own middleware included; S stays open and
    gets the SDK's settings. 1.12 has no async API function."""
    import asyncio

    import aiohttp

    rest = sys.modules["runpod.api.rest"]
    request = wrap(rest.run_rest_request_async, credentials)
    seen: list[str] = []

    async def counting(req, handler):
        seen.append(req.headers.get("Authorization", ""))
        return await handler(req)

    async def call():
        async with aiohttp.ClientSession(middlewares=(counting,)) as session:
            answer = await request("GET", "/v2/pods", session=session)
            return answer, session.closed, session._retry_connection

    new_key = vault.rotate()
    runpod_emulator.reset_counters()
    answer, closed, retry_connection = asyncio.run(call())
    assert ({"pods": []}, False, False) == (answer, closed, retry_connection)
    assert 1 == vault.calls
    assert runpod_emulator.counters().total == len(seen)
    assert f"Bearer {new_key}" == seen[-1]


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_graphql_read_is_retried_after_a_gateway_error(sdk, runpod_emulator, status):
    """A GraphQL query changes nothing: after a 502, 503 or 504 it is sent again."""
    from runpod.api.graphql import run_graphql_query

    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host], retry=BRIEF)
    runpod_emulator.inject(status, path_prefix="/graphql")
    answer = wrap(run_graphql_query, credentials)("query { myself { id } }")
    assert isinstance(answer["data"]["myself"]["id"], str)
    assert {status: 1, 200: 1} == dict(runpod_emulator.counters().by_status)


@pytest.mark.runpod_line(2)
def test_an_async_graphql_read_is_retried_after_a_gateway_error_on_the_2x_line(
    sdk, runpod_emulator
):
    """The same through run_graphql_query_async's aiohttp session."""
    import asyncio

    graphql = sys.modules["runpod.api.graphql"]
    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host], retry=BRIEF)
    runpod_emulator.inject(502, path_prefix="/graphql")
    query = wrap(graphql.run_graphql_query_async, credentials)
    answer = asyncio.run(query("query { myself { id } }"))
    assert isinstance(answer["data"]["myself"]["id"], str)
    assert {502: 1, 200: 1} == dict(runpod_emulator.counters().by_status)


def test_a_graphql_mutation_is_not_retried_after_a_gateway_error(sdk, runpod_emulator):
    """A mutation may have been carried out before the 502: it is sent once, and the
    failure is the SDK's QueryError (a TransientError that says it was unsafe to resend)."""
    from runpod.api.graphql import run_graphql_query

    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host], retry=BRIEF)
    runpod_emulator.inject(502, path_prefix="/graphql")
    with pytest.raises(runpod.error.QueryError) as caught:
        wrap(run_graphql_query, credentials)('mutation { podTerminate(input: {podId: "p"}) }')
    assert isinstance(caught.value, TransientError)
    assert ("unsafe", 502) == (caught.value.reason, caught.value.status_code)
    assert 1 == runpod_emulator.counters().total


@pytest.mark.runpod_line(1)
def test_the_1x_line_has_no_async_api_functions_and_wrap_makes_none_up(runpod_emulator):
    """1.12's API functions are sync only (GraphQL over requests): the 2.x-only tests above
    are deselected on it, and the wrapped module adds no async function of its own."""
    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host])
    wrapped = wrap(runpod, credentials)
    assert not hasattr(runpod.api, "rest")
    assert not hasattr(wrapped.api.graphql, "run_graphql_query_async")
    assert not hasattr(runpod.api.graphql, "run_graphql_query_async")
