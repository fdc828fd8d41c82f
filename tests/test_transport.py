"""The httpx middleware end to end: real clients, real sockets, the RunPod emulator."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
import tenacity
from structlog.testing import capture_logs

from resilient_runpod import (
    AsyncResilientTransport,
    AuthenticationError,
    AuthFailure,
    BodyNotReplayableError,
    Breaker,
    CooldownError,
    Credentials,
    HookTimeoutError,
    PermissionDeniedError,
    RecoveredKey,
    ResilientTransport,
    RetryPolicy,
    RunPodAuth,
    StaleSourceError,
    TransientError,
    _answers,
    _engine,
    fingerprint,
    recovery,
)
from resilient_runpod.adapters import _httpx as _httpx_adapter
from resilient_runpod.testing import Emulator

from .helpers import Counting, make_key


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """This module's async tests run on both of httpx's event loops."""
    return str(request.param)


def rotate_via_file(emulator: Emulator, secret: Path, old: str) -> str:
    """What an operator's rotation looks like: the new key lands in the file, then the old dies."""
    new = emulator.add_key()
    secret.write_text(new + "\n")
    emulator.revoke(old)
    return new


@pytest.fixture
def secret(tmp_path: Path, runpod_emulator: Emulator) -> Path:
    path = tmp_path / "runpod-key"
    path.write_text(runpod_emulator.api_key + "\n")
    return path


def client_for(emulator: Emulator, credentials: Credentials, **kwargs: object) -> httpx.Client:
    return httpx.Client(
        transport=ResilientTransport(credentials),
        base_url=f"{emulator.serverless_url}/{emulator.endpoint_id}",
        **kwargs,  # type: ignore[arg-type]
    )


def async_client_for(
    emulator: Emulator, credentials: Credentials, **kwargs: object
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=AsyncResilientTransport(credentials),
        base_url=f"{emulator.serverless_url}/{emulator.endpoint_id}",
        **kwargs,  # type: ignore[arg-type]
    )


def test_rotation_mid_run(runpod_emulator, secret):
    """Jobs keep completing across a rotation; the hook runs once; no job is lost.

    The rotation costs the one request that meets it two 401s: its send with the old
    key, and the probe (the same key once more), after which the hook reads the file.
    """
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    outputs = []
    with client_for(runpod_emulator, credentials) as client:
        for n in range(10):
            if n == 5:
                new = rotate_via_file(runpod_emulator, secret, runpod_emulator.api_key)
            job = client.post("/run", json={"input": {"n": n}}).json()
            outputs.append(client.get(f"/status/{job['id']}").json()["output"]["echo"]["n"])

    assert (list(range(10)), 1, new) == (outputs, hook.calls, credentials.api_key)
    assert 2 == runpod_emulator.counters().by_status[401]


@pytest.mark.anyio
async def test_rotation_mid_run_async(runpod_emulator, secret):
    """The async client recovers the same way, without blocking its event loop."""
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    statuses = []
    async with async_client_for(runpod_emulator, credentials) as client:
        for n in range(6):
            if n == 3:
                rotate_via_file(runpod_emulator, secret, runpod_emulator.api_key)
            statuses.append(
                (await client.post("/runsync", json={"input": {"n": n}})).json()["status"]
            )

    assert (["COMPLETED"] * 6, 1) == (statuses, hook.calls)


def test_revoked_key_recovers_from_the_environment(runpod_emulator, monkeypatch):
    """A revoked key is replaced by the good one now in RUNPOD_API_KEY (the default hook)."""
    old = runpod_emulator.api_key
    credentials = Credentials(old, hosts=[runpod_emulator.host])
    new = runpod_emulator.add_key()
    runpod_emulator.revoke(old)
    monkeypatch.setenv("RUNPOD_API_KEY", new)

    with client_for(runpod_emulator, credentials) as client:
        response = client.get("/health")

    assert (200, new, "env:RUNPOD_API_KEY") == (
        response.status_code,
        credentials.api_key,
        credentials.source,
    )


