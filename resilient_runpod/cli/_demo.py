"""`resilient-runpod demo`: not written yet."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Register the `demo` subcommand on *sub* (an argparse subparsers object)."""
    parser = sub.add_parser("demo", help="(not available yet)")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    print("resilient-runpod demo: not available yet")  # noqa: T201
    return 2
