"""The RunPod emulator: its surfaces, its controls, its fixture and its CLI, over real sockets."""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
import pytest

import resilient_runpod.testing
from resilient_runpod._keys import fingerprint, shape_problems
from resilient_runpod.testing import Emulator

from .helpers import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytest_plugins = ["pytester"]

ENDPOINT = "demo-endpoint"
PROBLEM_401 = {"title": "Unauthorized", "status": 401, "detail": "missing bearer token"}
PROBLEM_403 = {"title": "Forbidden", "status": 403, "detail": "access denied"}
MYSELF = "query { myself { id } }"


# Long enough that a parked request is never answered while its test runs.
PARKED = 60.0


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def emu(runpod_emulator: Emulator) -> Emulator:
    return runpod_emulator


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emu.url) as client:
        yield client


@pytest.fixture
def read_key(emu: Emulator) -> str:
    return emu.add_key(scope="read")


def run_job(client: httpx.Client, key: str, job_input: object) -> str:
    response = client.post(f"/v2/{ENDPOINT}/run", json={"input": job_input}, headers=bearer(key))
    assert 200 == response.status_code
    job_id: str = response.json()["id"]
    return job_id


# -- construction and addresses ------------------------------------------------------------


def test_default_key_has_runpods_shape_and_stays_out_of_repr(emu: Emulator) -> None:
    """Without keys, the emulator makes one shaped like an rpa_ key; repr shows its fingerprint."""
    key = emu.api_key

    assert [] == shape_problems(key)
    assert f"<Emulator {emu.url} keys=['{fingerprint(key)}']>" == repr(emu)
    assert key not in repr(emu)


def test_addresses_derive_from_the_bound_port(emu: Emulator) -> None:
    """The URL properties name the real port and what each SDK variable should hold."""
    port = int(emu.url.rsplit(":", 1)[1])

    assert f"127.0.0.1:{port}" == emu.host
    assert f"http://127.0.0.1:{port}/v2" == emu.serverless_url
    assert emu.url == emu.api_url
    assert f"http://127.0.0.1:{port}/graphql" == emu.graphql_url
    assert {
        "RUNPOD_ENDPOINT_BASE_URL": emu.serverless_url,
        "RUNPOD_API_BASE_URL": emu.url,
    } == emu.sdk_env
    assert ENDPOINT == emu.endpoint_id


def test_an_emulator_not_started_has_no_address() -> None:
    """Asking a stopped emulator where it is raises instead of returning a dead URL."""
    with pytest.raises(RuntimeError, match="not running"):
        _ = Emulator().url


def test_a_single_string_is_not_taken_for_a_list_of_keys() -> None:
    """Emulator("rpa_...") would register one key per character; it is refused."""
    with pytest.raises(TypeError, match="collection of keys"):
        Emulator("rpa_KEY")  # type: ignore[arg-type]


def test_context_manager_serves_inside_and_stops_after() -> None:
    """`with Emulator(keys=[...])` serves the given key and frees the port on exit."""
    key = "legacy-key-without-prefix-0123456789"
    with Emulator(keys=[key]) as emu:
        url = f"{emu.serverless_url}/any-endpoint/health"
        assert 200 == httpx.get(url, headers=bearer(key)).status_code

    with pytest.raises(httpx.ConnectError):
        httpx.get(url, headers=bearer(key))


def test_a_port_in_use_fails_start_with_oserror(emu: Emulator) -> None:
    """start() on a port another server holds raises OSError instead of hanging."""
    port = int(emu.url.rsplit(":", 1)[1])

    with pytest.raises(OSError, match=f"could not listen on 127.0.0.1:{port}"):
        Emulator(port=port).start()


def test_missing_server_dependencies_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without uvicorn, constructing an Emulator names the extra to install."""
    monkeypatch.setitem(sys.modules, "uvicorn", None)

    with pytest.raises(ImportError, match=re.escape("pip install 'resilient-runpod[emulator]'")):
        Emulator()


def test_testing_exports_are_sorted_and_documented() -> None:
    """`resilient_runpod.testing.__all__` is sorted and each class in it has a docstring."""
    names = resilient_runpod.testing.__all__
    classes = [getattr(resilient_runpod.testing, n) for n in names]

    assert sorted(names) == names
    assert [] == [c for c in classes if inspect.isclass(c) and not c.__doc__]


# -- serverless ----------------------------------------------------------------------------


def test_run_is_queued_then_completes_at_the_first_status_check(
    emu: Emulator, client: httpx.Client
) -> None:
    """/run answers IN_QUEUE; /status then finds COMPLETED with the echoed input and timings."""
    response = client.post(
        f"/v2/{ENDPOINT}/run", json={"input": {"n": 1}}, headers=bearer(emu.api_key)
    )
    job_id = response.json()["id"]

    assert {"id": job_id, "status": "IN_QUEUE"} == response.json()
    status = client.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=bearer(emu.api_key)).json()
    assert ("COMPLETED", {"echo": {"n": 1}}) == (status["status"], status["output"])
    assert {"id", "status", "output", "delayTime", "executionTime"} <= status.keys()


def test_runsync_answers_with_the_output(emu: Emulator, client: httpx.Client) -> None:
    """/runsync completes the job within the request."""
    body = client.post(
        f"/v2/{ENDPOINT}/runsync", json={"input": [1, 2]}, headers=bearer(emu.api_key)
    ).json()

    assert ("COMPLETED", {"echo": [1, 2]}) == (body["status"], body["output"])
    assert {"id", "status", "output", "delayTime", "executionTime"} <= body.keys()


def test_job_seconds_keeps_jobs_in_progress(emu: Emulator, client: httpx.Client) -> None:
    """With job_seconds set, checks see IN_PROGRESS, and runsync's wait ends with {id, status}."""
    emu.job_seconds = 3600
    job_id = run_job(client, emu.api_key, {})

    status = client.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=bearer(emu.api_key)).json()
    assert {"id": job_id, "status": "IN_PROGRESS"} == status
    sync = client.post(
        f"/v2/{ENDPOINT}/runsync",
        params={"wait": 0},
        json={"input": {}},
        headers=bearer(emu.api_key),
    ).json()
    assert {"id", "status"} == sync.keys()
    assert "IN_PROGRESS" == sync["status"]