@pytest.mark.parametrize("max_recoveries", [1, 2, 3])
def test_permanently_bad_key_gives_up_within_max_recoveries(runpod_emulator, max_recoveries):
    """Keys that RunPod keeps rejecting end in AuthenticationError after max_recoveries rounds.

    Every key's first 401 is probed (sent once more) before it counts, the recovered keys'
    too: one 401 alone may be spurious. So max_recoveries hook calls cost 2 sends for
    each of the max_recoveries + 1 keys: 2 * max_recoveries + 2.
    """
    hook = Counting(lambda context: make_key())  # keys the emulator has never heard of
    credentials = Credentials(
        make_key(),
        hook,
        hosts=[runpod_emulator.host],
        max_recoveries=max_recoveries,
        wait=tenacity.wait_none(),
    )

    with (
        client_for(runpod_emulator, credentials) as client,
        pytest.raises(AuthenticationError) as info,
    ):
        client.get("/health")

    sends = 2 * max_recoveries + 2
    assert (max_recoveries, sends) == (hook.calls, runpod_emulator.counters().total)
    # AuthenticationError.attempts is documented as how many times the request was sent.
    assert sends == info.value.attempts
    assert "doctor" in str(info.value)


def test_still_rejected_names_the_last_key_and_the_hook(runpod_emulator):
    """When every recovered key is rejected too, the error and the one
    ``runpod.auth.recovery_failed`` event (reason ``still_rejected``) name the last key
    sent by its fingerprint, the request and the hook.
    """
    last = make_key()
    keys = iter([make_key(), last])
    hook = Counting(lambda context: next(keys), name="two-dead-keys")
    credentials = Credentials(
        make_key(), hook, hosts=[runpod_emulator.host], max_recoveries=2, wait=tenacity.wait_none()
    )

    with (
        client_for(runpod_emulator, credentials) as client,
        capture_logs() as logs,
        pytest.raises(AuthenticationError) as info,
    ):
        client.get("/health")

    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    failed = [e for e in logs if e["event"] == "runpod.auth.recovery_failed"]
    assert (fingerprint(last), ("two-dead-keys",)) == (info.value.fingerprint, info.value.hooks)
    assert f"rejected API key {fingerprint(last)} on GET {url}" in str(info.value)
    assert "recovery by 'two-dead-keys' produced (2 recovered key(s) rejected)" in str(info.value)
    # attempt: the sends, as in every event: each of the three keys and its probe.
    assert [("still_rejected", "GET", url, 401, 6, fingerprint(last))] == [
        (e["reason"], e["method"], e["url"], e["status"], e["attempt"], e["fingerprint"])
        for e in failed
    ]


def test_user_stop_can_only_shorten_the_rounds(runpod_emulator):
    """A tenacity stop of the user's ends recovery sooner; max_recoveries still bounds it.

    Two sends allowed: the first 401 is probed with the same key, the probe's 401 reads the
    hook once, and the stop ends the request before the recovered key is sent. Without
    the stop, max_recoveries=3 would cost 3 hook calls and 7 sends.
    """
    hook = Counting(lambda context: make_key())
    credentials = Credentials(
        make_key(),
        hook,
        hosts=[runpod_emulator.host],
        max_recoveries=3,
        stop=tenacity.stop_after_attempt(2),
        wait=tenacity.wait_none(),
    )

    with client_for(runpod_emulator, credentials) as client, pytest.raises(AuthenticationError):
        client.get("/health")

    assert (1, 2) == (hook.calls, runpod_emulator.counters().total)


