"""`demo --metrics-port`: the library's metrics served for Prometheus, and the README's names.

The demo runs as a real process, and its metrics are read over a real socket on
127.0.0.1, as Prometheus would read them.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from resilient_runpod.cli._prometheus import INSTALL
from resilient_runpod.instrumentation._otel import METRICS

from .helpers import PATIENCE, run_cli_batch, wait_for
from .test_demo import WHOLE_KEY, demo_env, demo_process, summary_counts

README = Path(__file__).resolve().parent.parent / "README.md"


class Lines:
    """The lines a child writes to one pipe, gathered by a thread as they come."""

    def __init__(self, pipe) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def first(self, pattern: str) -> re.Match[str]:
        """The first line matching *pattern*, waited for (the wait is a safety net)."""

        def found() -> re.Match[str] | None:
            return next((m for line in self.lines if (m := re.search(pattern, line))), None)

        assert wait_for(found), f"no line matched {pattern!r} in {self.lines}"
        match = found()
        assert match is not None
        return match

    def text(self) -> str:
        self._thread.join(PATIENCE)
        return "\n".join(self.lines) + "\n"


def total(scraped: str, name: str, **labels: str) -> float:
    """The sum of the samples called *name* whose labels include *labels*."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


# The CLI as a person at a terminal runs it: Ctrl-C raises KeyboardInterrupt. A test
# runner started in the background by a shell inherits SIGINT ignored, and Python keeps
# an ignored SIGINT ignored; the test must not depend on how the runner was started.
_CTRL_C_AS_AT_A_TERMINAL = (
    "import runpy, signal\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "runpy.run_module('resilient_runpod.cli', run_name='__main__', alter_sys=True)\n"
)


@pytest.fixture(scope="module")
def demo_scraped():
    """A demo run with its metrics served on a free loopback port and held after the
    summary; the metrics are read then, and the demo stopped with Ctrl-C (SIGINT).

    Yields (the metrics URL, what was scraped, the demo's exit code, stdout, stderr).
    """
    child = subprocess.Popen(
        [
            sys.executable,
            *("-c", _CTRL_C_AS_AT_A_TERMINAL),
            *("demo", "--jobs", "2", "--no-sdk"),
            *("--metrics-port", "0", "--metrics-hold", str(PATIENCE)),
        ],
        env=demo_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = Lines(child.stdout), Lines(child.stderr)
        url = err.first(r"^metrics: (http://\S+/metrics)$")[1]
        # Held: the summary is out and the demo is still serving.
        err.first(r"^metrics: still served at ")
        with urllib.request.urlopen(url, timeout=PATIENCE) as answer:  # noqa: S310 -- loopback
            scraped = answer.read().decode()
        child.send_signal(signal.SIGINT)
        code = child.wait(PATIENCE)
        yield url, scraped, code, out.text(), err.text()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_the_demo_serves_its_metrics_on_loopback_and_ctrl_c_ends_the_hold(demo_scraped):
    """--metrics-port 0: a free port on 127.0.0.1, said on stderr; the demo completes, and
    Ctrl-C while the metrics are held ends it with the demo's own exit code."""
    url, _, code, stdout, stderr = demo_scraped

    assert re.fullmatch(r"http://127\.0\.0\.1:[1-9]\d*/metrics", url)
    assert 0 == code, stderr
    assert 0 == summary_counts(stdout)["jobs lost"]
    assert "Traceback" not in stderr


def test_the_scraped_counters_are_the_demos_own_counts(demo_scraped):
    """What Prometheus reads is what the demo counted: every 401 the emulator sent, each
    met by a resend (no job was lost), and each recovery, timed."""
    _, scraped, _, stdout, _ = demo_scraped
    counts = summary_counts(stdout)
    recovered = {"runpod_auth_outcome": "recovered"}

    assert counts["recoveries"] >= 1
    assert counts["401s seen"] == total(scraped, "runpod_auth_rejections_total")
    assert counts["401s seen"] == total(scraped, "runpod_resends_total")
    assert counts["recoveries"] == total(scraped, "runpod_auth_recoveries_total", **recovered)
    assert counts["recoveries"] == total(
        scraped, "runpod_auth_recovery_duration_seconds_count", **recovered
    )


def test_the_scraped_metrics_hold_no_key(demo_scraped):
    """Fingerprints and hosts only: nothing shaped like a whole key is served."""
    _, scraped, _, _, _ = demo_scraped

    assert "runpod_auth_rejections_total" in scraped
    assert [] == WHOLE_KEY.findall(scraped)


def test_without_the_prometheus_extra_the_flag_says_what_to_install():
    """The exporter missing: one line naming the install command, exit 2, no demo run."""
    without_exporter = (
        "import sys; sys.modules['opentelemetry.exporter.prometheus'] = None\n"
        "from resilient_runpod.cli import main\n"
        "sys.exit(main(sys.argv[1:]))"
    )

    result = demo_process("--metrics-port", "0", python=("-c", without_exporter))

    assert (2, "") == (result.returncode, result.stdout)
    said = (
        "resilient-runpod demo: --metrics-port needs OpenTelemetry's Prometheus exporter "
        f"(opentelemetry.exporter.prometheus is missing): {INSTALL}"
    )
    assert [said] == result.stderr.splitlines()


@pytest.fixture(scope="module")
def refused_metrics():
    """The flags' usage errors, and a port something already listens on, in one process."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        argvs = [
            ("demo", "--metrics-port", port),
            ("demo", "--metrics-hold", "5"),
            ("demo", "--metrics-port", "0", "--metrics-hold", "-1"),
            ("demo", "--metrics-port", "70000"),
        ]
        return port, run_cli_batch(argvs, env=demo_env())


def test_a_busy_metrics_port_is_refused_before_the_demo_starts(refused_metrics):
    """A port already in use: exit 2, said with the way out, and no demo run."""
    port, results = refused_metrics

    code, out, err = results["demo", "--metrics-port", port]

    assert (2, "") == (code, out)
    assert f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}" in err
    assert "choose another port, or 0 for a free one" in err


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--metrics-hold", "5"), "--metrics-hold needs --metrics-port"),
        (("--metrics-port", "0", "--metrics-hold", "-1"), "must be 0 or more seconds"),
        (("--metrics-port", "70000"), "'70000' is not a port number"),
    ],
)
def test_metrics_flag_usage_errors_exit_2(refused_metrics, args, said):
    """A hold without a port, a negative hold, a port out of range: usage errors."""
    _, results = refused_metrics

    code, out, err = results[("demo", *args)]

    assert (2, "") == (code, out)
    assert said in err


# One event of each kind through the built-in subscriber, read by the Prometheus exporter:
# the names and kinds Prometheus sees, as `# TYPE NAME KIND` lines.
_EXPORTED = """
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import generate_latest

metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))

