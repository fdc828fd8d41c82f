"""Typed instrumentation events: what subscribers hear, and that they cannot break a request."""

from __future__ import annotations

import queue
import threading

import httpx
import pytest
import tenacity
from structlog.testing import capture_logs

from resilient_runpod import (
    AuthenticationError,
    Breaker,
    Credentials,
    ResilientTransport,
    RetryPolicy,
    fingerprint,
    instrumentation,
)
from resilient_runpod.instrumentation import (
    BreakerChanged,
    RecoveryEnded,
    RecoveryStarted,
    Rejected,
    Resent,
    TransientRetry,
    _subscribers,
)


@pytest.fixture(autouse=True)
def _no_subscribers(monkeypatch):
    """Each test starts with nobody listening, whatever the environment subscribed."""
    monkeypatch.setattr(_subscribers, "subscribers", ())
    monkeypatch.setattr(_subscribers, "_defaults_installed", True)


@pytest.fixture
def heard():
    """Every event, in order, for the length of the test."""
    events: list[object] = []
    unsubscribe = instrumentation.subscribe(events.append)
    yield events
    unsubscribe()


def _get(credentials, url, **kwargs):
    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        return client.get(url, **kwargs).status_code


def test_a_recovered_401_is_told_step_by_step(runpod_emulator, vault, credentials, heard):
    """A rotation seen by one request: its 401, the probe, the second 401, one recovery
    flight (one read, one waiter), and the resend with the new key. Fingerprints only."""
    old = vault.key
    new = vault.rotate()
    host = runpod_emulator.host.split(":")[0]

    url = f"{runpod_emulator.serverless_url}/ep/health"

    status = _get(credentials, url)

    assert instrumentation.flush(30)
    assert 200 == status
    (ended,) = [e for e in heard if isinstance(e, RecoveryEnded)]
    flight = ended.recovery
    assert [
        Rejected(fingerprint(old), host, "GET", 1, url),
        Resent("probe", fingerprint(old), host, "GET", 1, None, url),
        Rejected(fingerprint(old), host, "GET", 2, url),
        RecoveryStarted("vault", fingerprint(old), flight),
        Resent("rotation", fingerprint(new), host, "GET", 2, flight, url),
    ] == [e for e in heard if not isinstance(e, RecoveryEnded)]
    assert ("recovered", "vault", 1, 1, fingerprint(old), fingerprint(new)) == (
        ended.outcome,
        ended.hook,
        ended.reads,
        ended.waiters,
        ended.fingerprint,
        ended.new_fingerprint,
    )
    assert 0 <= ended.seconds < 30
    assert old not in repr(heard)
    assert new not in repr(heard)


def test_a_transient_failure_is_a_retry_and_a_resend(runpod_emulator, credentials, heard):
    """A 503 retried: `TransientRetry` with its status and wait, then `Resent("transient")`."""
    runpod_emulator.inject(503)
    fast = Credentials(
        credentials.api_key,
        lambda _: None,
        hosts=[runpod_emulator.host],
        retry=RetryPolicy(backoff=tenacity.wait_fixed(0.01)),
    )

    url = f"{runpod_emulator.serverless_url}/ep/health"

    status = _get(fast, url)

    assert instrumentation.flush(30)
    host = runpod_emulator.host.split(":")[0]
    assert 200 == status
    assert [
        TransientRetry(503, 0.01, "503", host, "GET", 1, url),
        Resent("transient", fast.fingerprint, host, "GET", 1, None, url),
    ] == heard


def test_a_failed_recovery_opens_the_breaker_and_set_key_closes_it(runpod_emulator, heard):
    """With a threshold of one, a failed recovery opens the breaker (`BreakerChanged`
    after `RecoveryEnded`), and `set_key` closes it again."""
    old = runpod_emulator.add_key()
    credentials = Credentials(
        old, lambda _: None, hosts=[runpod_emulator.host], failure_threshold=1
    )
    runpod_emulator.revoke(old)

    with pytest.raises(AuthenticationError):
        _get(credentials, f"{runpod_emulator.serverless_url}/ep/health")
    credentials.set_key(runpod_emulator.add_key())

    assert instrumentation.flush(30)
    ended = [e for e in heard if isinstance(e, RecoveryEnded)]
    changes = [e for e in heard if isinstance(e, BreakerChanged)]
    assert ["never_accepted"] == [e.outcome for e in ended]
    assert [
        BreakerChanged(Breaker.OPEN, 1, Breaker.CLOSED),
        BreakerChanged(Breaker.CLOSED, 0, Breaker.OPEN),
    ] == changes
    assert heard.index(ended[0]) < heard.index(changes[0])


