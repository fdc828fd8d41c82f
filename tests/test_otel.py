"""OpenTelemetry with no code: a span per recovery flight and the metrics, never a key."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from resilient_runpod import Credentials, ResilientTransport, fingerprint, recovery
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
    monkeypatch.setattr(_subscribers, "_defaults_installed", False)
    yield found
    for provider in found.providers:
        provider.shutdown()
    _reset_globals()


def test_a_rotation_under_32_requests_is_one_span_and_counted(
    emulator_process: EmulatorProcess, tmp_path: Path, telemetry
):
    """32 requests parked in the server when the key rotates: one recovery span (hook,
    outcome, fingerprint), one recovery counted, the 401s and resends counted as the
    server saw them, and no key anywhere in spans or metrics."""
    secret = tmp_path / "key"
    old = emulator_process.key
    secret.write_text(old)
    hook = Counting(recovery.from_file(secret), name="vault")
    credentials = Credentials(old, hook, hosts=[emulator_process.host])
    assert 1 == sum(isinstance(s, _otel.OpenTelemetry) for s in _subscribers.subscribers)
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
    emulator_process.revoke(old)
    emulator_process.set_latency(0)
    for thread in threads:
        thread.join()
    client.close()
    counts = emulator_process.status_counts()

    assert parked, "not every request was parked in the server at the rotation"
    assert [200] * THREADS == statuses
    (span,) = telemetry.spans.get_finished_spans()
    assert ("runpod.auth.recovery", "vault", "recovered", fingerprint(old)) == (
        span.name,
        span.attributes["runpod.auth.hook"],
        span.attributes["runpod.auth.outcome"],
        span.attributes["runpod.auth.fingerprint"],
    )
    assert fingerprint(new) == span.attributes["runpod.auth.new_fingerprint"]
    assert 1 <= span.attributes["runpod.auth.waiters"] <= THREADS
    assert 1 == telemetry.total("runpod.auth.recoveries", **{"runpod.auth.outcome": "recovered"})
    (histogram,) = [value for _, value in telemetry.points("runpod.auth.recovery.duration")]
    assert 1 == histogram.count
    assert counts[401] == telemetry.total("runpod.auth.rejections")
    # Every send after a request's first is a resend: a probe or a rotation.
    assert sum(counts.values()) - THREADS == telemetry.total("runpod.resends")
    # Which of the two a request made is a race (a probe sent after the recovery carries
    # the new key); that they are all either is not.
    assert {"probe", "rotation"} >= {
        attributes["runpod.resend.reason"] for attributes, _ in telemetry.points("runpod.resends")
    }
    shown = repr(
        [(s.name, dict(s.attributes), s.events) for s in telemetry.spans.get_finished_spans()]
    ) + repr(telemetry.reader.get_metrics_data().to_json())
    assert old not in shown
    assert new not in shown


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
    assert () == tuple(telemetry.spans.get_finished_spans())


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

    (span,) = telemetry.spans.get_finished_spans()
    assert ("never_accepted", trace.StatusCode.ERROR) == (
        span.attributes["runpod.auth.outcome"],
        span.status.status_code,
    )
    assert 1 == telemetry.total(
        "runpod.auth.breaker.changes", **{"runpod.auth.breaker.state": "open"}
    )


def test_importing_the_library_imports_no_opentelemetry():
    """OpenTelemetry is loaded at the first event, not by importing the library nor by
    making a `Credentials` (which only looks for it: its namespace package, no code)."""
    code = (
        "import sys, resilient_runpod as r\n"
        "r.Credentials('rpa_' + 'A' * 40, lambda _: None)\n"
        "from resilient_runpod.instrumentation import _subscribers\n"
        "print(any(m.startswith('opentelemetry.') for m in sys.modules),"
        " len(_subscribers.subscribers))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "False 1" == out.strip()