def test_failing_input_fails_and_can_be_retried(emu: Emulator, client: httpx.Client) -> None:
    """Input {"fail": true} ends FAILED with an error; /retry queues it again; health counts it."""
    job_id = run_job(client, emu.api_key, {"fail": True})
    status_url = f"/v2/{ENDPOINT}/status/{job_id}"

    failed = client.get(status_url, headers=bearer(emu.api_key)).json()
    retried = client.post(f"/v2/{ENDPOINT}/retry/{job_id}", headers=bearer(emu.api_key))

    assert ("FAILED", True) == (failed["status"], bool(failed["error"]))
    assert {"id": job_id, "status": "IN_QUEUE"} == retried.json()
    assert "FAILED" == client.get(status_url, headers=bearer(emu.api_key)).json()["status"]
    health = client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key)).json()
    assert 1 == health["jobs"]["retried"]


def test_retry_refuses_a_job_that_did_not_fail(emu: Emulator, client: httpx.Client) -> None:
    """/retry of a COMPLETED job is a 400 with a JSON error."""
    job_id = run_job(client, emu.api_key, {})
    client.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=bearer(emu.api_key))

    response = client.post(f"/v2/{ENDPOINT}/retry/{job_id}", headers=bearer(emu.api_key))

    assert 400 == response.status_code
    assert "COMPLETED" in response.json()["error"]


def test_stream_hands_out_the_output_once(emu: Emulator, client: httpx.Client) -> None:
    """/stream returns the output as one chunk, then empty chunks: the SDK's loop can end."""
    job_id = run_job(client, emu.api_key, "hi")
    url = f"/v2/{ENDPOINT}/stream/{job_id}"

    first = client.get(url, headers=bearer(emu.api_key)).json()
    second = client.get(url, headers=bearer(emu.api_key)).json()

    assert {"status": "COMPLETED", "stream": [{"output": {"echo": "hi"}}]} == first
    assert {"status": "COMPLETED", "stream": []} == second


def test_cancel_stops_a_queued_job(emu: Emulator, client: httpx.Client) -> None:
    """/cancel of a job nobody has looked at yet answers CANCELLED, and the job stays so."""
    job_id = run_job(client, emu.api_key, {})

    response = client.post(f"/v2/{ENDPOINT}/cancel/{job_id}", headers=bearer(emu.api_key))

    assert {"id": job_id, "status": "CANCELLED"} == response.json()
    status = client.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=bearer(emu.api_key)).json()
    assert "CANCELLED" == status["status"]


def test_purge_queue_removes_queued_jobs(emu: Emulator, client: httpx.Client) -> None:
    """/purge-queue removes the jobs still queued; their ids are then unknown (404)."""
    job_ids = [run_job(client, emu.api_key, {}) for _ in range(2)]

    response = client.post(f"/v2/{ENDPOINT}/purge-queue", headers=bearer(emu.api_key))

    assert {"removed": 2, "status": "completed"} == response.json()
    statuses = [
        client.get(f"/v2/{ENDPOINT}/status/{j}", headers=bearer(emu.api_key)).status_code
        for j in job_ids
    ]
    assert [404, 404] == statuses


def test_health_reports_jobs_and_workers(emu: Emulator, client: httpx.Client) -> None:
    """/health has RunPod's job counts and worker counts, per endpoint."""
    run_job(client, emu.api_key, {})

    body = client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key)).json()

    assert {"completed": 0, "failed": 0, "inProgress": 0, "inQueue": 1, "retried": 0} == body[
        "jobs"
    ]
    assert {"idle", "running", "initializing", "ready", "throttled", "unhealthy"} == body[
        "workers"
    ].keys()


def test_unknown_job_is_404(emu: Emulator, client: httpx.Client) -> None:
    """A job id the endpoint never issued is a 404 with a JSON error."""
    response = client.get(f"/v2/{ENDPOINT}/status/no-such-job", headers=bearer(emu.api_key))

    assert 404 == response.status_code
    assert "error" in response.json()


