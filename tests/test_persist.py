"""Saving a key for the next run: RunPod's config file (kept as it was) or a plain file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from resilient_runpod import (
    AsyncResilientTransport,
    AuthenticationError,
    ConfigError,
    Credentials,
    RecoveryContext,
    ResilientTransport,
    _flight,
    recovery,
)
from resilient_runpod.recovery._persist import save_to_config, save_to_file

from .helpers import make_key, wait_for

CONTEXT = RecoveryContext("rpa_…OLD1", 1, 401, "GET", "https://api.runpod.ai/v2/ep/health")

EXISTING = """\
# written by hand; keep this comment
apiKey = "{ctl}"

[default]
api_key = "{old}"
endpoint = "https://example.invalid"  # a note

[work]
api_key = "{work}"
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def config() -> Path:
    return Path.home() / ".runpod" / "config.toml"


def test_new_config_is_written_private_in_the_sdks_format(key):
    """A first save creates ~/.runpod (0700) and config.toml (0600) with [default].api_key."""
    path = save_to_config(key)
    assert config() == path
    assert f'[default]\napi_key = "{key}"\n' == path.read_text()
    assert 0o600 == mode(path)
    assert 0o700 == mode(path.parent)


def test_existing_config_keeps_everything_else(key):
    """Only [profile].api_key changes: comments, other tables and runpodctl's entry stay."""
    old, ctl, work = make_key(), make_key(), make_key()
    config().parent.mkdir()
    config().write_text(EXISTING.format(ctl=ctl, old=old, work=work))
    config().chmod(0o644)
    save_to_config(key)
    assert EXISTING.format(ctl=ctl, old=key, work=work) == config().read_text()
    assert 0o600 == mode(config())


def test_other_profile_gets_its_own_table(key):
    """profile= writes [profile] and leaves [default] alone."""
    old = make_key()
    save_to_config(old)
    save_to_config(key, profile="ci")
    assert f'[default]\napi_key = "{old}"\n\n[ci]\napi_key = "{key}"\n' == config().read_text()


def test_loose_runpod_directory_is_tightened(key):
    """An existing ~/.runpod readable by others is made 0700."""
    config().parent.mkdir()
    config().parent.chmod(0o755)
    save_to_config(key)
    assert 0o700 == mode(config().parent)


def test_bad_toml_is_refused_and_left_untouched(key):
    """A config file that is not TOML is not overwritten: ConfigError naming it."""
    config().parent.mkdir()
    broken = "[default\napi_key = 'x'\n"
    config().write_text(broken)
    with pytest.raises(ConfigError) as caught:
        save_to_config(key)
    assert str(config()) in str(caught.value)
    assert broken == config().read_text()
    assert [config()] == list(config().parent.iterdir())  # no temporary file left behind


def test_profile_that_is_not_a_table_is_refused(key):
    """`default = "..."` cannot take an api_key: a clear error, the file untouched."""
    config().parent.mkdir()
    config().write_text('default = "oops"\n')
    with pytest.raises(ConfigError, match="not a \\[default\\] table"):
        save_to_config(key)
    assert 'default = "oops"\n' == config().read_text()


def test_symlinked_config_stays_a_symlink(tmp_path, key):
    """A config file that is a symlink (a dotfiles repo) is written through, not replaced."""
    real = tmp_path / "dotfiles" / "runpod.toml"
    real.parent.mkdir()
    real.write_text("[default]\n")
    config().parent.mkdir()
    config().symlink_to(real)
    save_to_config(key)
    assert config().is_symlink()
    assert f'[default]\napi_key = "{key}"\n' == real.read_text()


def test_invalid_key_is_never_saved():
    """A key that cannot be sent is refused before anything is written."""
    with pytest.raises(ValueError, match="S3"):
        save_to_config("rps_" + "A" * 40)
    assert not config().exists()


def test_plain_file_is_what_from_file_reads(tmp_path, key):
    """save_to_file writes the key and a newline, 0600, in a new 0700 directory."""
    path = save_to_file(key, tmp_path / "secrets" / "runpod")
    assert key + "\n" == path.read_text()
    assert 0o600 == mode(path)
    assert 0o700 == mode(path.parent)
    assert key == recovery.from_file(path)(CONTEXT).key


