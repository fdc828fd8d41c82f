from __future__ import annotations

import importlib

import pytest

import resilient_runpod


@pytest.mark.parametrize(
    "module",
    [
        "resilient_runpod",
        "resilient_runpod.adapters",
        "resilient_runpod.instrumentation",
        "resilient_runpod.recovery",
        "resilient_runpod.sdk",
        "resilient_runpod.testing",
        "resilient_runpod.typing",
    ],
)
def test_all_is_sorted_and_complete(module):
    """Every public module lists its public names in a sorted __all__, and they all exist."""
    mod = importlib.import_module(module)

    assert sorted(mod.__all__) == list(mod.__all__)
    assert [] == [name for name in mod.__all__ if not hasattr(mod, name)]


def test_public_names_are_exported():
    """Every public name defined in the package namespace is in __all__."""
    public = {
        name
        for name, value in vars(resilient_runpod).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("resilient_runpod")
    }

    assert set() == public - set(resilient_runpod.__all__)


def test_version_comes_from_metadata():
    """__version__ is the installed distribution's version."""
    from importlib.metadata import version

    assert version("resilient-runpod") == resilient_runpod.__version__