def test_dead_key_cools_down_instead_of_hammering(runpod_emulator):
    """After 3 failed recoveries in a row, requests fail fast without the hook."""
    hook = Counting(lambda context: None)
    old = runpod_emulator.api_key
    credentials = Credentials(old, hook, hosts=[runpod_emulator.host])
    runpod_emulator.revoke(old)

    with client_for(runpod_emulator, credentials) as client:
        for _ in range(3):
            with pytest.raises(AuthenticationError):
                client.get("/health")
        calls_before = hook.calls
        with pytest.raises(CooldownError):
            client.get("/health")

    assert (3, 3, Breaker.OPEN) == (calls_before, hook.calls, credentials.breaker)


def test_forbidden_is_not_recovered(runpod_emulator):
    """A read-only key writing gets PermissionDeniedError at once; the hook never runs.

    The error and the one ``runpod.auth.forbidden`` event name the key by its fingerprint
    and say which request was refused.
    """
    reader = runpod_emulator.add_key(scope="read")
    hook = Counting(lambda context: make_key())
    credentials = Credentials(reader, hook, hosts=[runpod_emulator.host])

    with client_for(runpod_emulator, credentials) as client, capture_logs() as logs:
        health = client.get("/health")
        with pytest.raises(PermissionDeniedError) as info:
            client.post("/run", json={"input": {}})

    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/run"
    shown = fingerprint(reader)
    assert (200, 0, 2) == (health.status_code, hook.calls, runpod_emulator.counters().total)
    assert shown == info.value.fingerprint
    assert "Forbidden" == info.value.detail  # the serverless body: {"error": "Forbidden"}
    assert str(info.value).startswith(
        f"POST {url} was refused with 403 Forbidden for API key {shown} ('Forbidden'). "
        "RunPod answers 403 to a valid key that lacks permission"
    )
    assert [
        {
            "event": "runpod.auth.forbidden",
            "log_level": "error",
            "method": "POST",
            "url": url,
            "status": 403,
            "fingerprint": shown,
            "detail": "Forbidden",
        }
    ] == [e for e in logs if e["event"] == "runpod.auth.forbidden"]


def test_rest_forbidden_is_not_recovered(runpod_emulator):
    """REST v2's problem+json 403 is reported as a permission problem too."""
    reader = runpod_emulator.add_key(scope="read")
    credentials = Credentials(reader, Counting(lambda context: None), hosts=[runpod_emulator.host])

    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        listed = client.get(f"{runpod_emulator.url}/v2/pods")
        with pytest.raises(PermissionDeniedError) as info:
            client.post(f"{runpod_emulator.url}/v2/pods", json={"name": "x", "imageName": "y"})

    assert (200, "access denied") == (listed.status_code, info.value.detail)


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        (
            "application/problem+json",
            b'{"title":"Forbidden","detail":"access denied"}',
            "access denied",
        ),
        ("application/json", b'{"errors":[{"message":"Unauthorized"}]}', "Unauthorized"),
        ("application/json", b'{"error":"Forbidden"}', "Forbidden"),
        ("application/json", b'{"errors":{"message":"odd"}}', '{"errors":{"message":"odd"}}'),
        ("application/json", b"[1, 2]", "[1, 2]"),
        (
            "text/html; charset=utf-8",
            b"<html><body>Attention Required!</body></html>",
            _answers.HTML_PAGE,
        ),
        ("text/plain", b"<!DOCTYPE html><html>blocked</html>", _answers.HTML_PAGE),
        ("text/plain", b"first line\nsecond line", "first line"),
        ("text/plain", b"", None),
        ("text/plain", b"  \n ", None),
        ("text/plain", b"x" * 500, "x" * 200),
    ],
)
def test_what_a_refusal_said_is_short_and_plain(content_type, body, expected):
    """RunPod's own fields are quoted, an HTML page is named as such, anything else is cut."""
    assert expected == _answers.said(content_type, body)


def test_a_key_in_a_refusal_is_not_quoted():
    """A body that echoes the key is quoted with its fingerprint instead."""
    key = make_key()

    quoted = _answers.said("application/json", f'{{"detail": "key {key} may not"}}'.encode())

    assert f"key {fingerprint(key)} may not" == quoted


