"""OpenTelemetry with no code: a span per recovery flight and the metrics, never a key."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import requests
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from resilient_runpod import (
    AsyncResilientTransport,
    Credentials,
    ResilientTransport,
    fingerprint,
    recovery,
)
from resilient_runpod.instrumentation import _otel, _subscribers

from .conftest import EmulatorProcess
from .helpers import Counting, wait_for

THREADS = 32
LATENCY = 1.0  # every request is still parked in the server when the key is revoked


class Telemetry:
    """The SDK's in-memory span exporter and metric reader, as the global providers."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.providers = (tracer_provider, MeterProvider(metric_readers=[self.reader]))

    def points(self, name: str) -> list[tuple[dict[str, object], object]]:
        """The data points of metric *name*: attributes, and the sum (or the histogram)."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for point in metric.data.data_points:
                            value = getattr(point, "value", None)
                            found.append(
                                (dict(point.attributes), point if value is None else value)
                            )
        return found

    def total(self, name: str, **where: object) -> int:
        return sum(
            int(value)  # type: ignore[call-overload]
            for attributes, value in self.points(name)
            if all(attributes.get(k) == v for k, v in where.items())
        )


def _reset_globals() -> None:
    # The API lets a provider be set once per process: tests put that back.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()
    metrics._internal._METER_PROVIDER = None


@pytest.fixture
def telemetry(monkeypatch):
    """Global providers reading into memory, and the built-in subscriber installed anew
    (as in a fresh process) when the next `Credentials` is made."""
    found = Telemetry()
    _reset_globals()
    trace.set_tracer_provider(found.providers[0])
    metrics.set_meter_provider(found.providers[1])
    monkeypatch.setattr(_subscribers, "subscribers", ())
    monkeypatch.setattr(_subscribers, "resend_span", None)
    monkeypatch.setattr(_subscribers, "_defaults_installed", False)
    yield found
    for provider in found.providers:
        provider.shutdown()
    _reset_globals()


@pytest.fixture
def httpx_instrumented(telemetry):
    """OpenTelemetry's own httpx instrumentation, as an application turns it on."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.providers[0])
    yield
    instrumentor.uninstrument()


def test_a_rotation_under_32_requests_is_one_span_and_counted(
    emulator_process: EmulatorProcess, tmp_path: Path, telemetry, httpx_instrumented
):
    """32 jobs (each the application's span) parked in the server when the key rotates,
    with httpx's own instrumentation on:

    - one recovery span (hook, outcome, fingerprint), linked from the resend of every
      request that waited for it;
    - every job has exactly one resend span with ``http.request.resend_count`` 1, and
      each resend span holds the httpx instrumentation's span of that send;
    - the 401s and resends are events on the jobs' spans, and counted as the server saw
      them; no key anywhere in spans, events, links or metrics.
    """
    secret = tmp_path / "key"
    old = emulator_process.key
    secret.write_text(old)
    hook = Counting(recovery.from_file(secret), name="vault")
    credentials = Credentials(old, hook, hosts=[emulator_process.host])
    assert 1 == sum(isinstance(s, _otel.OpenTelemetry) for s in _subscribers.subscribers)
    tracer = telemetry.providers[0].get_tracer("the-application")

    statuses, parked, new = _jobs_through_a_rotation(emulator_process, credentials, tracer, secret)

    counts = emulator_process.status_counts()
    spans = telemetry.spans.get_finished_spans()
    named = {name: [s for s in spans if s.name == name] for name in {s.name for s in spans}}

    assert parked, "not every request was parked in the server at the rotation"
    assert [200] * THREADS == statuses
    (span,) = named["runpod.auth.recovery"]
    assert ("vault", "recovered", fingerprint(old), fingerprint(new)) == (
        span.attributes["runpod.auth.hook"],
        span.attributes["runpod.auth.outcome"],
        span.attributes["runpod.auth.fingerprint"],
        span.attributes["runpod.auth.new_fingerprint"],
    )
    jobs = named["job"]
    resends = named[_otel.RESEND_SPAN]
    # Each job's first resend, whatever it was (a probe, or a rotation).
    firsts = [s for s in resends if 1 == s.attributes["http.request.resend_count"]]
    assert sorted(j.context.trace_id for j in jobs) == sorted(s.context.trace_id for s in firsts)
    # The requests that waited for the recovery link to it, and only those.
    linked = [s for s in resends if [span.context] == [link.context for link in s.links]]
    assert span.attributes["runpod.auth.waiters"] == len(linked)
    assert {"rotation"} == {s.attributes["runpod.resend.reason"] for s in linked}
    # httpx's span of every send (in the jobs' traces: not the test's own admin calls):
    # the resends' inside ours, one each.
    traces = {j.context.trace_id for j in jobs}
    sends = [
        s
        for s in spans
        if s.instrumentation_scope.name.endswith(".httpx") and s.context.trace_id in traces
    ]
    assert sum(counts.values()) == len(sends)
    inside = sorted(s.parent.span_id for s in sends if s.parent.span_id not in _ids(jobs))
    assert sorted(s.context.span_id for s in resends) == inside
    # 401s and resends: events on the jobs' spans, and counted.
    events = [e.name for job in jobs for e in job.events]
    assert counts[401] == events.count("runpod.auth.rejected")
    assert len(resends) == events.count("runpod.resend")
    assert 1 == telemetry.total("runpod.auth.recoveries", **{"runpod.auth.outcome": "recovered"})
    (histogram,) = [value for _, value in telemetry.points("runpod.auth.recovery.duration")]
    assert 1 == histogram.count
    assert counts[401] == telemetry.total("runpod.auth.rejections")
    # Every send after a request's first is a resend: a probe or a rotation.
    assert sum(counts.values()) - THREADS == telemetry.total("runpod.resends") == len(resends)
    assert {"probe", "rotation"} >= {
        attributes["runpod.resend.reason"] for attributes, _ in telemetry.points("runpod.resends")
    }
    shown = _everything(telemetry)
    assert old not in shown
    assert new not in shown