@pytest.mark.parametrize(
    "content", [b"{}", b'{"webhook": "https://example.invalid"}', b"not json", b""]
)
def test_a_job_without_input_is_400(emu: Emulator, client: httpx.Client, content: bytes) -> None:
    """/run needs a JSON body with "input"; anything else is a 400 with a JSON error."""
    response = client.post(f"/v2/{ENDPOINT}/run", content=content, headers=bearer(emu.api_key))

    assert 400 == response.status_code
    assert "error" in response.json()


@pytest.mark.parametrize("scheme", ["Bearer ", ""], ids=["bearer", "bare"])
def test_serverless_takes_bearer_and_bare_keys(
    emu: Emulator, client: httpx.Client, scheme: str
) -> None:
    """Serverless accepts both `Authorization: Bearer KEY` and `Authorization: KEY`."""
    response = client.get(
        f"/v2/{ENDPOINT}/health", headers={"Authorization": f"{scheme}{emu.api_key}"}
    )

    assert 200 == response.status_code


@pytest.mark.parametrize("case", ["missing", "invalid", "revoked"])
def test_serverless_rejects_unusable_keys_with_401(
    emu: Emulator, client: httpx.Client, case: str
) -> None:
    """No key, an unknown key and a revoked key all get 401 with a JSON error."""
    key = emu.add_key()
    if case == "revoked":
        emu.revoke(key)
    headers = {"missing": {}, "invalid": bearer(key + "x"), "revoked": bearer(key)}[case]

    response = client.post(f"/v2/{ENDPOINT}/run", json={"input": {}}, headers=headers)

    assert (401, {"error": "Unauthorized"}) == (response.status_code, response.json())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/run"),
        ("POST", "/runsync"),
        ("POST", "/cancel/JOB"),
        ("POST", "/retry/JOB"),
        ("POST", "/purge-queue"),
    ],
)
def test_read_only_key_gets_403_on_writes(
    emu: Emulator, client: httpx.Client, read_key: str, method: str, path: str
) -> None:
    """A read-scope key is valid (no 401) but may not run, cancel, retry or purge: 403."""
    job_id = run_job(client, emu.api_key, {})
    url = f"/v2/{ENDPOINT}{path.replace('JOB', job_id)}"

    response = client.request(method, url, json={"input": {}}, headers=bearer(read_key))

    assert (403, {"error": "Forbidden"}) == (response.status_code, response.json())


@pytest.mark.parametrize("path", ["/status/JOB", "/stream/JOB", "/health"])
def test_read_only_key_may_read(
    emu: Emulator, client: httpx.Client, read_key: str, path: str
) -> None:
    """A read-scope key gets 200 on status, stream and health."""
    job_id = run_job(client, emu.api_key, {})

    response = client.get(f"/v2/{ENDPOINT}{path.replace('JOB', job_id)}", headers=bearer(read_key))

    assert 200 == response.status_code


# -- loading on first use ------------------------------------------------------------------

_FIRST_USE_SCRIPT = """
import json, sys
import httpx
from resilient_runpod.testing import Emulator

LAZY = ["_graphql", "_graphql_pods", "_pods", "_rest", "_rest_sdk"]

def loaded():
    return [name for name in LAZY if f"resilient_runpod.testing.{name}" in sys.modules]

seen = {}
with Emulator() as emu, httpx.Client(base_url=emu.url) as client:
    headers = {"Authorization": f"Bearer {emu.api_key}"}
    job = client.post(f"/v2/{emu.endpoint_id}/run", json={"input": {}}, headers=headers)
    seen["after serverless"] = (job.status_code, loaded())
    myself = client.post("/graphql", json={"query": "query { myself { id pods { id } } }"},
                         headers=headers)
    seen["after myself"] = (myself.json()["data"]["myself"]["pods"], loaded())
    body = {"name": "p", "image": "img", "gpu": {"id": "NVIDIA GeForce RTX 4090"}}
    created = client.post("/v2/pods", json=body, headers=headers).json()
    listed = client.get("/v2/pods", headers=headers).json()
    seen["after REST pods"] = ([created["id"]] == [p["id"] for p in listed["pods"]], loaded())
    query = 'query { pod(input: {podId: "%s"}) { name } }' % created["id"]
    pod = client.post("/graphql", json={"query": query}, headers=headers).json()
    seen["after GraphQL pod"] = (pod["data"]["pod"]["name"], loaded())
print(json.dumps(seen))
"""