def test_a_subscriber_that_raises_is_logged_and_the_request_goes_on(
    runpod_emulator, vault, credentials
):
    """A failing subscriber: the request still succeeds, the other subscribers still hear
    every event, and each failure is a ``runpod.instrumentation.subscriber_failed``."""

    def broken(event):
        raise RuntimeError("boom")

    events: list[object] = []
    stop_broken = instrumentation.subscribe(broken)
    stop_events = instrumentation.subscribe(events.append)
    vault.rotate()
    try:
        with capture_logs() as logs:
            status = _get(credentials, f"{runpod_emulator.serverless_url}/ep/health")
            assert instrumentation.flush(30)
    finally:
        stop_broken()
        stop_events()

    failures = [e for e in logs if e["event"] == "runpod.instrumentation.subscriber_failed"]
    assert 200 == status
    assert 6 == len(events)
    assert [type(e).__name__ for e in events] == [e["kind"] for e in failures]
    assert {"RuntimeError: boom"} == {e["error"] for e in failures}
    assert {"warning"} == {e["log_level"] for e in failures}


def test_inline_subscribers_run_on_the_request_thread_outside_the_lock(
    runpod_emulator, vault, credentials
):
    """An inline subscriber is called on the thread that sent the request (for the 401)
    and never under the credentials' lock: one that reads the breaker, which takes that
    lock, does not deadlock. A queued one is called on the event thread."""
    threads: list[tuple[str, str]] = []
    queued: list[str] = []

    def nosy(event):
        assert Breaker.CLOSED == credentials.breaker  # takes the lock
        threads.append((type(event).__name__, threading.current_thread().name))

    stop_inline = instrumentation.subscribe(nosy, inline=True)
    stop_queued = instrumentation.subscribe(
        lambda event: queued.append(threading.current_thread().name)
    )
    vault.rotate()
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(
            _get(credentials, f"{runpod_emulator.serverless_url}/ep/health")
        ),
        name="the-request",
    )
    try:
        worker.start()
        worker.join(30)
        assert instrumentation.flush(30)
    finally:
        stop_inline()
        stop_queued()

    assert [200] == result
    assert ("Rejected", "the-request") == threads[0]
    assert ("RecoveryEnded", "resilient-runpod-recovery") in threads
    assert len(threads) == len(queued)
    assert {"resilient-runpod-events"} == set(queued)


def test_a_stuck_subscriber_delays_no_request(runpod_emulator, vault, credentials):
    """A queued subscriber that blocks (until the test lets it go) while a rotation is
    recovered: the request is answered meanwhile, and the subscriber hears every event
    once it goes on. Proven by the order of things, not by a clock."""
    let_go = threading.Event()
    heard: list[object] = []

    def stuck(event):
        let_go.wait(60)
        heard.append(event)

    unsubscribe = instrumentation.subscribe(stuck)
    vault.rotate()
    try:
        status = _get(credentials, f"{runpod_emulator.serverless_url}/ep/health")
        answered_while_stuck = not let_go.is_set() and [] == heard
        let_go.set()
        assert instrumentation.flush(30)
    finally:
        let_go.set()
        unsubscribe()

    assert (200, True) == (status, answered_while_stuck)
    assert ["Rejected", "Resent", "Rejected", "RecoveryStarted", "RecoveryEnded", "Resent"] == [
        type(e).__name__ for e in heard
    ]


