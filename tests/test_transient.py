"""Transient failures: 429 and 5xx retried where it is safe, under one budget with recovery.

Against the emulator over real sockets. The backoff is shortened where a test would
otherwise wait; the rules are the defaults.
"""

from __future__ import annotations

import json
import socket
import threading

import httpx
import pytest
import tenacity
from structlog.testing import capture_logs

from resilient_runpod import (
    AuthenticationError,
    BodyNotReplayableError,
    Breaker,
    Credentials,
    ResilientTransport,
    RetryPolicy,
    TransientError,
    recovery,
)
from resilient_runpod._policy import Verdict, parse_retry_after
from resilient_runpod.testing import Chaos, Emulator

from .helpers import Counting
from .test_transport import client_for

FAST = RetryPolicy(backoff=tenacity.wait_fixed(0.01))


def credentials_for(
    emulator: Emulator, policy: RetryPolicy = FAST, **kwargs: object
) -> Credentials:
    return Credentials(
        emulator.api_key,
        Counting(lambda context: None),
        hosts=[emulator.host],
        retry=policy,
        **kwargs,  # type: ignore[arg-type]
    )


def test_429_with_retry_after_is_retried(runpod_emulator):
    """A rate limit with Retry-After: 0 is sent again, and succeeds."""
    runpod_emulator.inject(429, retry_after="0")

    with client_for(runpod_emulator, credentials_for(runpod_emulator)) as client:
        response = client.post("/run", json={"input": {}})

    assert (200, {429: 1, 200: 1}) == (
        response.status_code,
        dict(runpod_emulator.counters().by_status),
    )
    assert 1 == len(runpod_emulator.job_inputs())


def test_429_without_retry_after_backs_off_and_is_retried(runpod_emulator):
    """A 429 that names no wait is retried after the policy's backoff."""
    runpod_emulator.inject(429, count=2, retry_after="")

    with client_for(runpod_emulator, credentials_for(runpod_emulator)) as client:
        response = client.get("/health")

    assert (200, {429: 2, 200: 1}) == (
        response.status_code,
        dict(runpod_emulator.counters().by_status),
    )


def test_a_retry_after_longer_than_allowed_gives_up_at_once(runpod_emulator):
    """RunPod asks for 120 s; the policy allows 1 s: a TransientError now, not a long sleep."""
    runpod_emulator.inject(429, retry_after="120")
    policy = RetryPolicy(max_retry_after=1.0)

    with (
        client_for(runpod_emulator, credentials_for(runpod_emulator, policy)) as client,
        pytest.raises(TransientError) as info,
    ):
        client.get("/health")

    assert ("retry_after", 429, 1) == (
        info.value.reason,
        info.value.status_code,
        runpod_emulator.counters().total,
    )


def test_503_on_a_status_route_is_retried(runpod_emulator):
    """Status checks repeat without effect: a 503 there is retried."""
    with client_for(runpod_emulator, credentials_for(runpod_emulator)) as client:
        job = client.post("/run", json={"input": {}}).json()["id"]
        runpod_emulator.inject(503, path_prefix="/v2/")
        response = client.get(f"/status/{job}")

    assert (200, 1) == (response.status_code, runpod_emulator.counters().by_status[503])


def test_502_on_run_is_not_retried_by_default(runpod_emulator):
    """The job may exist: POST /run after a 502 raises, says why, and creates no second job."""
    runpod_emulator.inject(502, after=True)  # the job was created; the answer was lost

    with (
        client_for(runpod_emulator, credentials_for(runpod_emulator)) as client,
        pytest.raises(TransientError, match="may already have acted") as info,
    ):
        client.post("/run", json={"input": {"n": 1}})

    assert ("unsafe", 502) == (info.value.reason, info.value.status_code)
    assert [{"n": 1}] == runpod_emulator.job_inputs()


def test_502_on_run_is_retried_when_the_caller_opts_in(runpod_emulator):
    """With retry_unsafe=True the request is sent again, and the duplicate shows in the emulator."""
    runpod_emulator.inject(502, after=True)
    policy = RetryPolicy(retry_unsafe=True, backoff=tenacity.wait_fixed(0.01))

    with client_for(runpod_emulator, credentials_for(runpod_emulator, policy)) as client:
        response = client.post("/run", json={"input": {"n": 1}})

    assert (200, [{"n": 1}, {"n": 1}]) == (response.status_code, runpod_emulator.job_inputs())


