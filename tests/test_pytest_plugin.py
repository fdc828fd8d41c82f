"""The pytest plugin loads in every pytest run of every project that installs the package:
loading it must cost pytest nothing beyond the plugin itself.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys


def _python(code: str) -> str:
    """What *code* prints, run by a fresh interpreter (nothing imported yet)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_loading_the_plugin_imports_nothing_of_the_library():
    """Importing the plugin module (as pytest's entry point does) loads no library module,
    no tomlkit, httpx, structlog or tenacity; the fixtures import what they need when used.
    """
    code = (
        "import json, sys\n"
        "import resilient_runpod.testing._pytest_plugin\n"
        "heavy = ('resilient_runpod', 'tomlkit', 'httpx', 'structlog', 'tenacity')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))"
    )
    expected = [
        "resilient_runpod",
        "resilient_runpod._lazy",  # the first-use import hook, standard library only
        "resilient_runpod.testing",
        "resilient_runpod.testing._pytest_plugin",
    ]
    assert expected == json.loads(_python(code))


def test_the_fixture_still_serves_the_emulator(runpod_emulator):
    """Imported lazily, the fixture still hands out a running emulator."""
    from resilient_runpod.testing import Emulator

    assert isinstance(runpod_emulator, Emulator)
    assert runpod_emulator.url.startswith("http://127.0.0.1:")


def test_public_names_resolve_on_first_use():
    """Every name in the package's __all__ is importable, though imported only on use."""
    code = (
        "import resilient_runpod, resilient_runpod.testing as t\n"
        "missing = [n for n in resilient_runpod.__all__ if getattr(resilient_runpod, n) is None]\n"
        "missing += [n for n in t.__all__ if getattr(t, n) is None]\n"
        "print(missing, resilient_runpod.Credentials.__module__, resilient_runpod.__version__)"
    )
    version = importlib.metadata.version("resilient-runpod")
    assert f"[] resilient_runpod._credentials {version}" == _python(code)
