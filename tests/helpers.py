"""Helpers shared by the tests: one definition of each, imported where needed.

Fixtures live in ``conftest.py``; plain functions and classes live here, so a test
module imports them by name instead of writing them again.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from resilient_runpod import RetryPolicy
from resilient_runpod.testing._state import new_key

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from http.server import BaseHTTPRequestHandler
    from pathlib import Path

    from resilient_runpod import RecoveryContext

__all__ = [
    "BRIEF",
    "ISOLATED_VARIABLES",
    "Counting",
    "closed_port",
    "handing_out",
    "in_threads",
    "make_key",
    "places_of",
    "run_cli",
    "run_cli_batch",
    "serving",
    "wait_for",
]

T = TypeVar("T")

# A safety net, not a timing assertion: a hung child or condition must not hang the suite.
PATIENCE = 60.0

# Variables that change where keys come from, where they may go, or whether a prompt
# may be shown. CI sets some of them (CI=true); tests that need one set it themselves.
ISOLATED_VARIABLES = (
    "RUNPOD_API_KEY",
    "RUNPOD_AI_API_KEY",
    "RUNPOD_ENDPOINT_BASE_URL",
    "RUNPOD_API_BASE_URL",
    "RUNPOD_API_URL",
    "RUNPOD_GRAPHQL_URL",
    "RESILIENT_RUNPOD_NO_PROMPT",
    "CI",
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "BUILDKITE",
    "JENKINS_URL",
    "TF_BUILD",
)


make_key = new_key
"""A fresh key of RunPod's shape, the one the emulator mints: no server knows it."""

BRIEF = RetryPolicy(attempts=2, backoff=tenacity.wait_none())
"""Two sends, no wait between them: a transient give-up reached at once."""


class Counting:
    """Wraps a recovery hook and counts its calls (thread-safe); returns what the hook returns."""

    def __init__(self, hook: Callable[[RecoveryContext], object], name: str | None = None) -> None:
        self.hook = hook
        self.calls = 0
        self.name = name or f"counting({getattr(hook, 'name', 'hook')})"
        self._lock = threading.Lock()

    def __call__(self, context: RecoveryContext) -> object:
        with self._lock:
            self.calls += 1
        return self.hook(context)


def handing_out(*keys: str | None, delay: float = 0.0) -> Counting:
    """A counting hook that hands out *keys* in order, then None; each call first sleeps *delay*."""
    queue = list(keys)
    lock = threading.Lock()

    def hand_out(_context: RecoveryContext) -> str | None:
        with lock:
            key = queue.pop(0) if queue else None
        if delay:
            time.sleep(delay)
        return key

    return Counting(hand_out, name="handing_out")


def in_threads(call: Callable[[], T], count: int = 64) -> list[T]:
    """Run *call* in *count* threads released together; return their results in order."""
    barrier = threading.Barrier(count)

    def run(_: int) -> T:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def closed_port() -> str:
    """``127.0.0.1:PORT`` where nothing listens: connecting there is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on loopback answering with *handler*; yields its ``HOST:PORT``.

    For answers the emulator never gives (a careless proxy, a malformed body).
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(condition: Callable[[], object], timeout: float = PATIENCE) -> bool:
    """Poll *condition* until it is true (True) or *timeout* seconds pass (False).

    Callers assert the result: a precondition that never came fails the test by name.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# Runs the CLI's `main` once per argument list in one interpreter, each with its own
# stdout and stderr: the exit code is what `main` returns or what SystemExit carries.
_BATCH = """
import contextlib, io, json, sys
from resilient_runpod.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    results.append([code, out.getvalue(), err.getvalue()])
sys.__stdout__.write(json.dumps(results))
"""


def run_cli_batch(
    argvs: Sequence[Sequence[str]], env: Mapping[str, str]
) -> dict[tuple[str, ...], tuple[int, str, str]]:
    """Run the CLI for each of *argvs* in ONE real subprocess; map each to (code, out, err).

    For command-line conventions (usage errors, --help, exit codes) checked over many
    argument lists: each starts a fresh ``main`` with stdin at /dev/null, without paying
    for an interpreter each. What only a process shows (``python -m``, the exit status)
    is checked with `run_cli`.
    """
    done = run_cli(json.dumps([list(argv) for argv in argvs]), env=env, python=("-c", _BATCH))
    assert 0 == done.returncode, done.stderr
    results = json.loads(done.stdout)
    return {
        tuple(argv): (code, out, err) for argv, (code, out, err) in zip(argvs, results, strict=True)
    }


