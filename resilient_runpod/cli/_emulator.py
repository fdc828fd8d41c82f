"""`resilient-runpod emulator`: serve the RunPod emulator in the foreground until stopped.

The key is never printed, only its fingerprint: terminal scrollback and CI logs are
where keys leak. It comes from ``RUNPOD_API_KEY`` if that is set; otherwise a new key
is written to a file only the current user can read: ``--key-file`` if given, else a
private temporary directory removed when the emulator stops (never the current
directory, where it could end up in a commit).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import threading
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resilient_runpod._errors import InvalidKeyError
from resilient_runpod._files import FileRefusedError, refuse_unless_regular
from resilient_runpod._keys import clean, fingerprint

from ._common import port

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator
    from types import FrameType

    from resilient_runpod.testing import Emulator

__all__ = ["add_parser"]

_LOOPBACK = ("127.0.0.1", "[::1]", "localhost")


def add_parser(sub: Any) -> None:
    """Register the `emulator` subcommand on *sub* (an argparse subparsers object)."""
    parser = sub.add_parser(
        "emulator",
        help="serve a local RunPod look-alike (serverless, GraphQL, REST v2) for tests and demos",
        description=(
            "Serve RunPod's auth surface on this machine until Ctrl-C or SIGTERM. The key is "
            "$RUNPOD_API_KEY if set, else a new one written to --key-file (default: a private "
            "temporary file, removed on exit). Admin API (no auth): /_emulator/keys, "
            "/_emulator/faults, /_emulator/latency, /_emulator/counters. Exit code: 0 stopped, "
            "1 could not serve, 2 usage error."
        ),
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    parser.add_argument(
        "--port",
        type=port,
        default=8000,
        help="port to listen on, 0 for any free one (default: %(default)s)",
    )
    parser.add_argument(
        "--key-file",
        type=Path,
        metavar="PATH",
        help="where to write a generated key, mode 0600 "
        "(default: a private temporary file, removed on exit)",
    )
    parser.add_argument(
        "--read-only-key",
        action="store_true",
        help="register the key read-only: writes get 403, to try out permission errors",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the URLs, the SDK variables, the key's fingerprint and file as one JSON "
        "line instead of text",
    )
    parser.set_defaults(run=_run, command_parser=parser)


def _write_key_file(path: Path, key: str) -> None:
    # Created with 0600 from the start (no window where another user could read it), and
    # chmod-ed too in case the file already existed with wider permissions. Only a regular
    # file: opening a FIFO for writing waits for a reader forever. Not through a symlink
    # (it could point anywhere), and never blocking, should the path be swapped meanwhile.
    refuse_unless_regular(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(key + "\n")


def _say(text: str = "") -> None:
    # Flushed line by line: whoever reads our stdout through a pipe needs the URL now.
    print(text, flush=True)  # noqa: T201 (a CLI's output)


def _fail(message: str, code: int) -> int:
    print(f"resilient-runpod emulator: {message}", file=sys.stderr)  # noqa: T201 (a CLI's output)
    return code


def _run(args: argparse.Namespace) -> int:
    from resilient_runpod.testing import Emulator  # noqa: PLC0415 (keeps `resilient-runpod --help` fast)
    from resilient_runpod.testing._state import new_key  # noqa: PLC0415

    raw = os.environ.get("RUNPOD_API_KEY", "")
    try:
        key = clean(raw) if raw.strip() else new_key()
    except InvalidKeyError as exc:
        return _fail(f"RUNPOD_API_KEY: {exc}", 2)
    with ExitStack() as cleanup:
        # The key file first, before any signal handler is ours: should writing it get
        # stuck, Ctrl-C and SIGTERM still stop the process.
        try:
            key_file = cleanup.enter_context(
                _key_written(args.key_file, key, from_env=bool(raw.strip()))
            )
        except FileRefusedError as exc:
            return _fail(f"--key-file {args.key_file}: {exc.strerror}", 2)
        except OSError as exc:
            return _fail(f"cannot write the key file: {exc}", 1)
        keys, read_keys = ([], [key]) if args.read_only_key else ([key], [])
        try:
            emulator = Emulator(keys, read_keys=read_keys, host=args.host, port=args.port)
            emulator.start()
        except ImportError as exc:
            return _fail(str(exc), 2)
        except OSError as exc:
            return _fail(str(exc), 1)
        _serve(args, emulator, fingerprint(key), key_file)
    if not args.json:
        _say("RunPod emulator stopped.")
    return 0


def _serve(
    args: argparse.Namespace, emulator: Emulator, key_fingerprint: str, key_file: Path | None
) -> None:
    """Announce *emulator* and serve until SIGINT or SIGTERM; stop it either way."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.json:
            _announce_json(emulator, key_fingerprint, key_file, read_only=args.read_only_key)
        else:
            origin = (
                "from RUNPOD_API_KEY" if key_file is None else f"written to {key_file} (mode 0600)"
            )
            _announce(emulator, key_fingerprint, origin, read_only=args.read_only_key)
        # A timeout, so that the signal handler gets to run promptly on every platform.
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        emulator.stop()


@contextmanager
def _key_written(path: Path | None, key: str, *, from_env: bool) -> Iterator[Path | None]:
    """Write a generated *key* where its user can read it; yield that file (None: not written).

    Without *path*, a private temporary directory (mode 0700) holds it until the emulator
    stops: never the current directory, where a key file could end up in a commit.
    """
    if from_env:
        yield None
        return
    if path is not None:
        _write_key_file(path, key)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="runpod-emulator-") as private:
        path = Path(private) / "api-key"
        _write_key_file(path, key)
        yield path


def _announce_json(
    emulator: Emulator, key_fingerprint: str, key_file: Path | None, *, read_only: bool
) -> None:
    _say(
        json.dumps(
            {
                "url": emulator.url,
                "serverless_url": emulator.serverless_url,
                "graphql_url": emulator.graphql_url,
                "rest_url": emulator.rest_url,
                "admin_url": f"{emulator.url}/_emulator/",
                "endpoint_id": emulator.endpoint_id,
                "sdk_env": emulator.sdk_env,
                "fingerprint": key_fingerprint,
                "key_file": None if key_file is None else str(key_file),
                "read_only": read_only,
            }
        )
    )


def _announce(emulator: Emulator, key_fingerprint: str, origin: str, *, read_only: bool) -> None:
    scope = "read-only" if read_only else "full access"
    _say(f"RunPod emulator listening on {emulator.url}")
    _say(f"  serverless  {emulator.serverless_url}/{emulator.endpoint_id}/run (any endpoint id)")
    _say(f"  GraphQL     {emulator.graphql_url}")
    _say(f"  REST v2     {emulator.rest_url}/pods")
    _say(f"  admin       {emulator.url}/_emulator/")
    _say()
    _say("Point the runpod SDK at it:")
    for name, value in emulator.sdk_env.items():
        _say(f"  export {name}={value}")
    _say()
    _say(f"API key {key_fingerprint} ({scope}), {origin}")
    if emulator.host.rsplit(":", 1)[0] not in _LOOPBACK:
        _say("Warning: the admin API has no authentication; anyone who can reach it can add keys.")
    _say("Press Ctrl-C to stop.")