@pytest.mark.parametrize("offset", [150, 171, 190, 199])
def test_a_key_across_the_cut_is_not_quoted_in_part(offset):
    """The quote is cut to 200 characters after keys are replaced, never through a key."""
    key = make_key()
    legacy = "L" * 40
    Credentials(legacy)  # held by this process: replaced wherever it appears

    quoted = [
        _answers.said("text/plain", ("x" * offset + secret + " tail").encode())
        for secret in (key, legacy)
    ]

    assert all(q is not None and len(q) <= 200 for q in quoted)
    assert [] == [q for q in quoted if q and (key[4:12] in q or "LLLLL" in q)]


@pytest.mark.parametrize("adapter", ["transport", "auth"])
def test_an_html_refusal_points_at_the_network(runpod_emulator, adapter):
    """A firewall's 403 page is not blamed on the key: the error says to check the network,
    through either httpx adapter."""
    credentials = Credentials(
        runpod_emulator.api_key, Counting(lambda context: None), hosts=[runpod_emulator.host]
    )
    runpod_emulator.inject(403, firewall=True)
    if adapter == "transport":
        client = client_for(runpod_emulator, credentials)
    else:
        base = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}"
        client = httpx.Client(auth=RunPodAuth(credentials), base_url=base)

    with client:
        with pytest.raises(PermissionDeniedError) as info:
            client.get("/health")
        after = client.get("/health")

    assert _answers.HTML_PAGE == info.value.detail
    assert "firewall or proxy in front of RunPod" in str(info.value)
    assert 200 == after.status_code


@pytest.mark.parametrize(
    ("hook", "cause", "fragment", "reason"),
    [
        (
            lambda context: (_ for _ in ()).throw(OSError("secret store down")),
            OSError,
            "secret store down",
            AuthFailure.HOOK_FAILED,
        ),
        (lambda context: None, None, "has never accepted it", AuthFailure.NEVER_ACCEPTED),
        (lambda context: "   ", None, "empty", AuthFailure.HOOK_FAILED),
    ],
    ids=["raises", "returns-none", "returns-whitespace"],
)
def test_failing_hooks_end_in_one_clear_error(runpod_emulator, hook, cause, fragment, reason):
    """On a key RunPod never accepted, a hook that raises, returns nothing or returns
    nothing usable ends the request in one clear error, after two sends (the first and
    its probe) and one hook call. Nothing new (None) means the key is wrong
    (``never_accepted``); a raise or an unusable answer is the hook's failure.
    """
    counting = Counting(hook)
    old = runpod_emulator.api_key
    credentials = Credentials(old, counting, hosts=[runpod_emulator.host])
    runpod_emulator.revoke(old)

    with (
        client_for(runpod_emulator, credentials) as client,
        pytest.raises(AuthenticationError, match=fragment) as info,
    ):
        client.get("/health")

    assert (1, 2) == (counting.calls, runpod_emulator.counters().total)
    assert reason == info.value.reason
    if cause is not None:
        assert isinstance(info.value.__cause__, cause)


def test_hook_returning_the_same_key_is_not_looped_on(runpod_emulator):
    """A source that still holds the revoked key: sent once more (the probe), read once,
    then reported. With recovery_window=0 there is no round of waiting for the store.
    """
    old = runpod_emulator.api_key
    counting = Counting(lambda context: old)
    credentials = Credentials(old, counting, hosts=[runpod_emulator.host], recovery_window=0)

    with client_for(runpod_emulator, credentials) as client:
        assert 200 == client.get("/health").status_code  # RunPod accepted the key once
        runpod_emulator.revoke(old)
        with pytest.raises(StaleSourceError, match="still held it") as info:
            client.get("/health")

    assert (1, 2) == (counting.calls, runpod_emulator.counters().by_status[401])
    assert AuthFailure.STALE_SOURCE == info.value.reason


