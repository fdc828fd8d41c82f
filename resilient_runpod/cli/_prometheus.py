"""``--metrics-port``: the library's metrics served for Prometheus while a command runs.

Set up as an application would: the OpenTelemetry SDK's meter provider, made the global
one and read by OpenTelemetry's Prometheus exporter, whose registry prometheus_client
serves over HTTP. The library's built-in subscriber records through the global provider,
so nothing in the library knows about Prometheus, and what is served here is what an
application's own setup would serve.

Needs the ``prometheus`` extra, imported only when the flag is given.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["INSTALL", "LOOPBACK", "CannotServeError", "serving"]

LOOPBACK = "127.0.0.1"
"""Where the metrics are served: this machine only, as the demo's emulator is."""

INSTALL = "pip install 'resilient-runpod[prometheus]'"
"""The command that brings what `serving` needs."""


class CannotServeError(Exception):
    """The metrics cannot be served; the message says why and what to do (a usage error)."""


@contextmanager
def serving(port: int) -> Iterator[str]:
    """Serve the library's metrics on ``LOOPBACK:port`` until the block ends; yield the URL.

    Port 0 picks a free one: the URL names the port picked. The global meter provider is
    set before the block runs, so every event after it (the first `Credentials` made in
    the block included) is counted.

    Raises:
        CannotServeError: the ``prometheus`` extra is missing, *port* cannot be listened
            on, or the process already has a global meter provider of its own.

    """
    try:
        # Imported here: the flag, not the command, pays for OpenTelemetry's SDK.
        from opentelemetry import metrics  # noqa: PLC0415
        from opentelemetry.exporter.prometheus import PrometheusMetricReader  # noqa: PLC0415
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from prometheus_client import start_http_server  # noqa: PLC0415
    except ImportError as exc:
        missing = f" ({exc.name} is missing)" if exc.name else ""
        raise CannotServeError(
            f"--metrics-port needs OpenTelemetry's Prometheus exporter{missing}: {INSTALL}"
        ) from None
    try:
        # Listening comes first: a busy port then leaves the process as it found it.
        server, thread = start_http_server(port, addr=LOOPBACK)
    except OSError as exc:
        raise CannotServeError(
            f"--metrics-port {port}: cannot listen on {LOOPBACK}:{port} "
            f"({exc.strerror or exc}); choose another port, or 0 for a free one"
        ) from None
    provider = MeterProvider(metric_readers=[PrometheusMetricReader()])
    try:
        # OpenTelemetry lets the global provider be set once: a provider set before
        # (by `opentelemetry-instrument`, say) keeps the metrics, and nothing would come here.
        metrics.set_meter_provider(provider)
        if metrics.get_meter_provider() is not provider:
            raise CannotServeError(
                "--metrics-port: this process already has an OpenTelemetry meter provider, "
                "which receives the metrics; serve them from there, or run without it"
            )
        # Said from the socket itself: the address it listens on, the port it was given.
        host, bound = server.socket.getsockname()[:2]
        yield f"http://{host}:{bound}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
        provider.shutdown()
