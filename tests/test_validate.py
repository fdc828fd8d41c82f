"""`validate`: what RunPod's answer to ``myself { id }`` says about a key, whatever its shape.

``validate()`` never raises for an answer: what cannot be read as GraphQL says nothing
about the key, so it is ``UNREACHABLE`` with the reason in ``detail``.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

from resilient_runpod import Credentials
from resilient_runpod._validate import KeyStatus, _interpret, validate

from .helpers import make_key, serving

URL = "https://api.runpod.io/graphql"


def answer(body: object, status: int = 200) -> httpx.Response:
    """RunPod's answer with *body* as JSON."""
    return httpx.Response(status, json=body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"errors": {"message": "Unauthorized"}}, KeyStatus.UNREACHABLE),
        ({"errors": "Unauthorized"}, KeyStatus.UNREACHABLE),
        ({"errors": ["Unauthorized"]}, KeyStatus.UNREACHABLE),
        ({"errors": [{"message": "Unauthorized"}, "x"]}, KeyStatus.UNREACHABLE),
        ([{"data": {"myself": {"id": "u1"}}}], KeyStatus.UNREACHABLE),
        ("accepted", KeyStatus.UNREACHABLE),
        (None, KeyStatus.UNREACHABLE),
        ({"data": []}, KeyStatus.UNREACHABLE),
        ({}, KeyStatus.UNREACHABLE),
        ({"errors": [{"message": "Unauthorized"}], "data": None}, KeyStatus.FORBIDDEN),
        ({"errors": [{"message": "Internal"}], "data": None}, KeyStatus.UNREACHABLE),
        ({"errors": [], "data": {"myself": {"id": "u1"}}}, KeyStatus.ACCEPTED),
        ({"errors": None, "data": {"myself": {"id": "u1"}}}, KeyStatus.ACCEPTED),
        ({"data": {"myself": None}}, KeyStatus.REJECTED),
    ],
)
def test_every_shape_of_answer_gets_a_status_and_none_raises(body, expected):
    """Malformed ``errors`` (not a non-empty list of objects) and bodies that are not a
    GraphQL object are UNREACHABLE; well-formed answers keep their meaning."""
    assert expected == _interpret(make_key(), URL, answer(body)).status


def test_a_body_that_is_not_an_object_says_so():
    """A JSON list is not read as "RunPod did not recognise the key": the detail says why."""
    validation = _interpret(make_key(), URL, answer([]))
    assert (KeyStatus.UNREACHABLE, "the answer was JSON but not a GraphQL object") == (
        validation.status,
        validation.detail,
    )


def test_json_nested_too_deep_to_parse_is_not_json():
    """A body nested deeper than the parser's recursion limit is UNREACHABLE, not a crash."""
    deep = httpx.Response(200, content=b"[" * 100_000 + b"]" * 100_000)
    assert KeyStatus.UNREACHABLE == _interpret(make_key(), URL, deep).status


class _ErrorsObject(BaseHTTPRequestHandler):
    """Answers every POST 200 with ``errors`` as an object instead of a list."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = json.dumps({"errors": {"message": "Unauthorized"}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- the stdlib's name
        """Quiet: a test server's access log is not the library's output."""


def test_validate_over_a_socket_reports_a_malformed_answer_as_unreachable():
    """Credentials.validate() against a real server answering ``{"errors": {...}}``
    returns UNREACHABLE instead of raising KeyError."""
    with serving(_ErrorsObject) as host:
        validation = Credentials(make_key(), hosts=[host]).validate(f"http://{host}")
    assert (KeyStatus.UNREACHABLE, "GraphQL's errors were not a list of objects") == (
        validation.status,
        validation.detail,
    )


def test_a_firewall_page_403_is_not_a_verdict_on_the_key():
    """A 403 with an HTML page (a firewall's) is UNREACHABLE; a JSON 403 stays FORBIDDEN."""
    page = httpx.Response(
        403,
        headers={"content-type": "text/html"},
        text="<!DOCTYPE html><html><body>Sorry, you have been blocked</body></html>",
    )
    api = answer({"errors": [{"message": "forbidden"}]}, 403)

    blocked = _interpret(make_key(), URL, page)

    assert KeyStatus.UNREACHABLE == blocked.status
    assert "a firewall or proxy in front of RunPod refused the request" in blocked.detail
    assert KeyStatus.FORBIDDEN == _interpret(make_key(), URL, api).status


def test_a_check_slower_than_its_timeout_finds_runpod_unreachable(runpod_emulator):
    """``timeout`` bounds the check (a prompt passes what is left of its deadline): a slow
    RunPod is UNREACHABLE, which is no verdict on the key."""
    runpod_emulator.set_latency(5.0)

    validation = validate(runpod_emulator.api_key, runpod_emulator.api_url, timeout=0.2)

    assert (KeyStatus.UNREACHABLE, "ReadTimeout") == (validation.status, validation.detail)