def test_hook_returning_a_key_never_accepted_fails_at_once(runpod_emulator):
    """A source that holds a key RunPod never accepted: the probe, one read, then the
    error names the key as wrong, without waiting for the store.
    """
    old = runpod_emulator.api_key
    counting = Counting(lambda context: old)
    credentials = Credentials(old, counting, hosts=[runpod_emulator.host])
    runpod_emulator.revoke(old)

    with (
        client_for(runpod_emulator, credentials) as client,
        pytest.raises(AuthenticationError, match="has never accepted it") as info,
    ):
        client.get("/health")

    assert (1, 2) == (counting.calls, runpod_emulator.counters().total)
    assert AuthFailure.NEVER_ACCEPTED == info.value.reason


def test_hanging_hook_times_out(runpod_emulator):
    """A hook that never returns is abandoned after hook_timeout; the request fails clearly."""
    never = threading.Event()
    old = runpod_emulator.api_key
    credentials = Credentials(
        old, lambda context: never.wait(), hosts=[runpod_emulator.host], hook_timeout=0.3
    )
    runpod_emulator.revoke(old)

    try:
        with (
            client_for(runpod_emulator, credentials) as client,
            pytest.raises(AuthenticationError) as info,
        ):
            client.get("/health")
    finally:
        never.set()

    assert isinstance(info.value.__cause__, HookTimeoutError)


def test_streamed_body_recovers_then_says_it_cannot_resend(runpod_emulator, secret):
    """A generator body cannot be sent twice: the key is recovered, the error says to resend."""
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    rotate_via_file(runpod_emulator, secret, runpod_emulator.api_key)

    def body():
        yield b'{"input": {"streamed": true}}'

    with client_for(runpod_emulator, credentials) as client:
        with pytest.raises(BodyNotReplayableError, match="cannot be sent again"):
            client.post("/run", content=body())
        again = client.post("/run", json={"input": {"streamed": True}})

    assert (200, 1) == (again.status_code, hook.calls)


def test_buffered_bodies_are_replayed(runpod_emulator, secret):
    """json=, content=bytes and data= bodies are sent again after recovery."""
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    rotate_via_file(runpod_emulator, secret, runpod_emulator.api_key)

    with client_for(runpod_emulator, credentials) as client:
        job = client.post("/runsync", content=b'{"input": {"x": 1}}').json()

    assert ({"x": 1}, 1) == (job["output"]["echo"], hook.calls)


def test_cross_origin_401_is_untouched_and_gets_no_key(runpod_emulator):
    """A 401 from a host that is not RunPod's is returned as is; that host never sees the key."""
    hook = Counting(lambda context: make_key())
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    with Emulator() as stranger, httpx.Client(transport=ResilientTransport(credentials)) as client:
        response = client.get(f"{stranger.serverless_url}/{stranger.endpoint_id}/health")
        seen_by_stranger = stranger.counters().by_key

    assert (401, 0) == (response.status_code, hook.calls)
    assert {"<no key>": 1} == dict(seen_by_stranger)


@pytest.mark.anyio
async def test_cross_origin_401_is_untouched_and_said_once_async(runpod_emulator, monkeypatch):
    """Async: a 401 from an API outside the host policy is returned as is, the host never
    sees the key, and one ``runpod.auth.foreign_host`` warning (once per process) says
    which origin to add to ``hosts=``; a 401 from a path that is not RunPod's API is not
    worth that warning.
    """
    monkeypatch.setattr(_engine, "_warned", False)
    hook = Counting(lambda context: make_key())
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    with Emulator() as stranger:
        api, origin = f"{stranger.serverless_url}/ep/health", stranger.host
        stranger.inject(401, path_prefix="/elsewhere")
        async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
            with capture_logs() as off_api:
                elsewhere = await client.get(f"{stranger.url}/elsewhere")
            with capture_logs() as logs:
                first = await client.get(f"{stranger.serverless_url}/ep/health")
                second = await client.get(f"{stranger.serverless_url}/ep/health")
        seen_by_stranger = dict(stranger.counters().by_key)

    foreign = [(e["url"], e["status"]) for e in logs if e["event"] == "runpod.auth.foreign_host"]
    statuses = (elsewhere.status_code, first.status_code, second.status_code)
    assert ((401, 401, 401), 0) == (statuses, hook.calls)
    assert [] == [e for e in off_api if e["event"] == "runpod.auth.foreign_host"]
    assert {"<no key>": 3} == seen_by_stranger
    assert [(api, 401)] == foreign
    hint = next(e["hint"] for e in logs if e["event"] == "runpod.auth.foreign_host")
    assert f"add {origin!r} there" in hint