def test_pod_and_graphql_surfaces_load_on_first_use() -> None:
    """Serverless traffic imports no pod or GraphQL module; each loads when a request needs it.

    In a fresh process, so that what other tests imported does not count.
    """
    result = subprocess.run(
        [sys.executable, "-c", _FIRST_USE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert 0 == result.returncode, result.stderr
    assert {
        "after serverless": [200, []],
        "after myself": [[], ["_graphql"]],
        "after REST pods": [True, ["_graphql", "_pods", "_rest", "_rest_sdk"]],
        "after GraphQL pod": ["p", ["_graphql", "_graphql_pods", "_pods", "_rest", "_rest_sdk"]],
    } == json.loads(result.stdout)


# -- GraphQL -------------------------------------------------------------------------------


def test_graphql_without_a_key_is_an_anonymous_200(client: httpx.Client) -> None:
    """No key at all: HTTP 200 with myself null, as RunPod answers."""
    response = client.post("/graphql", json={"query": MYSELF})

    assert (200, {"data": {"myself": None}}) == (response.status_code, response.json())


def test_graphql_rejects_an_invalid_key_with_401(emu: Emulator, client: httpx.Client) -> None:
    """An unknown or revoked key is an HTTP 401 from GraphQL."""
    key = emu.add_key()
    emu.revoke(key)

    statuses = [
        client.post("/graphql", json={"query": MYSELF}, headers=bearer(k)).status_code
        for k in (key, "rpa_not-a-key-at-all")
    ]

    assert [401, 401] == statuses


@pytest.mark.parametrize("how", ["bearer", "query"])
def test_graphql_takes_bearer_and_query_parameter_keys(
    emu: Emulator, client: httpx.Client, how: str
) -> None:
    """GraphQL accepts a Bearer header and the older ?api_key= parameter."""
    key = emu.api_key
    headers = bearer(key) if how == "bearer" else {}
    params = {"api_key": key} if how == "query" else {}

    response = client.post("/graphql", params=params, json={"query": MYSELF}, headers=headers)

    assert 200 == response.status_code
    assert response.json()["data"]["myself"]["id"].startswith("user-")


def test_graphql_reads_no_key_from_a_bare_header(emu: Emulator, client: httpx.Client) -> None:
    """A bare ``Authorization: KEY`` (serverless's other form) is no key to GraphQL: a
    working key sent so gets the anonymous answer, myself null, and a mutation is refused.
    """
    headers = {"Authorization": emu.api_key}
    terminate = 'mutation { podTerminate(input: {podId: "x"}) }'

    query = client.post("/graphql", json={"query": MYSELF}, headers=headers)
    mutation = client.post("/graphql", json={"query": terminate}, headers=headers)

    assert (200, {"data": {"myself": None}}) == (query.status_code, query.json())
    assert (200, {"errors": [{"message": "Unauthorized"}], "data": None}) == (
        mutation.status_code,
        mutation.json(),
    )


def test_myself_id_is_stable_per_key_and_hides_it(emu: Emulator, client: httpx.Client) -> None:
    """myself.id is the same for the same key, differs between keys, and shows no key text."""
    other = emu.add_key()

    def user_id(key: str) -> str:
        body = client.post("/graphql", json={"query": MYSELF}, headers=bearer(key)).json()
        return str(body["data"]["myself"]["id"])

    first, again, second = user_id(emu.api_key), user_id(emu.api_key), user_id(other)

    assert first == again
    assert first != second
    assert emu.api_key[-4:] not in first


def test_read_only_key_mutation_is_a_graphql_error(client: httpx.Client, read_key: str) -> None:
    """A read-scope key may query, but a mutation comes back 200 with errors: Unauthorized."""
    mutation = 'mutation { podTerminate(input: {podId: "x"}) }'

    query = client.post("/graphql", json={"query": MYSELF}, headers=bearer(read_key))
    mutate = client.post("/graphql", json={"query": mutation}, headers=bearer(read_key))

    assert 200 == query.status_code
    assert (200, {"errors": [{"message": "Unauthorized"}], "data": None}) == (
        mutate.status_code,
        mutate.json(),
    )


def test_graphql_deploys_and_lists_pods(emu: Emulator, client: httpx.Client) -> None:
    """podFindAndDeployOnDemand creates a pod that myself.pods and pod(...) then show."""
    mutation = (
        'mutation { podFindAndDeployOnDemand(input: { name: "trainer", imageName: "img:1", '
        'gpuTypeId: "NVIDIA GeForce RTX 4090", gpuCount: 2, '
        'env: [{ key: "A", value: "b" }] }) { id imageName env machine { podHostId } } }'
    )

    created = client.post("/graphql", json={"query": mutation}, headers=bearer(emu.api_key))
    pod = created.json()["data"]["podFindAndDeployOnDemand"]
    listed = client.post(
        "/graphql", json={"query": "query { myself { pods { id } } }"}, headers=bearer(emu.api_key)
    ).json()
    fetched = client.post(
        "/graphql",
        json={"query": f'query {{ pod(input: {{podId: "{pod["id"]}"}}) {{ id name }} }}'},
        headers=bearer(emu.api_key),
    ).json()

    assert ("img:1", ["A=b"], 2) == (pod["imageName"], pod["env"], pod["gpuCount"])
    assert [pod["id"]] == [p["id"] for p in listed["data"]["myself"]["pods"]]
    assert "trainer" == fetched["data"]["pod"]["name"]


# -- REST v2 -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "invalid", "revoked", "bare"])
def test_rest_rejects_with_problem_json_401(emu: Emulator, client: httpx.Client, case: str) -> None:
    """REST v2 wants `Bearer KEY`: anything else is a 401 application/problem+json."""
    key = emu.add_key()
    if case == "revoked":
        emu.revoke(key)
    headers = {
        "missing": {},
        "invalid": bearer("rpa_unknown-key-0000000000"),
        "revoked": bearer(key),
        "bare": {"Authorization": key},
    }[case]

    response = client.get("/v2/pods", headers=headers)

    assert 401 == response.status_code
    assert "application/problem+json" == response.headers["content-type"]
    assert PROBLEM_401 == response.json()


def test_rest_read_only_key_reads_but_may_not_write(
    emu: Emulator, client: httpx.Client, read_key: str
) -> None:
    """A read-scope key lists pods (200); creating and deleting are 403 problem+json."""
    body = {"name": "p", "image": "img", "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1}}

    listing = client.get("/v2/pods", headers=bearer(read_key))
    create = client.post("/v2/pods", json=body, headers=bearer(read_key))
    delete = client.delete("/v2/pods/some-pod", headers=bearer(read_key))

    assert 200 == listing.status_code
    for response in (create, delete):
        assert (403, PROBLEM_403) == (response.status_code, response.json())
        assert "application/problem+json" == response.headers["content-type"]


def test_rest_pod_lifecycle(emu: Emulator, client: httpx.Client) -> None:
    """POST creates (201, PROVISIONING), GET finds it, DELETE removes it (204, then 404)."""
    body = {"name": "p", "image": "img", "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1}}

    created = client.post("/v2/pods", json=body, headers=bearer(emu.api_key))
    pod_id = created.json()["id"]
    fetched = client.get(f"/v2/pods/{pod_id}", headers=bearer(emu.api_key))
    listing = client.get("/v2/pods", headers=bearer(emu.api_key)).json()
    deleted = client.delete(f"/v2/pods/{pod_id}", headers=bearer(emu.api_key))
    gone = client.get(f"/v2/pods/{pod_id}", headers=bearer(emu.api_key))

    assert (201, "PROVISIONING") == (created.status_code, created.json()["status"])
    assert (200, "RUNNING") == (fetched.status_code, fetched.json()["status"])
    assert [pod_id] == [p["id"] for p in listing["pods"]]
    assert (204, b"") == (deleted.status_code, deleted.content)
    assert (404, "Not Found") == (gone.status_code, gone.json()["title"])


def test_rest_validates_the_create_body(emu: Emulator, client: httpx.Client) -> None:
    """A create body without a name is a 422 problem listing what is wrong."""
    response = client.post(
        "/v2/pods", json={"image": "img", "cpu": {}}, headers=bearer(emu.api_key)
    )

    assert 422 == response.status_code
    assert ["$: missing property 'name'"] == response.json()["errors"]


def test_pods_is_not_a_serverless_endpoint_id(emu: Emulator, client: httpx.Client) -> None:
    """Everything under /v2/pods belongs to REST v2, even paths shaped like serverless ones."""
    run = client.post("/v2/pods/run", json={"input": {}}, headers=bearer(emu.api_key))
    health = client.get("/v2/pods/health", headers=bearer(emu.api_key))

    assert "application/problem+json" == run.headers["content-type"]
    assert (404, "pod not found") == (health.status_code, health.json()["detail"])


# -- keys ----------------------------------------------------------------------------------


def test_rotate_revokes_the_old_key_and_keeps_the_scope(
    emu: Emulator, client: httpx.Client, read_key: str
) -> None:
    """After rotate(), the old key gets 401 and the new one has the old one's scope."""
    new_key = emu.rotate(read_key)
    health = f"/v2/{ENDPOINT}/health"

    assert 401 == client.get(health, headers=bearer(read_key)).status_code
    assert 200 == client.get(health, headers=bearer(new_key)).status_code
    run = client.post(f"/v2/{ENDPOINT}/run", json={"input": {}}, headers=bearer(new_key))
    assert 403 == run.status_code


def test_keys_describe_without_values(emu: Emulator, read_key: str) -> None:
    """`keys` lists fingerprint, scope and state, never a key's value."""
    first = emu.api_key
    emu.revoke(first)

    infos = [(i.fingerprint, i.scope, i.active) for i in emu.keys]

    assert [(fingerprint(first), "all", False), (fingerprint(read_key), "read", True)] == infos
    assert first not in repr(emu.keys)


def test_add_key_registers_a_given_key(emu: Emulator, client: httpx.Client) -> None:
    """add_key(key) makes that exact key work."""
    key = emu.add_key("rpa_" + "K" * 40 + "abc123")

    assert 200 == client.get(f"/v2/{ENDPOINT}/health", headers=bearer(key)).status_code


def test_revoking_an_unknown_key_names_it_by_fingerprint(emu: Emulator) -> None:
    """revoke() of a key never added raises KeyError naming the fingerprint, not the key."""
    key = "rpa_" + "Z" * 40 + "secret"

    with pytest.raises(KeyError) as raised:
        emu.revoke(key)

    assert key not in str(raised.value)
    assert fingerprint(key) in str(raised.value)


# -- faults --------------------------------------------------------------------------------


def test_injected_401s_hit_the_next_requests_whatever_the_key(
    emu: Emulator, client: httpx.Client
) -> None:
    """inject(401, 2): the next two requests get 401 despite a valid key, the third passes."""
    emu.inject(401, count=2)

    statuses = [
        client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key)).status_code
        for _ in range(3)
    ]

    assert [401, 401, 200] == statuses


def test_injected_faults_look_like_the_surface_they_hit(
    emu: Emulator, client: httpx.Client
) -> None:
    """An injected 401 has the serverless, REST or GraphQL body that surface would send."""
    emu.inject(401, count=4)

    serverless = client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key))
    rest = client.get("/v2/pods", headers=bearer(emu.api_key))
    stand_in = client.get("/v2/catalog/gpus", headers=bearer(emu.api_key))
    graphql = client.post("/graphql", json={"query": MYSELF}, headers=bearer(emu.api_key))

    assert {"error": "Unauthorized"} == serverless.json()
    for response in (rest, stand_in):
        assert (PROBLEM_401, "application/problem+json") == (
            response.json(),
            response.headers["content-type"],
        )
    assert (401, "Unauthorized") == (graphql.status_code, graphql.json()["errors"][0]["message"])


