"""pytest fixtures for testing code that talks to RunPod, without RunPod.

Installed with the package (entry point ``pytest11``), so with the ``emulator`` extra
the fixtures are simply there::

    def test_recovers_from_revoked_key(runpod_emulator):
        key = runpod_emulator.api_key
        runpod_emulator.revoke(key)
        response = httpx.get(
            f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert 401 == response.status_code

``runpod_emulator``
    A running `Emulator` in its initial state: one full-access key (`Emulator.api_key`),
    no faults, no latency, zero counters, no jobs or pods. Changes a test makes are
    undone before the next test.

``runpod_emulator_server``
    The session-wide server behind ``runpod_emulator``, started once because stopping a
    server takes a noticeable fraction of a second. Use it directly only to share state
    across tests; it is *not* reset for you.

For the ``runpod`` SDK, set `Emulator.sdk_env` in the environment before ``runpod`` is
imported (``RUNPOD_ENDPOINT_BASE_URL`` is read at import), e.g. in a subprocess.
Without uvicorn and starlette the fixtures fail the test, saying what to install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ._emulator import Emulator

__all__ = ["runpod_emulator", "runpod_emulator_server"]

_SKIP_REASON = "the RunPod emulator needs: pip install 'resilient-runpod[emulator]'"


@pytest.fixture(scope="session")
def runpod_emulator_server() -> Iterator[Emulator]:
    """Serve one RunPod emulator for the whole test session."""
    # A failure, not a skip: a CI without the extra must not go green without running
    # the tests that need the emulator.
    try:
        import starlette  # noqa: F401, PLC0415 -- only checking that it is there
        import uvicorn  # noqa: F401, PLC0415
    except ImportError as exc:
        pytest.fail(f"{_SKIP_REASON} ({exc})", pytrace=False)

    # Imported here: this module is loaded by every pytest run of every project that
    # installs the package, and the emulator brings the whole library with it.
    from ._emulator import Emulator  # noqa: PLC0415

    with Emulator() as emulator:
        yield emulator


@pytest.fixture
def runpod_emulator(runpod_emulator_server: Emulator) -> Emulator:
    """Provide the RunPod emulator, back in its initial state for this test."""
    runpod_emulator_server.reset()
    return runpod_emulator_server
