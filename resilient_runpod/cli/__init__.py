"""The ``resilient-runpod`` command: one subcommand module each, registered here.

Each command keeps its back end beside it: ``_doctor`` and the diagnosis in
``_diagnose``, ``_demo`` and the story it runs in ``_demo_run`` (its metrics, served for
Prometheus, in ``_prometheus``), ``_login``, ``_emulator``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import version

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    # Imported here so that `resilient-runpod --help` stays fast and each subcommand
    # pays only for its own imports.
    from . import _demo, _doctor, _emulator, _login  # noqa: PLC0415 -- see above

    parser = argparse.ArgumentParser(
        prog="resilient-runpod",
        description="Keep programs talking to RunPod when their API key is rejected.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version('resilient-runpod')}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (_demo, _doctor, _emulator, _login):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code (0 ok, 1 a problem found, 2 usage error).

    Usage errors exit 2 with the usage of the command they belong to: an unknown flag
    after ``doctor`` is doctor's, and names the flag.
    """
    parser = _parser()
    # parse_known_args: argparse would otherwise report a missing COMMAND before an
    # unknown flag, and a subcommand's unknown flag with the top-level usage.
    args, unknown = parser.parse_known_args(argv)
    owner: argparse.ArgumentParser = getattr(args, "command_parser", parser)
    if unknown:
        owner.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command is None:
        parser.error("choose a command: demo, doctor, emulator or login (see --help)")
    code: int = args.run(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
