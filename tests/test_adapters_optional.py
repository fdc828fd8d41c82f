"""The requests and aiohttp adapters without their extra say what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize(
    ("missing", "name"),
    [("requests", "ResilientHTTPAdapter"), ("aiohttp", "ResilientMiddleware")],
)
def test_adapter_without_its_library_gives_the_install_hint(missing, name):
    """With the HTTP library unimportable, the adapter's ImportError names the `sdk` extra."""
    program = textwrap.dedent(
        f"""
        import sys
        sys.modules[{missing!r}] = None  # as if the extra were not installed
        from resilient_runpod import adapters
        try:
            adapters.{name}
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )

    assert f"{name} needs" in result.stdout
    assert "pip install 'resilient-runpod[sdk]'" in result.stdout
