"""`resilient-runpod demo`: watch a worker keep going while its RunPod key is revoked.

Runs entirely on this machine against the embedded emulator: no network, no RunPod
account. Exit code 0 when every job completed, 1 when one was lost, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from contextlib import ExitStack
from typing import Any

from ._common import port

__all__ = ["add_parser"]

# Kept equal to `_demo_run.MAX_JOBS` by a test; not imported from there, so that
# `resilient-runpod --help` does not import httpx and structlog.
MAX_JOBS = 10_000


def add_parser(sub: Any) -> None:
    """Register the `demo` subcommand on *sub* (an argparse subparsers object)."""
    parser = sub.add_parser(
        "demo",
        help="watch jobs survive a revoked key, on a local RunPod emulator",
        description=(
            "Start a RunPod emulator on 127.0.0.1, submit jobs through httpx (sync and async) "
            "and, if the runpod SDK is installed, a wrapped runpod.Endpoint; revoke the key "
            "part-way through and put the new one in a secret file the recovery hook reads. "
            "Ends with a summary and a per-second timeline. Needs no network and no RunPod "
            "account. Exit code: 0 every job completed, 1 a job was lost, 2 usage error."
        ),
    )
    parser.add_argument(
        "--interactive",
        action="store_true",
        help="ask you for the new key at a prompt instead of reading the secret file",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs,
        default=4,
        metavar="N",
        help=f"jobs per stage, 2 to {MAX_JOBS:,} (default: %(default)s)",
    )
    parser.add_argument(
        "--no-sdk", action="store_true", help="skip the runpod SDK stage even if it is installed"
    )
    parser.add_argument(
        "--quiet", action="store_true", help="show only warnings, errors and the summary"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per event (every field), then the summary as one JSON object",
    )
    parser.add_argument(
        "--metrics-port",
        type=port,
        metavar="PORT",
        help=(
            "while the demo runs, serve the library's metrics for Prometheus on "
            "http://127.0.0.1:PORT/metrics (0 picks a free port; needs the prometheus extra)"
        ),
    )
    parser.add_argument(
        "--metrics-hold",
        type=_seconds,
        default=0.0,
        metavar="SECONDS",
        help="with --metrics-port: keep serving the metrics this long after the summary "
        "(Ctrl-C stops sooner)",
    )
    parser.set_defaults(run=_run, command_parser=parser)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 2 <= value <= MAX_JOBS:  # noqa: PLR2004
        raise argparse.ArgumentTypeError(f"must be between 2 and {MAX_JOBS:,}, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def _say(text: str) -> None:
    # On stderr: stdout is the demo's story, or its JSON with --json.
    print(text, file=sys.stderr, flush=True)  # noqa: T201 (a CLI's output)


def _fail(message: str, code: int) -> int:
    _say(f"resilient-runpod demo: {message}")
    return code


def _run(args: argparse.Namespace) -> int:
    if args.metrics_hold and args.metrics_port is None:
        args.command_parser.error("--metrics-hold needs --metrics-port")
    if args.interactive:
        refused = _refuse_interactive()
        if refused is not None:
            return refused
    if args.metrics_port is None:
        return _demo(args, metrics=None)
    from resilient_runpod.cli import _prometheus  # noqa: PLC0415 (only with the flag)

    with ExitStack() as serving:
        try:
            url = serving.enter_context(_prometheus.serving(args.metrics_port))
        except _prometheus.CannotServeError as exc:
            return _fail(str(exc), 2)
        _say(f"metrics: {url}")
        return _demo(args, metrics=url)


def _refuse_interactive() -> int | None:
    """Exit code 2 with the reason when nobody can answer --interactive's prompt here."""
    from resilient_runpod._errors import NonInteractiveError  # noqa: PLC0415

    try:
        from resilient_runpod.recovery import where_to_ask  # noqa: PLC0415
    except ImportError:
        return _fail("--interactive needs resilient_runpod.recovery.prompt", 2)
    try:
        where_to_ask()
    except NonInteractiveError as exc:
        # Said here, not by the prompt: its advice (set RUNPOD_API_KEY) is for programs
        # that need a real key, and the demo makes its own.
        return _fail(
            "--interactive asks you to paste the new key, and nobody can be asked here "
            f"({exc.reason}). Run it in a terminal, or without --interactive: the "
            "demo makes its own keys and needs none of yours.",
            2,
        )
    return None


def _hold(url: str, seconds: float) -> None:
    """Keep serving *url* after the summary, so a person or Prometheus can read the end."""
    try:
        _say(f"metrics: still served at {url} for {seconds:g} s (Ctrl-C stops)")
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass  # asked to stop: the demo's own outcome is the exit code


def _demo(args: argparse.Namespace, metrics: str | None) -> int:
    """Run the demo; with *metrics* (where they are served), hold them as asked after it."""
    from resilient_runpod.cli._demo_run import run_demo  # noqa: PLC0415 (keeps `--help` fast)

    try:
        summary = run_demo(
            jobs=args.jobs,
            interactive=args.interactive,
            sdk=False if args.no_sdk else None,
            quiet=args.quiet,
            as_json=args.json,
        )
    except ImportError as exc:
        return _fail(str(exc), 2)
    except BrokenPipeError:
        # The reader went away (`| head`): nothing more can be shown, and Python's own
        # flush at exit must not fail again on the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        return _fail(f"the demo could not run: {exc}", 1)
    if metrics is not None and args.metrics_hold:
        _hold(metrics, args.metrics_hold)
    return 0 if summary.ok else 1