def test_a_hook_is_told_once_its_key_is_accepted(runpod_emulator, secret):
    """A hook with ``accepted`` hears of its key once RunPod accepted it, once; an
    ``accepted`` that raises costs the request nothing and is one warning event naming
    the hook and the key's fingerprint.
    """
    told: list[str] = []

    class Telling:
        name = "telling"

        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def __call__(self, context: object) -> str:
            return secret.read_text().strip()

        def accepted(self, found: RecoveredKey) -> None:
            told.append(found.key)
            if self.fail:
                raise OSError("disk full")

    for fail in (False, True):
        old = secret.read_text().strip()
        credentials = Credentials(old, Telling(fail), hosts=[runpod_emulator.host])
        with client_for(runpod_emulator, credentials) as client, capture_logs() as logs:
            new = rotate_via_file(runpod_emulator, secret, old)
            statuses = [client.get("/health").status_code for _ in range(2)]
        failed = [e for e in logs if e["event"] == "runpod.auth.accepted_hook_failed"]

        assert [200, 200] == statuses
        assert new == told[-1]
        if fail:
            assert [("telling", fingerprint(new), "OSError: disk full")] == [
                (e["hook"], e["fingerprint"], e["error"]) for e in failed
            ]
        else:
            assert [] == failed
    assert 2 == len(told)


def test_user_authorization_header_to_other_hosts_is_left_alone(runpod_emulator):
    """Headers the user sets for another service pass through unchanged."""
    credentials = Credentials(
        runpod_emulator.api_key, Counting(lambda c: None), hosts=[runpod_emulator.host]
    )
    captured: list[str | None] = []

    def other_service(request: httpx.Request) -> httpx.Response:
        captured.append(request.headers.get("Authorization"))
        return httpx.Response(401)

    transport = ResilientTransport(credentials, httpx.MockTransport(other_service))
    with httpx.Client(transport=transport) as client:
        client.get("https://example.com/", headers={"Authorization": "Bearer theirs"})

    assert ["Bearer theirs"] == captured


def test_graphql_query_key_is_replaced_by_the_current_one(runpod_emulator):
    """Scripts that pass ?api_key= keep working: the query carries the current key."""
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    credentials = Credentials(new, Counting(lambda c: None), hosts=[runpod_emulator.host])

    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        response = client.post(
            f"{runpod_emulator.graphql_url}?api_key={old}",
            json={"query": "query { myself { id } }"},
        )

    assert response.json()["data"]["myself"]["id"]


def test_connection_pool_survives_many_401s(runpod_emulator):
    """Every discarded 401 is closed: 201 of them through a 2-connection pool, then a 200
    (a leaked connection would exhaust the pool after two).

    The first request sends twice (its probe); its probe's 401 marks the key known
    rejected, so each later request reads the hook (or meets the open breaker) at its
    first 401: one send each.
    """
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    credentials = Credentials(
        old, Counting(lambda context: None), hosts=[runpod_emulator.host], cooldown=3600
    )
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    failures = 0
    with client_for(
        runpod_emulator, credentials, limits=limits, timeout=httpx.Timeout(5.0, pool=2.0)
    ) as client:
        for _ in range(200):
            try:
                client.get("/health")
            except AuthenticationError:
                failures += 1
        credentials.set_key(runpod_emulator.add_key())
        final = client.get("/health")

    assert (200, 200) == (failures, final.status_code)
    assert 201 == runpod_emulator.counters().by_status[401]