@pytest.mark.parametrize("endpoint", ["healthz01", "purge-queue-ep", "status", "cancel"])
def test_a_job_on_an_endpoint_named_like_a_safe_route_is_not_sent_twice(
    runpod_emulator: Emulator, endpoint: str
) -> None:
    """An endpoint id that reads like an idempotent route does not make POST …/run repeatable.

    RunPod created the job and the 502 lost its answer: the request is not sent again.
    """
    runpod_emulator.inject(502, after=True)
    credentials = credentials_for(runpod_emulator)

    with (
        httpx.Client(
            transport=ResilientTransport(credentials),
            base_url=f"{runpod_emulator.serverless_url}/{endpoint}",
        ) as client,
        pytest.raises(TransientError) as info,
    ):
        client.post("/run", json={"input": {"n": 1}})

    assert ("unsafe", [{"n": 1}]) == (info.value.reason, runpod_emulator.job_inputs())


def test_a_refused_connection_before_sending_is_retried():
    """Nothing listened at first (nothing was sent): the request is retried once it does."""
    port = _free_port()
    emulator = Emulator(port=port)
    policy = RetryPolicy(attempts=20, max_sends=20, backoff=tenacity.wait_fixed(0.05))
    credentials = Credentials(
        emulator.api_key, lambda c: None, hosts=[f"127.0.0.1:{port}"], retry=policy
    )
    refused = threading.Event()

    def start_after_the_first_refusal() -> None:
        assert refused.wait(10)
        emulator.start()

    starter = threading.Thread(target=start_after_the_first_refusal)
    starter.start()
    try:
        with httpx.Client(
            transport=ResilientTransport(credentials, _Refusals(refused)),
            base_url=f"http://127.0.0.1:{port}",
        ) as client:
            response = client.get("/v2/e/health")
        starter.join()
        assert (200, 1) == (response.status_code, emulator.counters().total)
    finally:
        starter.join()
        emulator.stop()


def test_a_lost_connection_after_sending_is_retried_only_where_safe(runpod_emulator):
    """A reset after the job was created: GET is retried, POST /run is not."""
    credentials = credentials_for(runpod_emulator)
    with client_for(runpod_emulator, credentials) as client:
        runpod_emulator.inject_reset(path_prefix="/v2/", after=True)
        health = client.get("/health")
        runpod_emulator.inject_reset(path_prefix="/v2/", after=True)
        with pytest.raises(TransientError) as info:
            client.post("/run", json={"input": {"n": 2}})

    assert 200 == health.status_code
    assert ("unsafe", None, [{"n": 2}]) == (
        info.value.reason,
        info.value.status_code,
        runpod_emulator.job_inputs(),
    )
    assert isinstance(info.value.__cause__, httpx.TransportError)


def test_the_deadline_bounds_everything(runpod_emulator):
    """503 for ever, a 0.3 s deadline: a TransientError about the deadline, after a few sends."""
    runpod_emulator.chaos(Chaos(server_error=1.0))
    policy = RetryPolicy(
        attempts=100, max_sends=100, deadline=0.3, backoff=tenacity.wait_fixed(0.1)
    )

    with (
        client_for(runpod_emulator, credentials_for(runpod_emulator, policy)) as client,
        pytest.raises(TransientError) as info,
    ):
        client.get("/health")

    assert "deadline" == info.value.reason
    assert 2 <= runpod_emulator.counters().total <= 4


def test_retries_are_exhausted_with_their_history(runpod_emulator):
    """503 for ever: `attempts` sends, then a TransientError listing each status and wait."""
    runpod_emulator.chaos(Chaos(server_error=1.0, seed=1))
    policy = RetryPolicy(attempts=3, backoff=tenacity.wait_fixed(0.01))

    with (
        client_for(runpod_emulator, credentials_for(runpod_emulator, policy)) as client,
        pytest.raises(TransientError) as info,
    ):
        client.get("/health")

    statuses = [int(status) for status, _ in info.value.history]
    waits = [wait for _, wait in info.value.history]
    assert ("exhausted", 3, 3) == (
        info.value.reason,
        len(statuses),
        runpod_emulator.counters().total,
    )
    assert set(statuses) <= {502, 503, 504}
    assert [0.01, 0.01, None] == waits


def test_401_and_429_interleaved_share_one_loop(runpod_emulator, tmp_path):
    """A 429, then a 401 (a rotation), then a 429 again: one request, one recovery, success.

    The 401 is the request's first on the key, so it is probed: the probe meets the second
    429, its retry meets the revoked key's 401, and that second 401 reads the file. The
    429 in between does not make the request forget its first 401.
    """
    secret = tmp_path / "key"
    old = runpod_emulator.api_key
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(old, hook, hosts=[runpod_emulator.host], retry=FAST)
    new = runpod_emulator.add_key()
    secret.write_text(new)
    runpod_emulator.inject(429, retry_after="0")
    runpod_emulator.inject(401)
    runpod_emulator.inject(429, retry_after="0")
    runpod_emulator.revoke(old)

    with client_for(runpod_emulator, credentials) as client:
        response = client.get("/health")

    assert (200, 1, new) == (response.status_code, hook.calls, credentials.api_key)
    assert {429: 2, 401: 2, 200: 1} == dict(runpod_emulator.counters().by_status)


