"""Config and key files that are not small regular files are refused, never read.

A FIFO at ``~/.runpod/config.toml`` used to hang every reader, a link to ``/dev/zero``
read until memory ran out, a huge file took minutes to parse. Each is now refused at
once with an error naming the file and the fix. The files here are real: a FIFO made
with ``os.mkfifo``, a symlink to ``/dev/zero``, a 200 MB (sparse) file.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import pytest

from resilient_runpod import ConfigError, Credentials, SourceError, recovery
from resilient_runpod._config import config_path, load_config
from resilient_runpod._files import CONFIG_LIMIT, SECRET_FILE_LIMIT
from resilient_runpod.recovery import save_key

from .helpers import make_key, places_of, run_cli

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from resilient_runpod._errors import ResilientRunPodError


def _fifo(path: Path) -> str:
    os.mkfifo(path)
    return "a named pipe (FIFO), not a regular file"


def _dev_zero(path: Path) -> str:
    path.symlink_to("/dev/zero")
    return "a character device, not a regular file"


def _huge(path: Path) -> str:
    with path.open("wb") as file:
        file.truncate(200 * 1024 * 1024)  # sparse: 200 MB to stat, nothing on disk
    return f"it is {200 * 1024 * 1024} bytes"


KINDS = {"fifo": _fifo, "dev_zero": _dev_zero, "huge": _huge}


def _finishes(call: Callable[[], object]) -> BaseException | None:
    """Run *call* in a thread; return what it raised. A hang fails the test, not the run."""
    raised: list[BaseException | None] = [None]

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # handed to the test to assert on
            raised[0] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the call blocked on the file"
    return raised[0]


def _config_at_home(kind: str) -> tuple[Path, str]:
    path = config_path()
    path.parent.mkdir()
    return path, KINDS[kind](path)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_config_file_that_is_not_a_small_regular_file_is_refused(kind):
    """load_config and Credentials() refuse it with ConfigError naming the file and a fix."""
    path, why = _config_at_home(kind)

    errors = [_finishes(load_config), _finishes(Credentials)]

    for error in errors:
        assert isinstance(error, ConfigError)
        assert str(path) == error.path
        assert why in str(error)
        assert "resilient-runpod login" in str(error)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_secret_file_that_is_not_a_small_regular_file_is_a_source_error(tmp_path, kind):
    """from_file raises SourceError naming the file and saying what to point it at."""
    path = tmp_path / "secret"
    why = KINDS[kind](path)

    error = _finishes(recovery.from_file(path))

    assert isinstance(error, SourceError)
    assert f"cannot read secret file {path}: " in str(error)
    assert why in str(error)
    assert "point it at" in str(error)


@pytest.mark.parametrize("where", ["config", "key_file", "watched_key_file"])
def test_a_file_that_is_not_utf8_leaves_no_key_in_the_error_chain(
    where: str, tmp_path: Path
) -> None:
    """A key file or config file with a byte that is not UTF-8 after the key: the
    ConfigError or SourceError raised holds none of the file's bytes anywhere in its
    chain. Before, the codec's error stayed in ``__context__`` with the file in ``.object``.
    """
    key = make_key()
    if where == "config":
        path = config_path()
        path.parent.mkdir()
        path.write_bytes(f'[default]\napi_key = "{key}"\n# caf\xe9\n'.encode("latin-1"))
        read: Callable[[], object] = Credentials
    else:
        path = tmp_path / "secret"
        path.write_bytes(key.encode() + b"\n\xff")
        read = recovery.from_file(path, watch=where == "watched_key_file")

    error = _finishes(read)

    assert isinstance(error, (ConfigError, SourceError))
    assert isinstance(error.__context__, UnicodeDecodeError)  # still says what happened
    assert [] == places_of(key, error)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
@pytest.mark.parametrize("to_config", [True, False], ids=["config", "file"])
def test_saving_over_what_is_not_a_regular_file_is_refused(tmp_path, kind, to_config):
    """persist's targets: a FIFO or a device is left alone and ConfigError says why."""
    if to_config:
        path, why = _config_at_home(kind)
        save: Callable[[], object] = lambda: save_key(make_key())  # noqa: E731
    else:
        path = tmp_path / "secret"
        why = KINDS[kind](path)
        save = lambda: save_key(make_key(), path)  # noqa: E731

    error: ResilientRunPodError | BaseException | None = _finishes(save)

    assert isinstance(error, ConfigError)
    assert why in str(error)
    assert path.is_symlink() or not path.is_file()  # nothing replaced it


def test_files_at_the_caps_are_read(tmp_path):
    """The caps leave room: a config of 64 KiB and a key file of 16 KiB are still read."""
    key = make_key()
    config = tmp_path / "config.toml"
    line = f'[default]\napi_key = "{key}"\n'
    config.write_text(line + "#" * (CONFIG_LIMIT - len(line) - 1) + "\n")
    secret = tmp_path / "secret"
    secret.write_text(key + " " * (SECRET_FILE_LIMIT - len(key) - 1) + "\n")

    assert {"default": {"api_key": key}} == load_config(config)
    assert key == recovery.from_file(secret)().key


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_doctor_reports_the_file_without_a_traceback(tmp_path, kind):
    """`resilient-runpod doctor` in a real process: it ends, names the file, no traceback."""
    home = tmp_path / "home"
    path = home / ".runpod" / "config.toml"
    path.parent.mkdir(parents=True)
    KINDS[kind](path)
    env = {k: v for k, v in os.environ.items() if "RUNPOD" not in k.upper()}
    env["HOME"] = str(home)

    done = run_cli("doctor", "--offline", env=env)

    shown = "".join((done.stdout + done.stderr).split())  # doctor wraps lines at 80 columns
    assert "Traceback" not in shown
    assert f"refusingtoread{path}" in shown
    assert 1 == done.returncode