def test_path_prefix_limits_where_a_fault_lands(emu: Emulator, client: httpx.Client) -> None:
    """A fault with a path_prefix waits for a matching request; others pass untouched."""
    emu.inject(503, path_prefix="/graphql")

    serverless = client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key))
    graphql = client.post("/graphql", json={"query": MYSELF}, headers=bearer(emu.api_key))

    assert (200, 503) == (serverless.status_code, graphql.status_code)


def test_injected_429_says_when_to_come_back(emu: Emulator, client: httpx.Client) -> None:
    """An injected 429 carries Retry-After."""
    emu.inject(429)

    response = client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key))

    assert (429, "1") == (response.status_code, response.headers["retry-after"])


def test_clear_faults_drops_pending_faults(emu: Emulator, client: httpx.Client) -> None:
    """clear_faults() cancels faults not yet delivered."""
    emu.inject(500, count=5)
    emu.clear_faults()

    assert 200 == client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key)).status_code


@pytest.mark.parametrize(("status", "count"), [(200, 1), (302, 1), (401, 0)])
def test_inject_refuses_what_is_not_a_fault(emu: Emulator, status: int, count: int) -> None:
    """Only HTTP error statuses, at least once, can be injected."""
    with pytest.raises(ValueError, match="must be"):
        emu.inject(status, count)


