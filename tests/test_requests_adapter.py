"""`ResilientHTTPAdapter` on a plain ``requests.Session``, against the emulator."""

from __future__ import annotations

import pytest
import requests
import tenacity
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from resilient_runpod import (
    AuthenticationError,
    Credentials,
    PermissionDeniedError,
    RetryPolicy,
    TransientError,
    fingerprint,
)
from resilient_runpod.adapters import ResilientHTTPAdapter

from .helpers import BRIEF, closed_port, make_key


def session_for(credentials: Credentials) -> requests.Session:
    session = requests.Session()
    adapter = ResilientHTTPAdapter(credentials)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def test_a_rotated_key_is_recovered_and_the_request_sent_again(runpod_emulator, vault, credentials):
    """GET and a JSON POST both succeed after a rotation; the hook runs once."""
    base = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}"
    with session_for(credentials) as session:
        vault.rotate()
        assert 200 == session.get(f"{base}/health").status_code
        vault.rotate()
        response = session.post(f"{base}/runsync", json={"input": {"n": 1}})
        assert {"echo": {"n": 1}} == response.json()["output"]
    assert 2 == vault.calls


def test_the_key_goes_only_to_allowed_hosts(runpod_emulator, vault):
    """A host not in the policy gets the request as it was: no key, no recovery."""
    credentials = Credentials(runpod_emulator.api_key, recovery=vault)
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    with session_for(credentials) as session:
        assert 401 == session.get(url).status_code
    assert {"<no key>": 1} == dict(runpod_emulator.counters().by_key)
    assert 0 == vault.calls


def test_a_graphql_api_key_query_parameter_moves_to_the_header(runpod_emulator, vault, credentials):
    """Scripts that send ?api_key= send the current key in the header, and no key in the
    URL: the rejected key's resends and the recovered key's are judged by the header."""
    old = vault.key
    new = vault.rotate()
    with session_for(credentials) as session:
        response = session.post(
            runpod_emulator.graphql_url,
            params={"api_key": old},
            json={"query": "query { myself { id } }"},
        )
    assert 200 == response.status_code
    assert 1 == vault.calls
    assert "api_key" not in response.request.url
    by_key = runpod_emulator.counters().by_key_status
    assert {fingerprint(old): {401: 2}, fingerprint(new): {200: 1}} == {
        fp: dict(codes) for fp, codes in by_key.items()
    }


def test_a_403_raises_permission_denied_without_recovery(runpod_emulator, vault):
    """403 means the key is valid: PermissionDeniedError, the hook never runs."""
    read_key = runpod_emulator.add_key(scope="read")
    credentials = Credentials(read_key, recovery=vault, hosts=[runpod_emulator.host])
    with session_for(credentials) as session, pytest.raises(PermissionDeniedError):
        session.post(f"{runpod_emulator.serverless_url}/e/run", json={"input": {}})
    assert 0 == vault.calls


def test_recovery_that_finds_nothing_gives_up_with_authentication_error(
    runpod_emulator, vault, credentials
):
    """A dead key and an empty vault: AuthenticationError after the probe and one read."""
    runpod_emulator.revoke(runpod_emulator.api_key)
    vault.key = None
    with session_for(credentials) as session, pytest.raises(AuthenticationError):
        session.get(f"{runpod_emulator.serverless_url}/e/health")
    assert 1 == vault.calls
    assert 2 == runpod_emulator.counters().total  # the send and its probe


def test_the_adapter_closes_the_adapter_it_wraps():
    """Closing the session closes the inner adapter's pools."""
    closed = []

    class Inner(requests.adapters.HTTPAdapter):
        def close(self) -> None:
            closed.append(True)
            super().close()

    adapter = ResilientHTTPAdapter(Credentials("rpa_" + "A" * 46, recovery=lambda _: None), Inner())
    adapter.close()
    assert [True] == closed


def test_retries_set_through_get_adapter_reach_the_adapter_that_sends(runpod_emulator, credentials):
    """``session.get_adapter(url).max_retries = Retry(...)`` after mounting takes effect:
    two injected 503s are retried by urllib3 and the third answer is the 200.
    """
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    with session_for(credentials) as session:
        session.get_adapter(url).max_retries = Retry(
            total=3, status_forcelist=[503], backoff_factor=0, allowed_methods=None
        )
        runpod_emulator.inject(503, count=2)
        response = session.get(url)

    assert 200 == response.status_code
    assert {503: 2, 200: 1} == dict(runpod_emulator.counters().by_status)


def test_attributes_of_the_wrapped_adapter_read_through_the_wrapper(runpod_emulator):
    """What the wrapped adapter holds is what the wrapper shows, and a write lands there."""
    inner = HTTPAdapter(max_retries=2)
    adapter = ResilientHTTPAdapter(Credentials(runpod_emulator.api_key), inner)

    adapter.max_retries = Retry(total=5)

    assert 5 == inner.max_retries.total
    assert inner.max_retries is adapter.max_retries
    assert inner is adapter.adapter


def test_a_refused_connection_is_retried_even_for_a_job():
    """A connection refused sent nothing, so even ``POST /run`` is sent again, up to
    ``attempts``, then reported (reason ``exhausted``), as with httpx.
    """
    host = closed_port()
    credentials = Credentials(
        make_key(),
        lambda context: None,
        hosts=[host],
        retry=RetryPolicy(attempts=3, backoff=tenacity.wait_none()),
    )
    session = session_for(credentials)

    with pytest.raises(TransientError) as info:
        session.post(f"http://{host}/v2/ep/run", json={"input": {}})

    assert ("exhausted", None) == (info.value.reason, info.value.status_code)
    assert ["ConnectionError"] * 3 == [what for what, _ in info.value.history]


@pytest.mark.parametrize(
    "clause", [requests.ConnectionError, requests.RequestException, TransientError]
)
def test_lost_connections_that_outlast_the_retries_are_requests_connection_errors(clause):
    """A refused connection, retried until the policy gives up, raises a TransientError
    that ``except requests.ConnectionError`` catches too, its reason and history intact."""
    host = closed_port()
    credentials = Credentials(make_key(), hosts=[host], retry=BRIEF)
    with session_for(credentials) as session, pytest.raises(clause) as info:
        session.get(f"http://{host}/v2/e/health")
    error = info.value
    assert isinstance(error, TransientError)
    assert isinstance(error, requests.ConnectionError)
    assert isinstance(error.__cause__, requests.ConnectionError)
    assert ("exhausted", None) == (error.reason, error.status_code)
    assert ["ConnectionError", "ConnectionError"] == [what for what, _ in error.history]
    assert str(error).startswith(f"GET http://{host}/v2/e/health failed with ConnectionError")
    assert error.request is not None
    assert error.response is None


@pytest.mark.parametrize("clause", [requests.HTTPError, requests.RequestException, TransientError])
def test_a_503_on_run_not_sent_again_is_a_requests_http_error(runpod_emulator, clause):
    """``POST …/run`` answered 503 is not resent (a job may exist): the TransientError
    is also the ``requests.HTTPError`` that ``raise_for_status()`` would raise."""
    credentials = Credentials(runpod_emulator.api_key, hosts=[runpod_emulator.host], retry=BRIEF)
    runpod_emulator.inject(503)
    with session_for(credentials) as session, pytest.raises(clause) as info:
        session.post(f"{runpod_emulator.serverless_url}/e/run", json={"input": {}})
    error = info.value
    assert isinstance(error, TransientError)
    assert isinstance(error, requests.HTTPError)
    assert ("unsafe", 503) == (error.reason, error.status_code)
    assert 1 == runpod_emulator.counters().total