def _jobs_through_a_rotation(
    emulator_process: EmulatorProcess, credentials: Credentials, tracer, secret: Path
) -> tuple[list[int], bool, str]:
    """Send THREADS jobs, each in a span of its own, and rotate the key (written to
    *secret*) while all are parked in the server. Returns their statuses, whether all
    were parked at the rotation, and the new key."""
    emulator_process.set_latency(LATENCY)
    barrier = threading.Barrier(THREADS + 1)
    statuses: list[int] = []
    lock = threading.Lock()
    client = httpx.Client(
        transport=ResilientTransport(
            credentials, httpx.HTTPTransport(limits=httpx.Limits(max_connections=THREADS))
        ),
        base_url=f"{emulator_process.url}/v2/storm",
        timeout=120,
    )

    def worker() -> None:
        barrier.wait()
        with tracer.start_as_current_span("job"):
            status = client.get("/health").status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    barrier.wait()
    parked = wait_for(lambda: THREADS == emulator_process.in_flight())
    new = emulator_process.add_key()
    secret.write_text(new)
    emulator_process.revoke(emulator_process.key)
    emulator_process.set_latency(0)
    for thread in threads:
        thread.join()
    client.close()
    return statuses, parked, new


def _ids(spans) -> set[int]:
    return {s.context.span_id for s in spans}


def _everything(telemetry: Telemetry) -> str:
    """Every span's name, attributes, events and links, and every metric, as text."""
    return repr(
        [
            (s.name, dict(s.attributes), [(e.name, dict(e.attributes)) for e in s.events])
            for s in telemetry.spans.get_finished_spans()
        ]
    ) + repr(telemetry.reader.get_metrics_data().to_json())


def test_transient_retries_are_counted_by_status(runpod_emulator, telemetry):
    """A 503 retried once: ``runpod.transient.retries`` by status, one transient resend."""
    import tenacity

    from resilient_runpod import RetryPolicy

    credentials = Credentials(
        runpod_emulator.api_key,
        lambda _: None,
        hosts=[runpod_emulator.host],
        retry=RetryPolicy(backoff=tenacity.wait_fixed(0.01)),
    )
    runpod_emulator.inject(503)
    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        assert 200 == client.get(f"{runpod_emulator.serverless_url}/ep/health").status_code

    assert 1 == telemetry.total("runpod.transient.retries", **{"http.response.status_code": 503})
    assert 1 == telemetry.total("runpod.resends", **{"runpod.resend.reason": "transient"})
    (resend,) = telemetry.spans.get_finished_spans()  # no recovery: the resend's span only
    assert (_otel.RESEND_SPAN, 1, "transient", 200) == (
        resend.name,
        resend.attributes["http.request.resend_count"],
        resend.attributes["runpod.resend.reason"],
        resend.attributes["http.response.status_code"],
    )


