"""``import resilient_runpod`` works without the runpod SDK; ``wrap`` then says what to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_import_works_without_runpod_and_wrap_says_how_to_install_it():
    """With runpod unimportable, the package imports and wrap() raises a helpful ImportError."""
    program = textwrap.dedent(
        """
        import sys
        sys.modules["runpod"] = None  # as if the SDK were not installed
        import resilient_runpod
        assert "requests" not in sys.modules and "aiohttp" not in sys.modules
        try:
            resilient_runpod.wrap(object())
        except ImportError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'resilient-runpod[sdk]'" in result.stdout
