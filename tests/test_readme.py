"""Every ```python block in README.md runs as written, against the emulator.

Each block runs in a fresh interpreter, as a reader who copies it into a file would run
it: with ``RUNPOD_API_KEY`` and the SDK's ``RUNPOD_*_BASE_URL`` variables pointing at the
emulator, and ``HOME`` in a temporary directory whose ``~/.runpod/config.toml`` holds
the emulator's key (where the SDK reads it, as after ``resilient-runpod login``). A
block that defines ``test_*`` functions is a pytest example and is run by pytest, with
the package's own fixtures.

The examples name RunPod's real host (``https://api.runpod.ai/v2``); the harness sends
that base to the emulator instead, as a hosts-file entry would, and leaves the rest of
the text alone. A block that cannot run as shown carries, just before its fence, a
comment saying why: ``<!-- not-run: needs a real RunPod endpoint -->``.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")
# RunPod's serverless base as the examples write it: sent to the emulator's instead.
RUNPOD_SERVERLESS_BASE = "https://api.runpod.ai/v2"


@dataclass(frozen=True)
class Block:
    line: int  # where the fence opens, 1-based
    code: str
    not_run: str | None  # the reason given in the marker, if any

    @property
    def is_pytest_example(self) -> bool:
        return re.search(r"^def test_\w+\(", self.code, re.MULTILINE) is not None


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of *text*, each with the not-run marker just before it, if any."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() != "```python":
            index += 1
            continue
        before = next((ln.strip() for ln in reversed(lines[:index]) if ln.strip()), "")
        marker = NOT_RUN.match(before)
        end = next(i for i in range(index + 1, len(lines)) if lines[i].strip() == "```")
        code = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(index + 1, code, marker["reason"] if marker else None))
        index = end + 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_extractor_sees_markers_and_blocks():
    """The extractor finds each block, and a marker applies to the block right after it only."""
    text = (
        "# t\n\n```python\nprint(1)\n```\n\n<!-- not-run: needs a real RunPod endpoint -->\n"
        "```python\nprint(2)\n```\n```bash\necho no\n```\n"
    )

    blocks = python_blocks(text)

    assert [(3, "print(1)\n", None), (8, "print(2)\n", "needs a real RunPod endpoint")] == [
        (b.line, b.code, b.not_run) for b in blocks
    ]


def test_the_readme_has_python_examples_and_each_not_run_says_why():
    """There are examples to run, and every skipped one gives its reason."""
    assert len([b for b in BLOCKS if b.not_run is None]) >= 4
    assert [] == [b.line for b in BLOCKS if b.not_run is not None and not b.not_run]


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.not_run is None], ids=lambda b: f"line{b.line}"
)
def test_readme_block_runs_as_written(block, runpod_emulator, child_env, tmp_path):
    """The block runs to the end (exit 0) against the emulator; a pytest example passes.

    No network but loopback is reachable here, so a request that did not go to the
    emulator fails the block.
    """
    env = {
        **child_env,
        **runpod_emulator.sdk_env,
        "RUNPOD_API_KEY": runpod_emulator.api_key,
        # An example that would ask a person must refuse at once, not wait for one.
        "RESILIENT_RUNPOD_NO_PROMPT": "1",
    }
    # A reader's machine after `resilient-runpod login`: where the runpod SDK reads its key.
    config = Path(env["HOME"]) / ".runpod" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[default]\napi_key = "{runpod_emulator.api_key}"\n', encoding="utf-8")
    config.chmod(0o600)
    code = block.code.replace(RUNPOD_SERVERLESS_BASE, runpod_emulator.serverless_url)
    if block.is_pytest_example:
        script = tmp_path / "test_readme_example.py"
        script.write_text(code, encoding="utf-8")
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(script)]
        env.pop("PYTEST_ADDOPTS", None)
    else:
        script = tmp_path / "readme_example.py"
        script.write_text(code, encoding="utf-8")
        argv = [sys.executable, str(script)]

    result = subprocess.run(
        argv,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert 0 == result.returncode, f"README.md line {block.line}:\n{result.stdout}{result.stderr}"
    if block.is_pytest_example:
        assert re.search(r"\b[1-9]\d* passed\b", result.stdout), result.stdout


def test_readme_links_work_on_the_package_index():
    """Every Markdown link is absolute: relative ones and #anchors break on PyPI's page."""
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text(encoding="utf-8"))

    assert links
    assert [] == [link for link in links if not link.startswith("https://")]