def test_the_runpod_sdk_reads_the_saved_key(key):
    """The real runpod SDK, imported afresh, starts with the saved key."""
    save_to_config(key)
    env = {**os.environ, "HOME": str(Path.home())}
    done = subprocess.run(
        [sys.executable, "-c", "import runpod; print(runpod.api_key)"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert key == done.stdout.strip().splitlines()[-1]


def test_persist_wrapper_saves_what_its_hook_found(tmp_path, key):
    """persist(hook) returns the hook's key, with its source, and saves it to the config."""
    secret = tmp_path / "secret"
    secret.write_text(key + "\n")
    hook = recovery.persist(recovery.from_file(secret), when="found")
    found = hook(CONTEXT)
    assert (key, f"file:{secret}") == (found.key, found.source)
    assert key == recovery.from_runpod_config()(CONTEXT).key


def test_persist_wrapper_to_a_file(tmp_path, key):
    """persist(hook, to=path) writes that file only."""
    target = tmp_path / "out" / "key"
    recovery.persist(lambda _ctx: key, to=target, when="found")(CONTEXT)
    assert key + "\n" == target.read_text()
    assert not config().exists()


def test_persist_wrapper_keeps_a_key_it_cannot_save(key):
    """A failed save is logged and the key still returned: recovery is not lost to a disk."""
    config().parent.mkdir()
    config().write_text("not [toml\n")
    with capture_logs() as logs:
        found = recovery.persist(lambda _ctx: key, when="found")(CONTEXT)
    assert key == found.key
    failed = [e for e in logs if e["event"] == "runpod.auth.persist_failed"]
    assert 1 == len(failed)
    assert key not in str(failed)


def test_persist_wrapper_with_nothing_found_saves_nothing():
    """A hook that finds nothing: None, and no file."""
    assert None is recovery.persist(lambda _ctx: None)(CONTEXT)
    assert not config().exists()


def test_recovered_key_is_there_for_the_next_run(tmp_path, runpod_emulator):
    """End to end: recovery via a rotated secret saves it; a fresh Credentials starts with it."""
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    secret = tmp_path / "secret"
    secret.write_text(new)
    hook = recovery.persist(recovery.from_file(secret))
    credentials = Credentials(old, recovery=hook, hosts=[runpod_emulator.host])
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    with httpx.Client(transport=ResilientTransport(credentials)) as client:
        assert 200 == client.get(url).status_code
    next_run = Credentials()
    assert (new, "config:[default].api_key") == (next_run.api_key, next_run.source)


def test_a_key_runpod_rejects_is_never_saved(tmp_path, runpod_emulator):
    """By default a key is saved only once RunPod accepted it; a rejected one leaves no trace."""
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    unknown = runpod_emulator.add_key()
    runpod_emulator.revoke(unknown)  # the hook will find a key that RunPod rejects too
    hook = recovery.persist(lambda _ctx: unknown)
    credentials = Credentials(old, recovery=hook, hosts=[runpod_emulator.host], max_recoveries=1)
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    with (
        httpx.Client(transport=ResilientTransport(credentials)) as client,
        pytest.raises(AuthenticationError),
    ):
        client.get(url)
    assert not config().exists()


def test_found_key_is_saved_only_after_runpod_accepts_it(tmp_path, runpod_emulator):
    """Between the hook's answer and RunPod's acceptance nothing is written."""
    new = runpod_emulator.add_key()
    hook = recovery.persist(lambda _ctx: new)
    found = hook(CONTEXT)
    assert not config().exists()

    hook.accepted(found)

    assert new == recovery.from_runpod_config()(CONTEXT).key


@pytest.mark.anyio
async def test_an_async_client_saves_the_accepted_key_off_the_event_loop(tmp_path, runpod_emulator):
    """A hook's ``accepted()`` (where `persist` writes its file) runs in a thread when the
    request came from an event loop, which must not block; the key is saved all the same."""
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    secret = tmp_path / "secret"
    secret.write_text(new)
    persisting = recovery.persist(recovery.from_file(secret))
    told: list[tuple[str, bool]] = []

    class Telling:
        """`persist`, and a note of the thread ``accepted`` was called in."""

        def __call__(self, context: RecoveryContext) -> object:
            return persisting(context)

        def accepted(self, found: object) -> None:
            told.append((threading.current_thread().name, _flight.on_event_loop()))
            persisting.accepted(found)  # type: ignore[arg-type]

    credentials = Credentials(old, recovery=Telling(), hosts=[runpod_emulator.host])
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"

    async with httpx.AsyncClient(transport=AsyncResilientTransport(credentials)) as client:
        status = (await client.get(url)).status_code

    assert wait_for(lambda: config().exists())
    assert 200 == status
    assert [("resilient-runpod-told_0", False)] == told
    assert (new, "config:[default].api_key") == (Credentials().api_key, Credentials().source)
