"""Fixtures shared by every test: each test starts from a clean, predictable world."""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

# Variables that change where keys come from, where they may go, or whether a prompt
# may be shown. CI sets some of them (CI=true); tests that need one set it themselves.
_ISOLATED_VARIABLES = (
    "RUNPOD_API_KEY",
    "RUNPOD_AI_API_KEY",
    "RUNPOD_ENDPOINT_BASE_URL",
    "RUNPOD_API_BASE_URL",
    "RUNPOD_API_URL",
    "RUNPOD_GRAPHQL_URL",
    "RESILIENT_RUNPOD_NO_PROMPT",
    "CI",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BUILDKITE",
    "JENKINS_URL",
    "TF_BUILD",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No real ~/.runpod, no inherited keys or CI flags, structlog back to its defaults."""
    for name in _ISOLATED_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    yield
    structlog.reset_defaults()


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, the loop the runpod SDK and aiohttp use."""
    return "asyncio"


def make_key() -> str:
    """A fresh key of RunPod's current shape: rpa_ + 40 upper/digits + 6 alphanumerics."""
    upper = string.ascii_uppercase + string.digits
    tail = string.ascii_letters + string.digits
    return (
        "rpa_"
        + "".join(secrets.choice(upper) for _ in range(40))
        + "".join(secrets.choice(tail) for _ in range(6))
    )


@pytest.fixture
def key() -> str:
    """A valid-looking key no server knows."""
    return make_key()