def test_the_ceiling_on_sends_holds_across_kinds(runpod_emulator):
    """Transient failures and 401s together never exceed max_sends."""
    runpod_emulator.chaos(Chaos(server_error=0.5, unauthorized=0.5, seed=3, path_prefix="/v2/"))
    policy = RetryPolicy(attempts=5, max_sends=6, backoff=tenacity.wait_fixed(0.01))

    with (
        client_for(runpod_emulator, credentials_for(runpod_emulator, policy)) as client,
        pytest.raises((TransientError, AuthenticationError)),
    ):
        client.get("/health")

    assert 6 >= sum(
        n for status, n in runpod_emulator.counters().by_status.items() if status != 200
    )


def test_a_stream_that_cannot_be_replayed_is_not_retried(runpod_emulator):
    """A streamed body meets a 503: a clear error, nothing sent twice."""
    runpod_emulator.inject(503)

    def body():
        yield b'{"input": {}}'

    with (
        client_for(runpod_emulator, credentials_for(runpod_emulator)) as client,
        pytest.raises(BodyNotReplayableError, match="cannot be sent again"),
    ):
        client.post("/cancel/job-1", content=body())

    assert 1 == runpod_emulator.counters().total


def test_transient_failures_never_open_the_breaker(runpod_emulator):
    """Many exhausted 503s: no hook call, and recovery stays closed."""
    runpod_emulator.chaos(Chaos(server_error=1.0))
    credentials = credentials_for(
        runpod_emulator, RetryPolicy(attempts=2, backoff=tenacity.wait_fixed(0))
    )

    with client_for(runpod_emulator, credentials) as client:
        for _ in range(5):
            with pytest.raises(TransientError):
                client.get("/health")

    assert (0, Breaker.CLOSED) == (credentials.recovery.calls, credentials.breaker)


@pytest.mark.parametrize(
    ("method", "path", "status", "sent", "expected"),
    [
        ("POST", "/v2/e/run", 429, True, Verdict.RETRY),
        ("POST", "/v2/e/run", 502, True, Verdict.UNSAFE),
        ("POST", "/v2/e/runsync", 504, True, Verdict.UNSAFE),
        ("POST", "/v2/e/run", None, False, Verdict.RETRY),
        ("POST", "/v2/e/run", None, True, Verdict.UNSAFE),
        ("GET", "/v2/e/status/j", 503, True, Verdict.RETRY),
        ("POST", "/v2/e/cancel/j", 502, True, Verdict.RETRY),
        ("POST", "/v2/e/purge-queue", 503, True, Verdict.RETRY),
        ("POST", "/v2/e/stream/j", 503, True, Verdict.RETRY),
        ("GET", "/v2/e/health", 500, True, Verdict.FINAL),
        ("GET", "/v2/e/health", 404, True, Verdict.FINAL),
        ("POST", "/proxy/v2/e/health", 503, True, Verdict.RETRY),
        ("POST", "/v2/healthz01/run", 502, True, Verdict.UNSAFE),
        ("POST", "/v2/purge-queue-ep/run", 502, True, Verdict.UNSAFE),
        ("POST", "/v2/status/run", 502, True, Verdict.UNSAFE),
        ("POST", "/v2/cancel/runsync", 503, True, Verdict.UNSAFE),
        ("POST", "/v2/e/run/status/j", 503, True, Verdict.UNSAFE),
        ("POST", "/v2/e/health/j", 503, True, Verdict.UNSAFE),
        ("POST", "/v2/e/status", 503, True, Verdict.UNSAFE),
        ("POST", "/v2/e/status/", 503, True, Verdict.UNSAFE),
        ("POST", "/v2//health", 503, True, Verdict.UNSAFE),
        ("POST", "/v1/e/health", 503, True, Verdict.UNSAFE),
        ("POST", "/graphql", 502, True, Verdict.UNSAFE),
    ],
)
def test_what_is_safe_to_repeat(method, path, status, sent, expected):
    """The policy's verdict for each kind of request and failure."""
    assert expected == RetryPolicy().verdict(method, path, status, sent=sent)