from resilient_runpod._breaker import Breaker
from resilient_runpod.instrumentation import _data, _otel

record = _otel.OpenTelemetry()
record(_data.Rejected("rpa_...ABCD", "api.runpod.ai", "POST", 1, "https://api.runpod.ai/v2/e/run"))
record(_data.Resent("rotation", "rpa_...EFGH", "api.runpod.ai", "POST", 1, 1, "https://api.runpod.ai/v2/e/run"))
record(_data.TransientRetry(503, 0.1, "503", "api.runpod.ai", "GET", 1, "https://api.runpod.ai/v2/e/health"))
record(_data.RecoveryEnded("recovered", "vault", 0.2, 1, 1, "rpa_...ABCD", "rpa_...EFGH", 1))
record(_data.BreakerChanged(Breaker.OPEN, 3, Breaker.CLOSED))
for line in generate_latest().decode().splitlines():
    if line.startswith("# TYPE runpod_"):
        print(line)
"""


def test_the_readme_names_the_metrics_as_prometheus_shows_them():
    """The README's table of Prometheus names is what the exporter makes of each metric:
    every one of them, counters with ``_total``, the histogram with its unit."""
    exported = subprocess.run(
        [sys.executable, "-c", _EXPORTED],
        capture_output=True,
        text=True,
        timeout=PATIENCE,
        check=True,
    ).stdout
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", exported, re.MULTILINE))
    section = README.read_text(encoding="utf-8").split("### Prometheus", 1)[1]
    table = dict(re.findall(r"^\| `(runpod\.[\w.]+)` \| `(runpod_\w+)`", section, re.MULTILINE))

    assert {name for name, *_ in METRICS.values()} == set(table)
    assert set(kinds) == set(table.values())
    for otel_name, prometheus_name in table.items():
        assert prometheus_name.startswith(otel_name.replace(".", "_"))
        assert prometheus_name.endswith("_total") == ("counter" == kinds[prometheus_name])
