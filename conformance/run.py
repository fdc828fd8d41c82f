"""Run the runpod SDK's own endpoint and API tests, plain and with everything wrapped.

    python conformance/run.py            # the installed runpod version

The SDK ships its tests in its sdist. This downloads the sdist of the installed
version (``pip download --no-deps --no-binary :all:``), extracts ``tests/test_api`` and
``tests/test_endpoint``, and runs them twice with pytest: as they are, and with
``wrapped_conftest.py`` as their conftest (it wraps ``Endpoint``, ``Job``,
``AsyncioEndpoint``, ``AsyncioJob`` and the API functions). A test that passes plain
and fails wrapped is a bug in resilient_runpod, unless it is listed in
``EXPECTED_DIVERGENCES`` with the reason it is an artifact of the harness. Exit 0
when there is no unexpected divergence.

It needs pytest-asyncio (the SDK's tests run in its ``asyncio_mode = auto``); it is
installed into a temporary folder, not into the environment under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = ("tests/test_api", "tests/test_endpoint")

# nodeid -> why a test that passes plain fails wrapped without that being our bug.
EXPECTED_DIVERGENCES: dict[str, str] = {}

PYTEST_INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
python_files = test_*.py
"""


def _pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "-q", *args], check=True)


def _extract(sdk_version: str, work: Path) -> Path:
    downloads = work / "sdist"
    _pip(
        "download",
        "--no-deps",
        "--no-binary",
        ":all:",
        f"runpod=={sdk_version}",
        "-d",
        str(downloads),
    )
    (archive,) = downloads.glob("runpod-*.tar.gz")
    root = work / "suite"
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        wanted = [f"{top}/tests/__init__.py", *(f"{top}/{suite}" for suite in SUITES)]
        members = [m for m in tar.getmembers() if any(m.name.startswith(w) for w in wanted)]
        tar.extractall(work / "unpacked", members=members, filter="data")
    shutil.copytree(work / "unpacked" / top / "tests", root / "tests")
    (root / "pytest.ini").write_text(PYTEST_INI)
    return root


def _run(root: Path, deps: Path, report: Path) -> dict[str, str]:
    """Run the suites in *root*; return each test's outcome."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "RESILIENT_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(deps), env.get("PYTHONPATH")]))
    env["HOME"] = str(root)  # no ~/.runpod/config.toml from the machine
    env["RESILIENT_RUNPOD_NO_PROMPT"] = "1"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p"]
    command += ["no:randomly", "-c", str(root / "pytest.ini"), "--rootdir", str(root)]
    command += [f"--junitxml={report}", *SUITES]
    run = subprocess.run(
        command, cwd=root, env=env, check=False, timeout=900, capture_output=True, text=True
    )
    if not report.exists():  # pytest stopped before running anything: say why
        raise SystemExit(f"conformance: pytest ran no test\n{run.stdout[-3000:]}{run.stderr}")
    outcomes = {}
    for case in ET.parse(report).iter("testcase"):
        nodeid = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        outcomes[nodeid] = next(
            (k for k in ("failure", "error", "skipped") if k in kinds), "passed"
        )
    return outcomes


def main() -> int:
    """Run the conformance check for the installed runpod; return the exit status."""
    sdk_version = version("runpod")
    with tempfile.TemporaryDirectory(prefix="runpod-conformance-") as tmp:
        work = Path(tmp)
        deps = work / "deps"
        _pip("install", "--no-deps", "--target", str(deps), "pytest-asyncio>=0.24")
        root = _extract(sdk_version, work)
        plain = _run(root, deps, work / "plain.xml")
        shutil.copy(HERE / "wrapped_conftest.py", root / "tests" / "conftest.py")
        wrapped = _run(root, deps, work / "wrapped.xml")
    passed_plain = {t for t, outcome in plain.items() if outcome == "passed"}
    divergent = sorted(t for t in passed_plain if wrapped.get(t) != "passed")
    unexpected = [t for t in divergent if t not in EXPECTED_DIVERGENCES]
    for test in divergent:
        reason = EXPECTED_DIVERGENCES.get(test, "UNEXPECTED: a bug in resilient_runpod")
        print(f"conformance: {test}: {wrapped.get(test, 'missing')} wrapped; {reason}")
    print(
        f"conformance runpod {sdk_version}: {len(plain)} tests, {len(passed_plain)} pass plain, "
        f"{sum(o == 'passed' for o in wrapped.values())} pass wrapped, "
        f"{len(divergent) - len(unexpected)} expected and {len(unexpected)} unexpected divergences"
    )
    return 1 if unexpected or not passed_plain else 0


if __name__ == "__main__":
    sys.exit(main())