def test_runpod_auth_recovers_with_auth_argument(runpod_emulator, secret):
    """httpx.Client(auth=RunPodAuth(...)) recovers too; the 401s (the first send and its
    probe) are in the history."""
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    rotate_via_file(runpod_emulator, secret, runpod_emulator.api_key)

    with httpx.Client(auth=RunPodAuth(credentials)) as client:
        response = client.get(f"{runpod_emulator.serverless_url}/e/health")

    assert (200, [401, 401], 1) == (
        response.status_code,
        [r.status_code for r in response.history],
        hook.calls,
    )


@pytest.mark.anyio
async def test_runpod_auth_recovers_with_async_client(runpod_emulator, secret):
    """RunPodAuth works with httpx.AsyncClient as well."""
    hook = Counting(recovery.from_file(secret))
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    rotate_via_file(runpod_emulator, secret, runpod_emulator.api_key)

    async with httpx.AsyncClient(auth=RunPodAuth(credentials)) as client:
        response = await client.get(f"{runpod_emulator.serverless_url}/e/health")

    assert (200, 1) == (response.status_code, hook.calls)


def test_runpod_auth_gives_up_like_the_transport(runpod_emulator):
    """The auth flow is bounded by the same engine rules: max_recoveries (2) hook calls,
    and 2 * 2 + 2 sends (each of the three keys' first 401 probed).
    """
    hook = Counting(lambda context: make_key())
    credentials = Credentials(
        make_key(), hook, hosts=[runpod_emulator.host], wait=tenacity.wait_none()
    )

    with httpx.Client(auth=RunPodAuth(credentials)) as client, pytest.raises(AuthenticationError):
        client.get(f"{runpod_emulator.serverless_url}/e/health")

    assert (2, 6) == (hook.calls, runpod_emulator.counters().total)


def test_injected_503_on_a_safe_route_is_retried_without_recovery(runpod_emulator):
    """A server error is not an auth problem: a GET is retried, the hook never runs."""
    hook = Counting(lambda c: None)
    credentials = Credentials(runpod_emulator.api_key, hook, hosts=[runpod_emulator.host])
    runpod_emulator.inject(503)

    with client_for(runpod_emulator, credentials) as client:
        response = client.get("/health")

    assert (200, 0, {503: 1, 200: 1}) == (
        response.status_code,
        hook.calls,
        dict(runpod_emulator.counters().by_status),
    )


def test_missing_key_is_recovered_after_the_probe(runpod_emulator, monkeypatch):
    """Starting with no key at all, the first 401 fetches one at once (there is no key to
    probe), and the request succeeds.
    """
    credentials = Credentials(hosts=[runpod_emulator.host])
    monkeypatch.setenv("RUNPOD_API_KEY", runpod_emulator.api_key)

    with client_for(runpod_emulator, credentials) as client:
        response = client.get("/health")

    assert (200, {"<no key>": 1, credentials.fingerprint: 1}) == (
        response.status_code,
        dict(runpod_emulator.counters().by_key),
    )


def test_readme_fixture_example(runpod_emulator, tmp_path):
    """The README's "Testing your own code" example works as written."""
    secret = tmp_path / "key"
    secret.write_text(runpod_emulator.api_key)
    credentials = Credentials(
        runpod_emulator.api_key, recovery.from_file(secret), hosts=[runpod_emulator.host]
    )
    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        secret.write_text(runpod_emulator.rotate(runpod_emulator.api_key))
        assert client.get(f"{runpod_emulator.serverless_url}/e/health").status_code == 200