def run_cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path | None = None,
    python: Sequence[str] = ("-m", "resilient_runpod.cli"),
    stdin: int | None = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[str]:
    """Run ``resilient-runpod ARGS`` as a real subprocess, as a person or a script would.

    *python* is what starts the CLI in the child (``-m resilient_runpod.cli`` unless a
    test starts it another way); stdin is /dev/null unless given.
    """
    return subprocess.run(
        [sys.executable, *python, *args],
        env=dict(env),
        cwd=cwd,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=PATIENCE * 2,
        check=False,
    )


# How deep `places_of` follows attributes: an error's request's headers' list is four.
_DEPTH = 8
_ATOMS = (str, bytes, bytearray, memoryview, int, float, type(None))
# Attributes of exceptions kept outside __dict__ (in C, or as properties).
_ERROR_ATTRIBUTES = ("args", "__cause__", "__context__", "object", "__notes__", "exceptions")
_ERROR_PROPERTIES = ("request", "response")


def places_of(secret: str, found_in: object) -> list[str]:
    """Where *secret*, as text or as UTF-8 bytes, shows in *found_in*; empty if nowhere.

    An exception is searched whole: its text, repr and formatted traceback, its args,
    every attribute (``.object`` of a decode error, ``.request`` of an HTTP error, and
    those of the request in turn), its notes, its group members, and its ``__cause__``
    and ``__context__`` chain. Other objects are searched through their repr, their
    items and their attributes.
    """
    search = _Search(secret)
    search.visit("it", found_in, 0)
    return search.places


class _Search:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.places: list[str] = []
        self.seen: set[int] = set()

    def holds(self, value: object) -> bool:
        if isinstance(value, str):
            return self.secret in value
        if isinstance(value, (bytes, bytearray, memoryview)):
            return self.secret.encode() in bytes(value)
        return False

    def visit(self, where: str, value: object, depth: int) -> None:
        if self.holds(value):
            self.places.append(where)
            return
        if isinstance(value, _ATOMS) or id(value) in self.seen or depth > _DEPTH:
            return
        self.seen.add(id(value))
        self.texts(where, value)
        for name, part in self.parts(value):
            self.visit(f"{where}{name}", part, depth + 1)

    def texts(self, where: str, value: object) -> None:
        shown = {"repr": _text(repr, value)}
        if isinstance(value, BaseException):
            shown["str"] = _text(str, value)
            shown["traceback"] = _text(lambda e: "".join(traceback.format_exception(e)), value)
        self.places += [f"{how}({where})" for how, text in shown.items() if self.secret in text]

    @staticmethod
    def parts(value: object) -> list[tuple[str, object]]:
        parts: list[tuple[str, object]] = []
        if isinstance(value, BaseException):
            parts += [(f".{name}", getattr(value, name, None)) for name in _ERROR_ATTRIBUTES]
            parts += [(f".{name}", _property(value, name)) for name in _ERROR_PROPERTIES]
        if isinstance(value, Mapping):
            parts += [(f"[{k!r}]", k) for k in value] + [(f"[{k!r}]", v) for k, v in value.items()]
        elif isinstance(value, (list, tuple, set, frozenset)):
            parts += [(f"[{n}]", item) for n, item in enumerate(value)]
        attributes = dict(getattr(value, "__dict__", None) or {})
        attributes.update(
            (name, getattr(value, name))
            for name in getattr(type(value), "__slots__", ())
            if hasattr(value, name)
        )
        parts += [
            (f".{name}", a)
            for name, a in attributes.items()
            if not callable(a) or isinstance(a, BaseException)
        ]
        return parts


def _text(show: Callable[[Any], str], value: object) -> str:
    try:
        return show(value)
    except Exception:  # a broken repr shows nothing
        return ""


def _property(value: object, name: str) -> object:
    try:
        return getattr(value, name, None)
    except Exception:  # httpx's .request raises when none was set
        return None
