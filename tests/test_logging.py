"""The library's events reach the application's logging; no key reaches any log line."""

from __future__ import annotations

import logging
import subprocess
import sys

import httpx
import pytest
import structlog
from structlog.testing import capture_logs

from resilient_runpod import scrub_secrets
from resilient_runpod._logging import remember_key

from .helpers import make_key


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
    remember_key(key)
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200)))

    with caplog.at_level(logging.INFO, logger="httpx"):
        client.get(f"https://api.runpod.io/graphql?api_key={key}")

    messages = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert 1 == len(messages)
    assert key not in messages[0]


def test_a_recovered_401_is_two_events_with_fixed_names_and_fields(
    runpod_emulator, vault, credentials
):
    """A real 401 recovered through the transport makes the library emit, in order,
    ``runpod.auth.rejected`` (warning) for the send and for its probe, then
    ``runpod.auth.recovered`` (info): fixed dotted names whose facts are fields,
    fingerprints only, never the key.
    """
    from resilient_runpod import ResilientTransport, fingerprint

    old = vault.key
    new = vault.rotate()
    url = f"{runpod_emulator.serverless_url}/ep/health"

    with (
        capture_logs() as logs,
        httpx.Client(transport=ResilientTransport(credentials)) as client,
    ):
        status = client.get(url).status_code

    auth = [e for e in logs if e["event"].startswith("runpod.auth.")]
    assert 200 == status
    assert ["runpod.auth.rejected", "runpod.auth.rejected", "runpod.auth.recovered"] == [
        e["event"] for e in auth
    ]
    rejected, probed, recovered = auth
    assert (2, fingerprint(old)) == (probed["attempt"], probed["fingerprint"])
    assert {
        "event": "runpod.auth.rejected",
        "log_level": "warning",
        "method": "GET",
        "url": url,
        "status": 401,
        "attempt": 1,
        "fingerprint": fingerprint(old),
    } == rejected
    assert ("info", "vault", fingerprint(old), fingerprint(new)) == (
        recovered["log_level"],
        recovered["hook"],
        recovered["rejected"],
        recovered["fingerprint"],
    )
    assert old not in repr(logs)
    assert new not in repr(logs)


def _rejected_once(emulator) -> None:
    """One real 401 from the emulator through the transport: a runpod.auth.rejected event."""
    from resilient_runpod import AuthenticationError, Credentials, ResilientTransport

    credentials = Credentials(emulator.add_key(), lambda _: None, hosts=[emulator.host])
    emulator.revoke(credentials.api_key)
    with (
        httpx.Client(transport=ResilientTransport(credentials)) as client,
        pytest.raises(AuthenticationError),
    ):
        client.get(f"{emulator.serverless_url}/ep/health")


def test_without_structlog_configured_events_go_to_stdlib_logging(runpod_emulator, caplog):
    """structlog not configured: the event is a stdlib record on 'resilient_runpod', its
    name and fields on the record, its text rendered from them.
    """
    assert not structlog.is_configured()
    with caplog.at_level(logging.WARNING, logger="resilient_runpod"):
        _rejected_once(runpod_emulator)

    records = [r for r in caplog.records if getattr(r, "event", None) == "runpod.auth.rejected"]
    assert 2 == len(records)  # the send, and its probe
    assert "resilient_runpod" == records[0].name
    assert logging.WARNING == records[0].levelno
    assert 401 == records[0].fields["status"]
    assert records[0].getMessage().startswith("runpod.auth.rejected method=GET url=")


def test_unconfigured_logging_prints_nothing(runpod_emulator, capfd):
    """With neither structlog nor stdlib logging configured, a rejection prints nothing
    on stdout or stderr (structlog's defaults would print it on stdout).
    """
    _rejected_once(runpod_emulator)
    assert ("", "") == capfd.readouterr()


def test_the_stdlib_logger_level_silences_the_events(runpod_emulator, caplog):
    """logging.getLogger("resilient_runpod").setLevel(...) is how an application quiets them."""
    caplog.set_level(logging.DEBUG)
    _rejected_once(runpod_emulator)
    heard = [r for r in caplog.records if r.name == "resilient_runpod"]
    caplog.clear()
    logging.getLogger("resilient_runpod").setLevel(logging.CRITICAL)
    try:
        _rejected_once(runpod_emulator)
    finally:
        logging.getLogger("resilient_runpod").setLevel(logging.NOTSET)
    assert [] == [r for r in caplog.records if r.name == "resilient_runpod"]
    # It was not silent before: the send's and the probe's 401, the flight's verdict, the
    # request's end.
    assert [
        "runpod.auth.rejected",
        "runpod.auth.rejected",
        "runpod.auth.never_accepted",
        "runpod.auth.recovery_failed",
    ] == [r.event for r in heard if r.event.startswith("runpod.auth.")]  # type: ignore[attr-defined]