def test_a_failed_recovery_is_an_error_span_and_opens_the_breaker(runpod_emulator, telemetry):
    """A key never accepted: its span's status is an error, and the breaker's change to
    open is counted."""
    from resilient_runpod import AuthenticationError

    old = runpod_emulator.add_key()
    credentials = Credentials(
        old, lambda _: None, hosts=[runpod_emulator.host], failure_threshold=1
    )
    runpod_emulator.revoke(old)
    with (
        httpx.Client(transport=ResilientTransport(credentials)) as client,
        pytest.raises(AuthenticationError),
    ):
        client.get(f"{runpod_emulator.serverless_url}/ep/health")

    (span,) = [s for s in telemetry.spans.get_finished_spans() if s.name == _otel.SPAN]
    assert ("never_accepted", trace.StatusCode.ERROR) == (
        span.attributes["runpod.auth.outcome"],
        span.status.status_code,
    )
    assert 1 == telemetry.total(
        "runpod.auth.breaker.changes", **{"runpod.auth.breaker.state": "open"}
    )
    assert 1 == telemetry.total("runpod.auth.breakers", **{"runpod.auth.breaker.state": "open"})
    # The probe's span: the resend of the same key, rejected again.
    (probe,) = [s for s in telemetry.spans.get_finished_spans() if s.name == _otel.RESEND_SPAN]
    assert ("probe", 401, "401", trace.StatusCode.ERROR) == (
        probe.attributes["runpod.resend.reason"],
        probe.attributes["http.response.status_code"],
        probe.attributes["error.type"],
        probe.status.status_code,
    )


def test_importing_the_library_imports_no_opentelemetry():
    """OpenTelemetry is loaded at the first event, not by importing the library nor by
    making a `Credentials` (which only looks for it: its namespace package, no code)."""
    code = (
        "import sys, resilient_runpod as r\n"
        "r.Credentials('rpa_' + 'A' * 40, lambda _: None)\n"
        "from resilient_runpod.instrumentation import _subscribers\n"
        "print(any(m.startswith('opentelemetry.') for m in sys.modules),"
        " [type(s).__name__ for s in _subscribers.subscribers])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "False ['function', 'OpenTelemetry']" == out.strip()  # the log, then OpenTelemetry


def _resends(telemetry: Telemetry) -> list:
    return [s for s in telemetry.spans.get_finished_spans() if s.name == _otel.RESEND_SPAN]


def _recovery(telemetry: Telemetry):
    (span,) = [s for s in telemetry.spans.get_finished_spans() if s.name == _otel.SPAN]
    return span


def _assert_one_rotation(
    telemetry: Telemetry, client_spans: list | None, old: str, new: str
) -> None:
    """One request lived through a rotation: its probe (resend 1) and its resend with the
    recovered key (resend 2, linked to the recovery span), each inside one of
    *client_spans* (None: not checked). No key anywhere."""
    recovery_span = _recovery(telemetry)
    resends = sorted(_resends(telemetry), key=lambda s: s.attributes["http.request.resend_count"])
    assert [(1, "probe", 401, []), (2, "rotation", 200, [recovery_span.context])] == [
        (
            s.attributes["http.request.resend_count"],
            s.attributes["runpod.resend.reason"],
            s.attributes["http.response.status_code"],
            [link.context for link in s.links],
        )
        for s in resends
    ]
    if client_spans is not None:
        assert {s.parent.span_id for s in resends} <= {c.context.span_id for c in client_spans}
    shown = _everything(telemetry)
    assert old not in shown
    assert new not in shown


def test_requests_instrumentation_holds_the_resend_spans(runpod_emulator, vault, telemetry):
    """With OpenTelemetry's requests instrumentation: its span covers the whole request
    (the adapter resends inside it), and our resend spans are its children."""
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    from resilient_runpod.adapters import ResilientHTTPAdapter

    instrumentor = RequestsInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.providers[0])
    try:
        credentials = Credentials(vault.key, vault, hosts=[runpod_emulator.host])
        old, new = vault.key, vault.rotate()
        with requests.Session() as session:
            session.mount("http://", ResilientHTTPAdapter(credentials))
            response = session.get(f"{runpod_emulator.serverless_url}/ep/health")
    finally:
        instrumentor.uninstrument()

    assert 200 == response.status_code
    clients = [
        s
        for s in telemetry.spans.get_finished_spans()
        if s.instrumentation_scope.name.endswith(".requests")
    ]
    assert 1 == len(clients)
    _assert_one_rotation(telemetry, clients, old, new)


