from __future__ import annotations

import logging

import httpx
import structlog
from structlog.testing import capture_logs

from resilient_runpod import scrub_secrets
from resilient_runpod._logging import install_httpx_filter, remember_key

from .conftest import make_key


def test_scrub_secrets_removes_keys_everywhere():
    """Keys in the event, in nested fields and in secret-named fields are all removed."""
    key = make_key()
    event = {
        "event": f"using {key}",
        "headers": {"Authorization": f"Bearer {key}"},
        "api_key": key,
        "urls": [f"https://api.runpod.io/graphql?api_key={key}"],
        "count": 3,
    }

    scrubbed = scrub_secrets(None, "info", event)

    assert key not in repr(scrubbed)
    assert 3 == scrubbed["count"]
    assert "rpa_…" in scrubbed["event"]


def test_scrub_secrets_removes_remembered_legacy_keys():
    """A key without the rpa_ prefix is removed once a Credentials has held it."""
    legacy = "legacy0123456789abcdefghijkl"
    remember_key(legacy)

    scrubbed = scrub_secrets(None, "info", {"event": f"token is {legacy}"})

    assert legacy not in scrubbed["event"]


def test_scrub_secrets_works_in_a_structlog_chain():
    """Added to a real processor chain, it cleans what the renderer sees."""
    key = make_key()
    seen: list[str] = []
    structlog.configure(
        processors=[scrub_secrets, structlog.processors.KeyValueRenderer()],
        logger_factory=lambda *_: _ListLogger(seen),
    )

    structlog.get_logger().info("call", url=f"https://x?api_key={key}", note=key)

    assert 1 == len(seen)
    assert key not in seen[0]


class _ListLogger:
    def __init__(self, sink: list[str]) -> None:
        self.sink = sink

    def info(self, message: str) -> None:
        self.sink.append(message)


def test_httpx_log_line_carries_no_key(caplog):
    """httpx's own INFO line ("HTTP Request: GET ...?api_key=...") is scrubbed."""
    key = make_key()
    install_httpx_filter()
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))

    with caplog.at_level(logging.INFO, logger="httpx"):
        client.get(f"https://api.runpod.io/graphql?api_key={key}")

    messages = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert 1 == len(messages)
    assert key not in messages[0]


def test_events_have_fixed_names():
    """The library's events are fixed dotted names, with fields, not formatted messages."""
    from resilient_runpod._logging import logger

    with capture_logs() as logs:
        logger.warning("runpod.auth.rejected", status=401)

    assert [{"event": "runpod.auth.rejected", "status": 401, "log_level": "warning"}] == logs