def test_latency_still_answers(emu: Emulator, client: httpx.Client) -> None:
    """With latency set, requests are delayed but answered normally."""
    emu.set_latency(0.01)

    assert 200 == client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key)).status_code


# -- counters ------------------------------------------------------------------------------


def test_counters_count_by_status_and_fingerprint_only(emu: Emulator, client: httpx.Client) -> None:
    """Counters group requests by status and by key fingerprint; no key value appears."""
    key = emu.api_key
    client.get(f"/v2/{ENDPOINT}/health", headers=bearer(key))
    client.get(f"/v2/{ENDPOINT}/health", headers={"Authorization": key})
    client.post("/graphql", params={"api_key": key}, json={"query": MYSELF})
    client.get(f"/v2/{ENDPOINT}/health")

    counters = emu.counters()

    assert 4 == counters.total
    assert {200: 3, 401: 1} == counters.by_status
    assert {fingerprint(key): 3, "<no key>": 1} == counters.by_key
    assert {fingerprint(key): {200: 3}, "<no key>": {401: 1}} == counters.by_key_status
    assert key not in repr(counters)
    assert key not in json.dumps(counters.to_json())


def test_reset_counters_starts_from_zero(emu: Emulator, client: httpx.Client) -> None:
    """reset_counters() forgets what was counted."""
    client.get(f"/v2/{ENDPOINT}/health")

    emu.reset_counters()

    assert 0 == emu.counters().total


# -- admin API -----------------------------------------------------------------------------


def test_admin_api_manages_keys(emu: Emulator, client: httpx.Client) -> None:
    """/_emulator/keys adds keys; revoke and rotate work over HTTP too."""
    added = client.post("/_emulator/keys", json={"scope": "read"}).json()
    rotated = client.post("/_emulator/keys/rotate", json={"key": added["key"]}).json()
    revoked = client.post("/_emulator/keys/revoke", json={"key": rotated["key"]})

    assert (fingerprint(added["key"]), "read") == (added["fingerprint"], added["scope"])
    assert added["fingerprint"] == rotated["revoked"]
    assert 200 == revoked.status_code
    assert [("all", True), ("read", False), ("read", False)] == [
        (i.scope, i.active) for i in emu.keys
    ]


def test_admin_api_controls_faults_latency_and_counters(
    emu: Emulator, client: httpx.Client
) -> None:
    """Faults, latency and counters are reachable over HTTP; admin calls are not counted."""
    client.post("/_emulator/faults", json={"status": 401, "count": 1, "path_prefix": None})
    client.post("/_emulator/latency", json={"seconds": 0.01})
    faulted = client.get(f"/v2/{ENDPOINT}/health", headers=bearer(emu.api_key))

    counters = client.get("/_emulator/counters").json()
    client.post("/_emulator/reset")

    assert 401 == faulted.status_code
    assert {"401": 1} == counters["by_status"]
    assert 1 == counters["total"]
    assert 0 == emu.counters().total