@pytest.mark.anyio
async def test_async_retry_after_beyond_the_limit_gives_up_at_once(runpod_emulator):
    """Async: a 503 whose Retry-After is longer than ``max_retry_after`` is reported at
    once (reason ``retry_after``), after one send, without recovery.
    """
    hook = Counting(lambda context: None)
    credentials = Credentials(
        runpod_emulator.api_key,
        hook,
        hosts=[runpod_emulator.host],
        retry=RetryPolicy(max_retry_after=1),
    )
    runpod_emulator.inject(503, retry_after="30")

    async with async_client_for(runpod_emulator, credentials) as client:
        with pytest.raises(TransientError) as info:
            await client.get("/health")

    assert ("retry_after", 503) == (info.value.reason, info.value.status_code)
    assert (0, 1) == (hook.calls, runpod_emulator.counters().total)


@pytest.mark.anyio
async def test_async_refused_connection_is_retried_even_for_a_job(runpod_emulator):
    """Async: a connection refused sent nothing, so even ``POST /run`` is sent again, up
    to ``attempts``, then reported (reason ``exhausted``) with the error as the cause.
    """
    with Emulator() as gone:
        host, url = gone.host, f"{gone.serverless_url}/ep/run"
    credentials = Credentials(
        make_key(),
        lambda context: None,
        hosts=[host],
        retry=RetryPolicy(attempts=3, backoff=tenacity.wait_none()),
    )

    async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
        with pytest.raises(TransientError) as info:
            await client.post(url, json={"input": {}})

    assert ("exhausted", None) == (info.value.reason, info.value.status_code)
    assert ["ConnectError"] * 3 == [what for what, _ in info.value.history]
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    # What httpx would have raised, for the except clauses written for it.
    assert isinstance(info.value, httpx.ConnectError)
    assert url == str(info.value.request.url)


@pytest.mark.parametrize("adapter", ["transport", "auth"])
@pytest.mark.parametrize("clause", [httpx.HTTPError, TransientError])
def test_a_503_on_run_not_sent_again_is_an_httpx_error(runpod_emulator, adapter, clause):
    """``POST …/run`` answered 503 is not resent (a job may exist): the TransientError is
    also an ``httpx.HTTPError``, with the request, for either httpx adapter."""
    credentials = Credentials(
        runpod_emulator.api_key, Counting(lambda context: None), hosts=[runpod_emulator.host]
    )
    runpod_emulator.inject(503)
    if adapter == "transport":
        client = httpx.Client(transport=ResilientTransport(credentials))
    else:
        client = httpx.Client(auth=RunPodAuth(credentials))
    url = f"{runpod_emulator.serverless_url}/e/run"

    with client, pytest.raises(clause) as info:
        client.post(url, json={"input": {}})

    assert isinstance(info.value, TransientError)
    assert isinstance(info.value, httpx.HTTPError)
    assert ("unsafe", 503) == (info.value.reason, info.value.status_code)
    assert url == str(info.value.request.url)


class TestStampedHeaders:
    """The key is written into httpx's header list directly: the same headers as httpx's API."""

    @pytest.mark.parametrize(
        "before",
        [
            [],
            [("Accept", "*/*")],
            [("Authorization", "Bearer old")],
            [("authorization", "Bearer old"), ("Accept", "*/*")],
            [("X-A", "1"), ("Authorization", "a"), ("X-B", "2"), ("AUTHORIZATION", "b")],
            [("Authorization", "a"), ("authorization", "b"), ("Authorization", "c")],
        ],
    )
    def test_the_fast_write_sets_what_the_public_one_sets(self, before):
        """Replace the first, drop the other duplicates, else append; order kept."""
        fast, public = httpx.Headers(before), httpx.Headers(before)

        _httpx_adapter._set_authorization_listed(fast, "Bearer new")
        _httpx_adapter._set_authorization_public(public, "Bearer new")

        assert public.raw == fast.raw
        assert ["Bearer new"] == fast.get_list("Authorization")

    def test_this_httpx_takes_the_fast_write(self):
        """The installed httpx keeps its headers where the fast write expects them."""
        assert _httpx_adapter._set_authorization_listed is _httpx_adapter._set_authorization