def test_with_structlog_configured_events_go_through_its_processors(runpod_emulator, caplog):
    """structlog configured: the event goes through its chain, not through stdlib logging."""
    with caplog.at_level(logging.DEBUG), capture_logs() as events:
        _rejected_once(runpod_emulator)
    assert ["runpod.auth.rejected"] * 2 == [
        e["event"] for e in events if e["log_level"] == "warning"
    ]
    assert [] == [r for r in caplog.records if r.name == "resilient_runpod"]


class _Holder:
    """An object whose repr shows what it holds, as careless classes do."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

    def __repr__(self) -> str:
        return f"_Holder({self.secret})"


def test_scrub_secrets_cleans_bytes_sets_and_reprs():
    """Keys in bytes, sets and objects whose repr shows them are removed too."""
    key = make_key()
    event = {
        "event": "call",
        "body": f'{{"token": "{key}"}}'.encode(),
        "seen": {key},
        "frozen": frozenset({key}),
        "holder": _Holder(key),
        "plain": b"no secret here",
    }

    scrubbed = scrub_secrets(None, "info", event)

    assert key not in repr(scrubbed)
    assert isinstance(scrubbed["body"], bytes)
    assert {f"rpa_…{key[-4:]}"} == scrubbed["seen"]
    assert isinstance(scrubbed["frozen"], frozenset)
    assert f"_Holder(rpa_…{key[-4:]})" == scrubbed["holder"]
    assert b"no secret here" == scrubbed["plain"]


def test_scrub_secrets_before_format_exc_info_cleans_the_traceback():
    """Placed before format_exc_info, it still keeps a key out of the rendered traceback."""
    key = make_key()
    seen: list[str] = []
    structlog.configure(
        processors=[
            scrub_secrets,
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(),
        ],
        logger_factory=lambda *_: _ListLogger(seen),
    )

    try:
        raise ValueError(f"token {key} refused")  # noqa: TRY301 -- a real exc_info
    except ValueError:
        structlog.get_logger().info("failed", exc_info=True)

    assert 1 == len(seen)
    assert key not in seen[0]
    assert "ValueError: token rpa_…" in seen[0]


def test_child_loggers_created_later_are_guarded_at_the_next_key(caplog):
    """A logger of a guarded library that did not exist at the first key is covered once
    a new key is held; records from it carry no key.
    """
    name = "httpcore.made_later_" + make_key()[-6:]
    assert name not in logging.Logger.manager.loggerDict
    child = logging.getLogger(name)
    key = make_key()
    remember_key(key)

    with caplog.at_level(logging.DEBUG, logger=name):
        child.debug("header %r", (b"x-echo", key.encode()))

    assert [f"header (b'x-echo', b'rpa_…{key[-4:]}')"] == [r.getMessage() for r in caplog.records]


def test_importing_the_library_changes_no_logging():
    """Importing the package and its adapters, or building an adapter over a Credentials
    without a key, attaches no filter and no handler anywhere.
    """
    code = (
        "import logging, resilient_runpod, resilient_runpod.adapters\n"
        "from resilient_runpod import Credentials, ResilientTransport\n"
        "ResilientTransport(Credentials(recovery=lambda context: None))\n"
        "names = ['', 'httpx', 'httpcore', 'httpcore.http11', 'urllib3']\n"
        "print([(n, logging.getLogger(n).filters, logging.getLogger(n).handlers) for n in names])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    names = ["", "httpx", "httpcore", "httpcore.http11", "urllib3"]
    assert repr([(name, [], []) for name in names]) == done.stdout.strip()


def test_a_broken_log_call_elsewhere_is_not_turned_into_an_exception(monkeypatch):
    """A guarded library's record whose arguments do not fit its format still reaches the
    handlers (which report it) instead of raising out of the library's log call.
    """
    remember_key(make_key())
    reached: list[tuple[object, object]] = []
    handler = logging.Handler()
    handler.emit = lambda record: reached.append((record.msg, record.args))  # type: ignore[method-assign]
    child = logging.getLogger("httpcore.http11")
    monkeypatch.setattr(child, "propagate", False)  # pytest's own handler would raise
    monkeypatch.setattr(child, "level", logging.DEBUG)
    child.addHandler(handler)
    try:
        child.debug("%s and %s", "only one")
    finally:
        child.removeHandler(handler)

    assert [("%s and %s", ("only one",))] == reached