def test_admin_api_counts_the_requests_in_flight() -> None:
    """/_emulator/in_flight counts requests that arrived and are not answered yet, as
    Emulator.in_flight does; admin calls are not among them.

    An emulator of its own: the parked request stays in flight until the server stops.
    """

    def park(url: str) -> None:
        with contextlib.suppress(httpx.HTTPError):  # the server may stop under it
            httpx.get(url, timeout=PARKED)

    with Emulator() as own, httpx.Client(base_url=own.url) as admin:
        own.set_latency(PARKED)
        idle = admin.get("/_emulator/in_flight").json()
        parked = threading.Thread(target=park, args=(f"{own.serverless_url}/{ENDPOINT}/health",))
        parked.start()
        arrived = wait_for(lambda: 1 == admin.get("/_emulator/in_flight").json()["in_flight"])
        in_process = own.in_flight
    parked.join()

    assert ({"in_flight": 0}, True, 1) == (idle, arrived, in_process)


def test_admin_api_explains_bad_calls(client: httpx.Client) -> None:
    """Unknown keys are 404 and malformed bodies 400, each with a JSON error."""
    unknown = client.post("/_emulator/keys/revoke", json={"key": "rpa_never-added-000000"})
    missing = client.post("/_emulator/faults", json={})
    bad_scope = client.post("/_emulator/keys", json={"scope": "admin"})

    assert [404, 400, 400] == [r.status_code for r in (unknown, missing, bad_scope)]
    assert "rpa_never-added-000000" not in unknown.text


def test_reset_restores_the_initial_state(emu: Emulator, client: httpx.Client) -> None:
    """reset() reactivates the initial key, drops added keys, faults, jobs and counters."""
    first = emu.api_key
    extra = emu.add_key()
    emu.revoke(first)
    job_id = run_job(client, extra, {})
    emu.inject(500, count=10)

    emu.reset()

    assert [(fingerprint(first), "all", True)] == [
        (i.fingerprint, i.scope, i.active) for i in emu.keys
    ]
    status = client.get(f"/v2/{ENDPOINT}/status/{job_id}", headers=bearer(first))
    assert 404 == status.status_code
    assert 1 == emu.counters().total


# -- load ----------------------------------------------------------------------------------