def _graphql(document: str) -> bytes:
    return json.dumps({"query": document}).encode()


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/graphql", _graphql("query { myself { id } }"), Verdict.RETRY),
        (
            "/graphql",
            _graphql("\n  # pods\n  query Pods { myself { pods { id } } }"),
            Verdict.RETRY,
        ),
        ("/graphql", _graphql("{ myself { id } }"), Verdict.RETRY),
        ("/api/graphql/", _graphql("query { gpuTypes { id } }"), Verdict.RETRY),
        ("/graphql", _graphql('mutation { podTerminate(input: {podId: "p"}) }'), Verdict.UNSAFE),
        ("/graphql", _graphql("query A { myself { id } } mutation B { x }"), Verdict.UNSAFE),
        ("/graphql", _graphql("subscription { pods { id } }"), Verdict.UNSAFE),
        ("/graphql", _graphql("queryX { a }"), Verdict.UNSAFE),
        ("/graphql", b'[{"query": "query { myself { id } }"}]', Verdict.UNSAFE),
        ("/graphql", b"not json", Verdict.UNSAFE),
        ("/graphql", b'{"query": 1}', Verdict.UNSAFE),
        ("/graphql", None, Verdict.UNSAFE),
        ("/v2/e/run", _graphql("query { myself { id } }"), Verdict.UNSAFE),
        ("/graphqlx", _graphql("query { myself { id } }"), Verdict.UNSAFE),
    ],
)
def test_a_graphql_read_is_safe_to_repeat_and_a_mutation_is_not(path, body, expected):
    """POST …/graphql with queries only is retried on a 502; a mutation, a subscription, a
    batch or a body not held whole is not: a doubt counts as a mutation."""
    assert expected == RetryPolicy().verdict("POST", path, 502, sent=True, body=body)


def _post_graphql(client: str, url: str, credentials: Credentials, document: str) -> int:
    """POST *document* to *url* through *client*'s adapter; the final status."""
    import asyncio

    import aiohttp
    import requests

    from resilient_runpod import RunPodAuth
    from resilient_runpod.adapters import ResilientHTTPAdapter, ResilientMiddleware

    body = {"query": document}
    if client == "transport":
        with httpx.Client(transport=ResilientTransport(credentials)) as http:
            return http.post(url, json=body).status_code
    if client == "auth":
        with httpx.Client(auth=RunPodAuth(credentials)) as http:
            return http.post(url, json=body).status_code
    if client == "requests":
        with requests.Session() as session:
            session.mount("http://", ResilientHTTPAdapter(credentials))
            return session.post(url, json=body).status_code

    async def through_aiohttp() -> int:
        middleware = ResilientMiddleware(credentials)
        async with (
            aiohttp.ClientSession(middlewares=(middleware,)) as session,
            session.post(url, json=body) as response,
        ):
            return response.status

    return asyncio.run(through_aiohttp())


@pytest.mark.parametrize("client", ["transport", "auth", "requests", "aiohttp"])
def test_each_adapter_resends_a_graphql_read_and_not_a_mutation(runpod_emulator, client):
    """Every adapter hands the body to the policy: a query after a 502 is sent again and
    answered; a mutation after a 502 is sent once and raises."""
    credentials = credentials_for(runpod_emulator)
    runpod_emulator.inject(502, path_prefix="/graphql")
    status = _post_graphql(client, runpod_emulator.graphql_url, credentials, "{ myself { id } }")
    assert (200, 2) == (status, runpod_emulator.counters().total)

    runpod_emulator.inject(502, path_prefix="/graphql")
    with pytest.raises(TransientError) as info:
        _post_graphql(client, runpod_emulator.graphql_url, credentials, "mutation { x }")
    assert ("unsafe", 3) == (info.value.reason, runpod_emulator.counters().total)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0", 0.0), ("", None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_retry_after_is_read_as_seconds_or_a_date(header, expected):
    """Seconds, or an HTTP date (past dates mean now); anything else is ignored."""
    assert expected == parse_retry_after(header)


class _Refusals(httpx.HTTPTransport):
    def __init__(self, refused: threading.Event) -> None:
        super().__init__()
        self._refused = refused

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return super().handle_request(request)
        except httpx.ConnectError:
            self._refused.set()
            raise


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_each_retry_is_an_event_and_the_give_up_names_the_request(runpod_emulator):
    """runpod.transient.retry per retry (status, attempt, wait), then gave_up with the history."""
    runpod_emulator.chaos(Chaos(server_error=1.0, seed=5))
    policy = RetryPolicy(attempts=2, backoff=tenacity.wait_fixed(0.01))

    with (
        capture_logs() as logs,
        client_for(runpod_emulator, credentials_for(runpod_emulator, policy)) as client,
        pytest.raises(TransientError) as info,
    ):
        client.get("/health")

    retry = next(e for e in logs if e["event"] == "runpod.transient.retry")
    gave_up = next(e for e in logs if e["event"] == "runpod.transient.gave_up")
    status = info.value.history[0][0]
    assert (
        "GET",
        f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health",
        int(status),
        status,
        1,
        0.01,
    ) == (
        retry["method"],
        retry["url"],
        retry["status"],
        retry["reason"],
        retry["attempt"],
        retry["wait"],
    )
    assert ("exhausted", f"{status} (waited 0.01 s), {info.value.history[1][0]}") == (
        gave_up["reason"],
        gave_up["history"],
    )
    assert f"GET {retry['url']} failed with" in str(info.value)
