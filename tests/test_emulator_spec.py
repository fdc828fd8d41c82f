"""The emulator's REST v2 routes answer as RunPod's published OpenAPI document says.

schemathesis generates requests from ``tests/data/openapi-rest-v2.json`` (a copy of
RunPod's document, so that the tests need nothing outside the repository) for the
operations the emulator serves, and checks each answer's status code, content type and
body against the document: ``application/problem+json`` bodies for 401 and 403
included. Routes the emulator does not serve are listed in the README.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

SPEC = Path(__file__).parent / "data" / "openapi-rest-v2.json"
# What the emulator serves of REST v2: pods, listed, created, read and deleted.
SERVED = {
    ("GET", "/v2/pods"),
    ("POST", "/v2/pods"),
    ("GET", "/v2/pods/{id}"),
    ("DELETE", "/v2/pods/{id}"),
}
# Minimal stand-ins for the runpod SDK 2.x's API functions: they echo what they are sent.
# Their auth answers are held to the document (below); their bodies are not.
SDK_STAND_INS = {
    ("POST", "/v2/pods/{id}/action"),
    ("GET", "/v2/catalog/gpus"),
    ("POST", "/v2/templates"),
    ("GET", "/v2/templates/{id}"),
    ("GET", "/v2/serverless"),
    ("POST", "/v2/serverless"),
    ("PATCH", "/v2/serverless/{id}"),
    ("POST", "/v2/registries"),
    ("DELETE", "/v2/registries/{id}"),
    ("PUT", "/v2/account/ssh-keys"),
}
CONFORMANCE = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.not_a_server_error,
]

schema = (
    schemathesis.openapi.from_dict(json.loads(SPEC.read_text(encoding="utf-8")))
    .include(path_regex=r"^/v2/pods(/\{id\})?$")
    .exclude(method="PATCH")
)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_checked_operations_are_the_served_ones():
    """The property test below covers exactly the operations the emulator serves."""
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}

    assert SERVED == operations


@schema.parametrize()
@settings(
    # Bounded and repeatable: a few seconds per run, the same examples on every machine.
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_answers_conform_to_runpods_document(case, runpod_emulator):
    """With a valid key, every generated request gets an answer the document allows."""
    response = case.call(base_url=runpod_emulator.url, headers=bearer(runpod_emulator.api_key))

    case.validate_response(response, checks=CONFORMANCE)


def refused(method: str, path: str, key: str, emulator) -> tuple:
    """Send a well-formed request for *method* *path* with *key*; return (case, response)."""
    case = schema[path][method].Case(
        path_parameters={"id": "pod_abc123"} if "{id}" in path else None
    )
    if method == "POST":
        case.body = {"name": "p", "image": "img", "gpu": {"id": "NVIDIA GeForce RTX 4090"}}
    return case, case.call(base_url=emulator.url, headers=bearer(key))


@pytest.mark.parametrize(("method", "path"), sorted(SERVED))
def test_rejected_key_gets_the_documented_401(method, path, runpod_emulator):
    """A revoked key: 401, application/problem+json, an ErrorResponse body, on every route."""
    key = runpod_emulator.api_key
    runpod_emulator.revoke(key)

    case, response = refused(method, path, key, runpod_emulator)

    assert (401, 401) == (response.status_code, response.json()["status"])
    assert "application/problem+json" == response.headers["content-type"][0]
    case.validate_response(response, checks=CONFORMANCE)


@pytest.mark.parametrize(("method", "path"), [("POST", "/v2/pods"), ("DELETE", "/v2/pods/{id}")])
def test_read_only_key_gets_the_documented_403_on_writes(method, path, runpod_emulator):
    """A read-only key writing: 403, application/problem+json, an ErrorResponse body."""
    key = runpod_emulator.add_key(scope="read")

    case, response = refused(method, path, key, runpod_emulator)

    assert (403, 403) == (response.status_code, response.json()["status"])
    assert "application/problem+json" == response.headers["content-type"][0]
    case.validate_response(response, checks=CONFORMANCE)


def all_operations() -> list[tuple[str, str]]:
    document = json.loads(SPEC.read_text(encoding="utf-8"))
    methods = {"get", "put", "post", "patch", "delete"}
    return sorted(
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [op for op in all_operations() if op not in SERVED and op not in SDK_STAND_INS],
    ids=" ".join,
)
def test_routes_not_served_say_so(method, path, runpod_emulator):
    """Every other operation of the document gets 404 or 405, never a made-up success.

    If this fails, the emulator serves a new route: add it to SERVED (so that it is held
    to the document) and take it off the README's list of routes it does not serve.
    """
    url = runpod_emulator.url + path.replace("{id}", "x1").replace("{workerId}", "w1")

    response = httpx.request(
        method,
        url,
        headers=bearer(runpod_emulator.api_key),
        json={} if method in ("POST", "PUT", "PATCH") else None,
    )

    assert response.status_code in (404, 405)


@pytest.mark.parametrize(("method", "path"), sorted(SDK_STAND_INS), ids=" ".join)
def test_sdk_stand_ins_reject_keys_as_documented(method, path, runpod_emulator):
    """The SDK's stand-in routes answer a revoked key with the documented problem+json 401."""
    key = runpod_emulator.api_key
    runpod_emulator.revoke(key)
    url = runpod_emulator.url + path.replace("{id}", "x1")

    response = httpx.request(method, url, headers=bearer(key), json={})

    assert (401, "application/problem+json") == (
        response.status_code,
        response.headers["content-type"],
    )
