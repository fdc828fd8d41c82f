"""The prompt in a real Jupyter kernel (ipykernel), driven over its protocol by jupyter_client."""

from __future__ import annotations

import os
import queue
import sys
from typing import TYPE_CHECKING, Any

import pytest
from jupyter_client.manager import start_new_kernel

from .helpers import wait_for

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from resilient_runpod.testing import Emulator

_TIMEOUT = 60


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One kernel for the module, started from this venv's python, with a private HOME."""
    home = tmp_path_factory.mktemp("kernel-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "RESILIENT_"))}
    for name in ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD"):
        env.pop(name, None)
    env["HOME"] = str(home)
    manager, client = start_new_kernel(kernel_name="python3", env=env, startup_timeout=_TIMEOUT)
    try:
        yield client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def run_cell(
    client: Any, code: str, *, allow_stdin: bool, answer: str | None = None
) -> dict[str, Any]:
    """Run *code*; answer its one input request with *answer*; return what the cell did."""
    msg_id = client.execute(code, allow_stdin=allow_stdin)
    request = None
    if answer is not None:
        request = client.get_stdin_msg(timeout=_TIMEOUT)
        client.input(answer)
    reply = client.get_shell_msg(timeout=_TIMEOUT)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = client.get_shell_msg(timeout=_TIMEOUT)
    output = []
    while True:  # everything the cell printed, up to its idle status
        try:
            message = client.get_iopub_msg(timeout=_TIMEOUT)
        except queue.Empty:
            break
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            output.append(message["content"]["text"])
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    return {"reply": reply["content"], "stdout": "".join(output), "request": request}


CELL = """
import httpx
from resilient_runpod import AuthenticationError, Credentials, ResilientTransport, recovery
credentials = Credentials({old!r}, recovery=recovery.prompt(timeout=60), hosts=[{host!r}],
                          hook_timeout=None)
try:
    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        response = client.get({url!r})
except AuthenticationError as exc:
    print("FAILED", type(exc.__cause__).__name__)
else:
    print("STATUS", response.status_code, "SOURCE", credentials.source)
"""


def cell_for(emulator: Emulator, old: str) -> str:
    url = f"{emulator.serverless_url}/{emulator.endpoint_id}/health"
    return CELL.format(old=old, host=emulator.host, url=url)


def test_kernel_runs_this_venvs_python(kernel):
    """The kernel under test is the project's interpreter, with this package installed."""
    done = run_cell(kernel, "import sys; print(sys.executable)", allow_stdin=False)
    assert os.path.realpath(sys.executable) == os.path.realpath(done["stdout"].strip())


def test_notebook_prompt_recovers_a_revoked_key(kernel, runpod_emulator):
    """A 401 in a cell asks through the kernel's password box; the answer is used."""
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    done = run_cell(kernel, cell_for(runpod_emulator, old), allow_stdin=True, answer=new)
    request = done["request"]["content"]
    assert True is request["password"]
    assert f"rpa_…{old[-4:]}" in request["prompt"]
    assert request["prompt"].endswith("key: ")
    assert "STATUS 200 SOURCE prompt:notebook" in done["stdout"]
    assert new not in done["stdout"]


def test_front_end_without_input_is_non_interactive(kernel, runpod_emulator):
    """With allow_stdin=False (nbclient, papermill) the prompt raises NonInteractiveError."""
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    done = run_cell(kernel, cell_for(runpod_emulator, old), allow_stdin=False)
    assert "FAILED NonInteractiveError" in done["stdout"]
    assert "ok" == done["reply"]["status"]


def test_prompt_called_directly_without_input_raises(kernel):
    """Called directly in a cell that allows no input, the hook raises NonInteractiveError."""
    code = (
        "from resilient_runpod import NonInteractiveError, recovery\n"
        "try:\n    recovery.prompt()()\n"
        "except NonInteractiveError as exc:\n    print('RAISED', exc)\n"
    )
    done = run_cell(kernel, code, allow_stdin=False)
    assert "RAISED this notebook front end does not accept input" in done["stdout"]


def test_background_thread_after_its_cell_ended_is_non_interactive(kernel, tmp_path: Path):
    """A thread prompting after its cell finished gets NonInteractiveError, not a hang."""
    report = tmp_path / "thread-result.txt"
    start = (
        "import getpass, threading, time\n"
        "from resilient_runpod import NonInteractiveError, recovery\n"
        "def later():\n"
        "    while getattr(getpass.getpass, '__self__', None) is not None:\n"
        "        time.sleep(0.01)  # until the cell ends and the kernel takes getpass back\n"
        "    try:\n        outcome = repr(recovery.prompt()())\n"
        "    except NonInteractiveError as exc:\n        outcome = 'RAISED ' + str(exc)\n"
        f"    open({str(report)!r}, 'w').write(outcome)\n"
        "threading.Thread(target=later, daemon=True).start()\n"
    )
    run_cell(kernel, start, allow_stdin=True)
    # The thread reports through a file: no cell may run meanwhile.
    assert wait_for(lambda: report.exists() and report.read_text())
    assert report.read_text().startswith(
        "RAISED the notebook cell that needed the key has finished"
    )


def test_home_is_private(kernel):
    """The kernel never sees the real ~/.runpod."""
    done = run_cell(kernel, "import os; print(os.path.expanduser('~'))", allow_stdin=False)
    assert "kernel-home" in done["stdout"]
