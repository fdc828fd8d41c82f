"""Errors, and `also_as` (in `_redact`): one of ours, copied as the errors it stands for."""

from __future__ import annotations

import pickle
from concurrent.futures import ProcessPoolExecutor

import httpx
import pytest
import requests

from resilient_runpod import Credentials, ResilientTransport
from resilient_runpod._errors import (
    AuthenticationError,
    PermissionDeniedError,
    ResilientRunPodError,
    TransientError,
)
from resilient_runpod._redact import also_as
from resilient_runpod.adapters import ResilientHTTPAdapter
from resilient_runpod.testing import Emulator

from .helpers import BRIEF, closed_port, make_key, places_of


def transient() -> TransientError:
    """A give-up after two lost connections, with its cause."""
    error = TransientError(
        "GET https://api.runpod.ai/v2/e/health failed with ConnectionError",
        reason="exhausted",
        status_code=None,
        history=[("ConnectionError", 0.1), ("ConnectionError", None)],
    )
    error.__cause__ = requests.ConnectionError("refused")
    return error


def test_the_copy_is_both_classes_and_keeps_everything():
    """Message, attributes, cause and class name survive; the extra attributes are set."""
    error = transient()
    copy = also_as(error, requests.ConnectionError, request=None, response=None)
    assert isinstance(copy, TransientError)
    assert isinstance(copy, requests.ConnectionError)
    assert isinstance(copy, ResilientRunPodError)
    assert (str(error), error.args) == (str(copy), copy.args)
    assert (error.reason, error.status_code, error.history) == (
        copy.reason,
        copy.status_code,
        copy.history,
    )
    assert error.__cause__ is copy.__cause__
    assert (None, None) == (copy.request, copy.response)
    assert "TransientError" == type(copy).__name__


def test_one_class_per_pair_and_nothing_made_when_nothing_is_missing():
    """The same bases give the same class; an error that already is them comes back as is."""
    first = also_as(transient(), requests.ConnectionError)
    assert type(first) is type(also_as(transient(), requests.ConnectionError))
    assert first is also_as(first, requests.ConnectionError, requests.RequestException)


def _give_up_in_a_worker(host: str) -> None:
    """In a worker process: a request to a closed port, retried until the policy gives up."""
    credentials = Credentials(make_key(), hosts=[host], retry=BRIEF)
    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        client.get(f"http://{host}/v2/e/health")


def test_an_error_from_a_worker_process_arrives_whole():
    """A TransientError raised in a process pool crosses back as the same two classes,
    with its reason and history (a fleet's workers ship errors this way)."""
    host = closed_port()

    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_give_up_in_a_worker, host)
        with pytest.raises(httpx.ConnectError) as info:
            future.result()

    assert isinstance(info.value, TransientError)
    assert ("exhausted", 2) == (info.value.reason, len(info.value.history))


@pytest.mark.parametrize(
    "error",
    [
        transient(),
        AuthenticationError("no", fingerprint="rpa_…AAAA", attempts=2, hooks=("env",)),
        PermissionDeniedError("no", fingerprint="rpa_…AAAA", detail="access denied"),
    ],
    ids=["transient", "authentication", "permission"],
)
def test_every_error_pickles_with_its_attributes(error):
    """Errors with keyword-only arguments come back from pickle with all they carry."""
    back = pickle.loads(pickle.dumps(error))  # noqa: S301 -- our own bytes

    assert (type(error), str(error), vars(error)) == (type(back), str(back), vars(back))


def _graphql_give_up(client: str, lost: bool, emulator: Emulator) -> TransientError:
    """The TransientError a GraphQL call with ``?api_key=`` ends in: a 502, or refusals."""
    host = closed_port() if lost else emulator.host
    credentials = Credentials(emulator.api_key, recovery=lambda _: None, hosts=[host], retry=BRIEF)
    url = f"http://{host}/graphql?api_key={emulator.api_key}"
    query = {"query": "query { myself { id } }"}
    if not lost:
        # A query is resent once (BRIEF) after a 502: two of them end it.
        emulator.inject(502, count=2, path_prefix="/graphql", after=True)
    try:
        if client == "httpx":
            with httpx.Client(transport=ResilientTransport(credentials)) as http:
                http.post(url, json=query)
        else:
            with requests.Session() as session:
                session.mount("http://", ResilientHTTPAdapter(credentials))
                session.post(url, json=query)
    except TransientError as exc:
        return exc
    raise AssertionError("no TransientError")  # pragma: no cover


@pytest.mark.parametrize("lost", [False, True], ids=["502", "lost"])
@pytest.mark.parametrize("client", ["httpx", "requests"])
def test_an_errors_request_is_a_copy_without_the_key(
    client: str, lost: bool, runpod_emulator: Emulator
) -> None:
    """A GraphQL call carries the key in its query and its Authorization header. The
    TransientError it ends in hands over the request as a redacted copy: method and path
    kept, no key in its URL, headers or body, nor anywhere else in the error's chain.
    """
    error = _graphql_give_up(client, lost, runpod_emulator)

    assert ("POST", "/graphql") == (error.request.method, httpx.URL(str(error.request.url)).path)
    assert [] == places_of(runpod_emulator.api_key, error)