def test_a_full_queue_drops_events_and_says_so(monkeypatch):
    """When the queued subscribers fall behind by a whole queue, further events are
    dropped, counted and logged, and emitting never waits."""
    delivery = _subscribers._Delivery()
    delivery._queue = queue.Queue(2)  # a small queue, to fill it
    monkeypatch.setattr(_subscribers, "_delivery", delivery)
    entered, let_go = threading.Event(), threading.Event()
    heard: list[object] = []

    def slow(event):
        entered.set()
        let_go.wait(60)
        heard.append(event)

    unsubscribe = instrumentation.subscribe(slow)
    events = [RecoveryStarted("hook", "rpa_…XXXX", n) for n in range(6)]
    try:
        with capture_logs() as logs:
            _subscribers.emit(events[0])
            assert entered.wait(30)  # the event thread holds the first, in the subscriber
            for event in events[1:]:
                _subscribers.emit(event)  # two fit in the queue, three do not
        let_go.set()
        assert instrumentation.flush(30)
    finally:
        let_go.set()
        unsubscribe()

    assert events[:3] == heard
    assert 3 == delivery.dropped
    assert [1] == [
        e["dropped"] for e in logs if e["event"] == "runpod.instrumentation.events_dropped"
    ]


def test_a_slow_subscriber_is_logged(monkeypatch):
    """A subscriber's call longer than SLOW is logged with its name and the event's kind."""
    import time

    monkeypatch.setattr(_subscribers, "SLOW", 0.01)

    def dawdler(event):
        time.sleep(0.05)

    unsubscribe = instrumentation.subscribe(dawdler, inline=True)
    try:
        with capture_logs() as logs:
            _subscribers.emit(RecoveryStarted("hook", "rpa_…XXXX", 1))
    finally:
        unsubscribe()

    (slow,) = [e for e in logs if e["event"] == "runpod.instrumentation.subscriber_slow"]
    assert ("RecoveryStarted", "test_a_slow_subscriber_is_logged.<locals>.dawdler") == (
        slow["kind"],
        slow["subscriber"],
    )


def test_unsubscribe_removes_one_subscription():
    """The same callable subscribed twice hears each event twice; each unsubscribe removes
    one subscription, and a second call of it is harmless."""
    events: list[object] = []
    first = instrumentation.subscribe(events.append)
    second = instrumentation.subscribe(events.append)
    event = RecoveryStarted("hook", "rpa_…XXXX", 1)

    _subscribers.emit(event)
    first()
    first()
    _subscribers.emit(event)
    second()
    _subscribers.emit(event)
    assert instrumentation.flush(30)

    assert [event, event, event] == events
    assert () == _subscribers.subscribers


def test_events_are_frozen_and_slotted():
    """Events cannot be changed, nor grow attributes, once made."""
    event = Rejected("rpa_…XXXX", "api.runpod.ai", "GET", 1, "https://api.runpod.ai/v2/e/run")
    with pytest.raises(AttributeError):
        event.host = "elsewhere"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")


def test_the_log_is_a_subscriber_with_the_events_fields(runpod_emulator, vault, monkeypatch):
    """The 401 and transient-retry log lines are written from the typed events, by the
    subscriber the library starts with: each line carries its event's fields."""
    from resilient_runpod.instrumentation import _log

    monkeypatch.setattr(_subscribers, "subscribers", (_log.log,))
    events: list[object] = []
    unsubscribe = instrumentation.subscribe(events.append)
    credentials = Credentials(
        vault.key,
        vault,
        hosts=[runpod_emulator.host],
        retry=RetryPolicy(backoff=tenacity.wait_fixed(0.01)),
    )
    vault.rotate()
    runpod_emulator.inject(503)
    try:
        with capture_logs() as logs:
            status = _get(credentials, f"{runpod_emulator.serverless_url}/ep/health")
        assert instrumentation.flush(30)
    finally:
        unsubscribe()

    assert 200 == status
    rejected = [e for e in events if isinstance(e, Rejected)]
    retried = [e for e in events if isinstance(e, TransientRetry)]
    assert (2, 1) == (len(rejected), len(retried))  # the send and its probe; the 503
    assert [
        ("runpod.auth.rejected", e.method, e.url, 401, e.attempt, e.fingerprint) for e in rejected
    ] == [
        (x["event"], x["method"], x["url"], x["status"], x["attempt"], x["fingerprint"])
        for x in logs
        if x["event"] == "runpod.auth.rejected"
    ]
    assert [
        ("runpod.transient.retry", e.method, e.url, e.status, e.reason, e.attempt, e.wait)
        for e in retried
    ] == [
        (x["event"], x["method"], x["url"], x["status"], x["reason"], x["attempt"], x["wait"])
        for x in logs
        if x["event"] == "runpod.transient.retry"
    ]