def test_holds_256_concurrent_connections(emu: Emulator) -> None:
    """256 threads, each with its own client and connection, all get their answer."""
    emu.set_latency(0.05)  # keeps every request in flight at the same time
    url = f"{emu.serverless_url}/{ENDPOINT}/health"
    headers = bearer(emu.api_key)
    tls = ssl.create_default_context()  # one context for all: loading CAs 256 times is slow
    barrier = threading.Barrier(256, timeout=60)
    statuses: list[int] = []

    def call() -> None:
        with httpx.Client(verify=tls, timeout=60) as client:
            barrier.wait()
            statuses.append(client.get(url, headers=headers).status_code)

    threads = [threading.Thread(target=call) for _ in range(256)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [200] * 256 == statuses


# -- pytest plugin -------------------------------------------------------------------------


def test_fixture_gives_each_test_a_fresh_state(pytester: pytest.Pytester) -> None:
    """runpod_emulator undoes a test's changes: a key revoked in one test works in the next."""
    pytester.makepyfile(
        """
        import httpx

        def test_revokes(runpod_emulator):
            runpod_emulator.revoke(runpod_emulator.api_key)
            runpod_emulator.inject(500, count=10)

        def test_sees_a_working_key(runpod_emulator):
            url = f"{runpod_emulator.serverless_url}/e/health"
            headers = {"Authorization": runpod_emulator.api_key}
            assert 200 == httpx.get(url, headers=headers).status_code
            assert 1 == runpod_emulator.counters().total
        """
    )

    result = pytester.runpytest()

    result.assert_outcomes(passed=2)


# -- the runpod SDK ------------------------------------------------------------------------

_SDK_SCRIPT = """
import asyncio, sys, runpod
from runpod.http_client import AsyncClientSession

def sync_calls():
    endpoint = runpod.Endpoint("sdk-sync")
    job = endpoint.run({"n": 1})
    assert "COMPLETED" == job.status(), job.status()
    assert {"echo": {"n": 1}} == job.output()
    assert {"echo": {"n": 2}} == endpoint.run_sync({"n": 2})
    assert [{"echo": {"n": 3}}] == list(endpoint.run({"n": 3}).stream())
    assert "CANCELLED" == endpoint.run({"n": 4}).cancel()["status"]
    assert 3 == endpoint.health()["jobs"]["completed"]
    assert {"removed": 0, "status": "completed"} == endpoint.purge_queue()
    assert runpod.get_user()["id"].startswith("user-")
    pod = runpod.create_pod("sdk-pod", "img:1", "NVIDIA GeForce RTX 4090")
    assert [pod["id"]] == [p["id"] for p in runpod.get_pods()]
    assert "sdk-pod" == runpod.get_pod(pod["id"])["name"]

async def async_calls():
    async with AsyncClientSession() as session:
        endpoint = runpod.AsyncioEndpoint("sdk-async", session)
        job = await endpoint.run({"n": 1})
        assert "COMPLETED" == await job.status()
        assert {"echo": {"n": 1}} == await job.output(timeout=30)
        assert [{"echo": {"n": 2}}] == [c async for c in (await endpoint.run({"n": 2})).stream()]
        assert "CANCELLED" == (await (await endpoint.run({"n": 3})).cancel())["status"]
        assert 2 == (await endpoint.health())["jobs"]["completed"]
        assert "completed" == (await endpoint.purge_queue())["status"]

async def main():
    # Side by side: each SDK stream() sleeps a second per poll.
    await asyncio.gather(asyncio.to_thread(sync_calls), async_calls())

runpod.api_key = sys.argv[1]
asyncio.run(main())
print("sdk ok")
"""


def test_runpod_sdk_works_against_the_emulator(emu: Emulator, tmp_path: Path) -> None:
    """The official SDK's sync, asyncio and GraphQL calls work unchanged against the emulator."""
    # RUNPOD_ENDPOINT_BASE_URL is read when runpod is imported: hence a fresh process.
    env = {**os.environ, **emu.sdk_env, "HOME": str(tmp_path)}

    result = subprocess.run(
        [sys.executable, "-c", _SDK_SCRIPT, emu.api_key],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert ("sdk ok\n", 0) == (result.stdout, result.returncode), result.stderr


# -- CLI -----------------------------------------------------------------------------------


@dataclass
class CliRun:
    banner: str = ""
    rest: str = ""
    returncode: int | None = None


@contextmanager
def cli_emulator(*args: str, env: dict[str, str], cwd: Path | None = None) -> Iterator[CliRun]:
    """Run `resilient-runpod emulator --port 0 ARGS`; yield once it serves, SIGTERM it after."""
    run = CliRun()
    with subprocess.Popen(
        [sys.executable, "-m", "resilient_runpod.cli", "emulator", "--port", "0", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        # A safety net, not a timing assertion: a hung child must not hang the suite.
        watchdog = threading.Timer(60, process.kill)
        watchdog.start()
        assert process.stdout is not None
        try:
            for line in process.stdout:
                run.banner += line
                # The last line of the text banner, or the one line of --json.
                if line.startswith(("Press Ctrl-C", "{")):
                    break
            yield run
        finally:
            process.send_signal(signal.SIGTERM)
            run.rest = process.stdout.read()
            run.returncode = process.wait()
            watchdog.cancel()


def test_cli_writes_a_private_key_file_and_prints_only_its_fingerprint(tmp_path: Path) -> None:
    """Without RUNPOD_API_KEY the CLI writes a 0600 key file, serves it, and stops on SIGTERM."""
    key_file = tmp_path / "key"

    with cli_emulator("--key-file", str(key_file), env=dict(os.environ)) as run:
        key = key_file.read_text().strip()
        url = re.search(r"listening on (\S+)", run.banner)
        assert url is not None
        health = httpx.get(f"{url[1]}/v2/any/health", headers=bearer(key))

    assert 200 == health.status_code
    assert 0o600 == key_file.stat().st_mode & 0o777
    assert f"export RUNPOD_ENDPOINT_BASE_URL={url[1]}/v2" in run.banner
    assert fingerprint(key) in run.banner
    assert key not in run.banner + run.rest
    assert (0, "RunPod emulator stopped.\n") == (run.returncode, run.rest)


def test_cli_serves_runpod_api_key_read_only(tmp_path: Path) -> None:
    """With RUNPOD_API_KEY and --read-only-key, that key reads (200) but may not write (403)."""
    key = "rpa_" + "C" * 40 + "cli123"
    key_file = tmp_path / "key"
    env = {**os.environ, "RUNPOD_API_KEY": key}

    with cli_emulator("--read-only-key", "--key-file", str(key_file), env=env) as run:
        url = re.search(r"listening on (\S+)", run.banner)
        assert url is not None
        health = httpx.get(f"{url[1]}/v2/any/health", headers=bearer(key))
        write = httpx.post(f"{url[1]}/v2/any/run", json={"input": {}}, headers=bearer(key))

    assert (200, 403) == (health.status_code, write.status_code)
    assert f"API key {fingerprint(key)} (read-only), from RUNPOD_API_KEY" in run.banner
    assert key not in run.banner + run.rest
    assert not key_file.exists()


def test_fixture_without_the_emulator_extra_fails_with_the_install_hint(tmp_path: Path) -> None:
    """Without uvicorn, `runpod_emulator` errors (not skips), saying what to install."""
    (tmp_path / "conftest.py").write_text(
        "import sys\nsys.modules['uvicorn'] = None  # as if the extra were not installed\n"
    )
    (tmp_path / "test_user.py").write_text("def test_it(runpod_emulator):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}

    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert 1 == result.returncode, result.stdout
    assert "pip install 'resilient-runpod[emulator]'" in result.stdout
    assert "1 error" in result.stdout
    assert "skipped" not in result.stdout