@pytest.mark.anyio
async def test_aiohttp_instrumentation_holds_the_resend_spans(runpod_emulator, vault, telemetry):
    """With OpenTelemetry's aiohttp-client instrumentation: its span covers the whole
    request (the middleware resends inside it), and our resend spans are its children."""
    import aiohttp
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    from resilient_runpod.adapters import ResilientMiddleware

    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument(tracer_provider=telemetry.providers[0])
    try:
        credentials = Credentials(vault.key, vault, hosts=[runpod_emulator.host])
        old, new = vault.key, vault.rotate()
        async with (
            aiohttp.ClientSession(middlewares=(ResilientMiddleware(credentials),)) as session,
            session.get(f"{runpod_emulator.serverless_url}/ep/health") as response,
        ):
            status = response.status
    finally:
        instrumentor.uninstrument()

    assert 200 == status
    clients = [
        s
        for s in telemetry.spans.get_finished_spans()
        if s.instrumentation_scope.name.endswith(".aiohttp_client")
    ]
    assert 1 == len(clients)
    _assert_one_rotation(telemetry, clients, old, new)


@pytest.mark.anyio
async def test_a_key_in_the_query_never_reaches_url_full(
    runpod_emulator, vault, telemetry, httpx_instrumented
):
    """A GraphQL call written with ``?api_key=``, through the async transport: the key
    travels in the header, so httpx's spans record a URL without it, resends included."""
    credentials = Credentials(vault.key, vault, hosts=[runpod_emulator.host])
    old, new = vault.key, vault.rotate()
    async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
        response = await client.post(
            f"{runpod_emulator.graphql_url}?api_key={old}",
            json={"query": "query { myself { id } }"},
        )

    assert 200 == response.status_code
    clients = [
        s
        for s in telemetry.spans.get_finished_spans()
        if s.instrumentation_scope.name.endswith(".httpx")
    ]
    assert 3 == len(clients)  # the send, its probe, the resend after recovery
    _assert_one_rotation(telemetry, None, old, new)
    # The resends' spans hold httpx's spans of them (not the other way round).
    assert {s.parent.span_id for s in clients if s.parent} == {
        s.context.span_id for s in _resends(telemetry)
    }


def test_runpod_auth_resends_have_spans_too(runpod_emulator, vault, telemetry):
    """httpx's auth flow sends the resends itself: our span is not the current one there,
    but each resend still has one, counted and linked."""
    from resilient_runpod import RunPodAuth

    credentials = Credentials(vault.key, vault, hosts=[runpod_emulator.host])
    old, new = vault.key, vault.rotate()
    with httpx.Client(auth=RunPodAuth(credentials)) as client:
        response = client.get(f"{runpod_emulator.serverless_url}/ep/health")

    assert 200 == response.status_code
    _assert_one_rotation(telemetry, None, old, new)


@pytest.mark.parametrize(
    "hook",
    ["callback", "chain", "default", "persist", "shared"],
)
def test_wrap_runpod_reports_a_rotation_whatever_the_hook(  # noqa: PLR0917 -- fixtures
    sdk, runpod_emulator, vault, tmp_path, monkeypatch, telemetry, hook
):
    """Through ``wrap(runpod)`` (the SDK's own requests session) and with each kind of
    hook users write: one recovery span, the probe and the resend after recovery as
    resend spans (the second linked to the recovery), and no key anywhere."""
    import runpod

    from resilient_runpod import wrap

    secret = tmp_path / "key"
    secret.write_text(vault.key)
    monkeypatch.setenv("RUNPOD_API_KEY", vault.key)
    hooks = {
        "callback": vault,
        "chain": recovery.chain(recovery.from_file(secret), recovery.prompt()),
        "default": recovery.default(),
        "persist": recovery.persist(vault, to=tmp_path / "saved"),
        # Named after this test's directory: no answer from another test is reused.
        "shared": recovery.shared(vault, name=f"otel-{tmp_path.name}"),
    }
    credentials = Credentials(vault.key, hooks[hook], hosts=[runpod_emulator.host])
    old, new = vault.key, vault.rotate()
    secret.write_text(new)
    monkeypatch.setenv("RUNPOD_API_KEY", new)
    endpoint = wrap(runpod, credentials).Endpoint(runpod_emulator.endpoint_id)

    assert "jobs" in endpoint.health()
    _assert_one_rotation(telemetry, None, old, new)
