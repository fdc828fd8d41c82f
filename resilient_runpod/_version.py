"""The installed distribution's version, read from its metadata."""

from __future__ import annotations

from importlib.metadata import version

__all__ = ["__version__"]

__version__ = version("resilient-runpod")
