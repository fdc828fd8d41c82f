"""Key sources: environment, secret file, RunPod's config file, a secret manager's command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import pytest
from structlog.testing import capture_logs

from resilient_runpod import (
    AuthenticationError,
    AuthFailure,
    Credentials,
    NonInteractiveError,
    RecoveredKey,
    RecoveryContext,
    RecoveryError,
    ResilientTransport,
    SourceError,
    recovery,
)
from resilient_runpod._hooks import is_async_callable

from .helpers import make_key
from .test_transport import async_client_for

CONTEXT = RecoveryContext("rpa_…OLD1", 1, 401, "GET", "https://api.runpod.ai/v2/ep/health")


def config_file() -> Path:
    path = Path.home() / ".runpod" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def python(code: str) -> list[str]:
    """argv of a tiny 'secret manager' that is certainly installed: this python."""
    return [sys.executable, "-c", code]


# -- environment -------------------------------------------------------------------------


def test_env_picks_up_a_changed_variable(monkeypatch):
    """The environment is re-read on each call, so a changed variable is seen."""
    hook = recovery.from_env()
    first, second = make_key(), make_key()
    monkeypatch.setenv("RUNPOD_API_KEY", first)
    assert RecoveredKey(first, "env:RUNPOD_API_KEY") == hook(CONTEXT)
    monkeypatch.setenv("RUNPOD_API_KEY", second)
    assert RecoveredKey(second, "env:RUNPOD_API_KEY") == hook(CONTEXT)


def test_env_falls_back_to_the_worker_variable(monkeypatch, key):
    """RUNPOD_AI_API_KEY (the key inside serverless workers) is the second default name."""
    monkeypatch.setenv("RUNPOD_AI_API_KEY", key)
    assert RecoveredKey(key, "env:RUNPOD_AI_API_KEY") == recovery.from_env()(CONTEXT)


def test_env_with_nothing_set_finds_nothing():
    """No variable set: None, so a chain moves on."""
    assert None is recovery.from_env()(CONTEXT)


def test_env_with_an_s3_key_is_a_clear_error(monkeypatch):
    """A variable holding an rps_ key fails naming the variable, not the key."""
    s3 = "rps_" + "Q" * 40
    monkeypatch.setenv("RUNPOD_API_KEY", s3)
    with pytest.raises(SourceError) as caught:
        recovery.from_env()(CONTEXT)
    assert "$RUNPOD_API_KEY" in str(caught.value)
    assert s3 not in str(caught.value)


# -- secret file -------------------------------------------------------------------------


def test_file_is_reread_and_its_newline_stripped(tmp_path, key):
    """A mounted secret updated in place is picked up; the trailing newline is removed."""
    secret = tmp_path / "runpod-key"
    hook = recovery.from_file(secret)
    secret.write_text(key + "\n")
    assert key == hook(CONTEXT).key
    newer = make_key()
    secret.write_text(newer + "\n")
    assert RecoveredKey(newer, f"file:{secret}") == hook(CONTEXT)


@pytest.mark.parametrize(
    ("prepare", "message"),
    [
        (lambda _p: None, "does not exist"),
        (lambda p: p.mkdir(), "cannot read secret file"),
        (lambda p: p.write_bytes(b"\xff\xfe rpa_"), "cannot read secret file"),
        (lambda p: p.write_text("\n"), "is empty"),
    ],
    ids=["missing", "a-directory", "not-utf8", "empty"],
)
def test_file_problems_are_clear_errors(tmp_path, prepare, message):
    """A missing, unreadable or empty secret file is a SourceError naming the file."""
    secret = tmp_path / "runpod-key"
    prepare(secret)
    with pytest.raises(SourceError) as caught:
        recovery.from_file(secret)(CONTEXT)
    assert message in str(caught.value)
    assert str(secret) in str(caught.value)


# -- RunPod config file ------------------------------------------------------------------


def test_config_reads_the_sdk_entry_then_runpodctls(key):
    """[default].api_key (the SDK's) wins; runpodctl's top-level apiKey is the fallback."""
    ctl = make_key()
    path = config_file()
    path.write_text(f'apiKey = "{ctl}"\n')
    hook = recovery.from_runpod_config()
    assert RecoveredKey(ctl, "config:apiKey") == hook(CONTEXT)
    path.write_text(f'apiKey = "{ctl}"\n\n[default]\napi_key = "{key}"\n')
    assert RecoveredKey(key, "config:[default].api_key") == hook(CONTEXT)


def test_config_profile(key):
    """profile= selects the table."""
    config_file().write_text(f'[default]\napi_key = "{make_key()}"\n[work]\napi_key = "{key}"\n')
    assert key == recovery.from_runpod_config("work")(CONTEXT).key


def test_config_that_is_not_toml_names_the_file(key):
    """A config file that is not TOML is a SourceError naming the file, never a crash."""
    path = config_file()
    path.write_text(f"[default\napi_key = {key}\n")
    with pytest.raises(SourceError) as caught:
        recovery.from_runpod_config()(CONTEXT)
    assert str(path) in str(caught.value)
    assert "not valid TOML" in str(caught.value)
    assert key not in str(caught.value)


def test_config_missing_finds_nothing():
    """No config file: None."""
    assert None is recovery.from_runpod_config()(CONTEXT)


# -- a secret manager's command ----------------------------------------------------------


def test_command_picks_up_a_changed_secret(tmp_path, key):
    """The command runs on each call; its stdout, stripped, is the key."""
    store = tmp_path / "store"
    hook = recovery.from_command(python(f"print(open({str(store)!r}).read())"))
    store.write_text(key)
    assert RecoveredKey(key, "command:" + Path(sys.executable).name) == hook(CONTEXT)
    newer = make_key()
    store.write_text(newer)
    assert newer == hook(CONTEXT).key


def test_failing_command_reports_stderr_not_stdout(key):
    """A non-zero exit is reported with the command's stderr; its stdout never shows."""
    code = (
        f"import sys; print({key!r}); "
        "print('permission denied: secret/runpod', file=sys.stderr); sys.exit(3)"
    )
    with pytest.raises(SourceError) as caught:
        recovery.from_command(python(code))(CONTEXT)
    message = str(caught.value)
    assert "exit status 3" in message
    assert "permission denied: secret/runpod" in message
    assert key not in message


def test_stderr_echoing_the_secret_is_scrubbed(key):
    """Even a command that echoes its stdout on stderr does not leak the key."""
    code = f"import sys; print({key!r}); print('got ' + {key!r}, file=sys.stderr); sys.exit(1)"
    with pytest.raises(SourceError) as caught:
        recovery.from_command(python(code))(CONTEXT)
    assert key not in str(caught.value)


def test_command_timing_out_is_reported():
    """A command that hangs is killed after timeout= and reported."""
    hook = recovery.from_command(python("import time; time.sleep(60)"), timeout=0.5)
    with pytest.raises(SourceError) as caught:
        hook(CONTEXT)
    assert "did not finish within 0.5 seconds" in str(caught.value)


def test_command_printing_nothing_is_reported():
    """Empty output is an error, with stderr."""
    hook = recovery.from_command(python("import sys; print('no such secret', file=sys.stderr)"))
    with pytest.raises(SourceError) as caught:
        hook(CONTEXT)
    assert "printed nothing" in str(caught.value)
    assert "no such secret" in str(caught.value)


def test_missing_program_is_reported():
    """A program not on PATH is named in the error."""
    with pytest.raises(SourceError) as caught:
        recovery.from_command(["no-such-vault-cli-xyz", "read"])(CONTEXT)
    assert "no-such-vault-cli-xyz was not found" in str(caught.value)


def test_command_without_a_shell_only():
    """A string command is refused: argv lists run without a shell."""
    with pytest.raises(TypeError, match="list of arguments"):
        recovery.from_command("vault kv get secret/runpod")  # type: ignore[arg-type]


def test_command_stdin_is_closed(key):
    """A command that tries to ask on stdin gets EOF at once instead of hanging."""
    hook = recovery.from_command(python("import sys; sys.stdin.read(); print('" + key + "')"))
    assert key == hook(CONTEXT).key


# -- chains and the default --------------------------------------------------------------


def test_default_chain_is_env_config_then_prompt():
    """default() tries the environment, the config file, then a person."""
    hook = recovery.default()
    assert "chain(env:RUNPOD_API_KEY,RUNPOD_AI_API_KEY, config:default, prompt)" == hook.name


def test_default_chain_where_nobody_can_answer_says_what_to_set(runpod_emulator):
    """With no key anywhere and no terminal, the chain has nothing new: it says so as a bare
    prompt that cannot ask does (NonInteractiveError, listing each hook), which is not a
    failure, and the request fails at once naming what to set.
    """
    with pytest.raises(NonInteractiveError, match="config:default: no key"):
        recovery.default()(CONTEXT)
    credentials = Credentials(hosts=[runpod_emulator.host])
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"

    with (
        httpx.Client(transport=ResilientTransport(credentials)) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.get(url)

    assert AuthFailure.NEVER_ACCEPTED == caught.value.reason
    # Why nobody was asked, and what to set instead: what a bare prompt() adds to the
    # error (its NonInteractiveError's message), and what the chain must not lose.
    assert "prompt: stdin is not a terminal" in str(caught.value)
    assert "Set RUNPOD_API_KEY" in str(caught.value)


def test_default_chain_takes_the_config_key(key):
    """A key saved to the config file is found before anyone is asked."""
    config_file().write_text(f'[default]\napi_key = "{key}"\n')
    assert RecoveredKey(key, "config:[default].api_key") == recovery.default()(CONTEXT)


def test_source_travels_into_the_recovered_event(tmp_path, runpod_emulator):
    """Where the key came from is in the runpod.auth.recovered event and on Credentials."""
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    store = tmp_path / "store"
    store.write_text(new)
    hook = recovery.chain(
        recovery.from_env(), recovery.from_command(python(f"print(open({str(store)!r}).read())"))
    )
    credentials = Credentials(old, recovery=hook, hosts=[runpod_emulator.host])
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    with capture_logs() as logs, httpx.Client(transport=ResilientTransport(credentials)) as client:
        assert 200 == client.get(url).status_code
    recovered = [e for e in logs if e["event"] == "runpod.auth.recovered"]
    source = "command:" + Path(sys.executable).name
    assert [source] == [e["source"] for e in recovered]
    assert source == credentials.source


def test_failing_command_fails_the_request_without_leaking(runpod_emulator):
    """A broken secret manager ends in AuthenticationError whose text has its stderr."""
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    hook = recovery.from_command(python("import sys; sys.exit('vault: token expired')"))
    credentials = Credentials(old, recovery=hook, hosts=[runpod_emulator.host])
    url = f"{runpod_emulator.serverless_url}/{runpod_emulator.endpoint_id}/health"
    with (
        httpx.Client(transport=ResilientTransport(credentials)) as client,
        pytest.raises(AuthenticationError) as caught,
    ):
        client.get(url)
    assert "vault: token expired" in str(caught.value)
    assert old not in str(caught.value)


def test_chain_error_and_its_cause_never_quote_a_key(key):
    """A hook quoting the key (in its message and its own cause) is reported scrubbed,
    and what chain() chains as the cause is a scrubbed stand-in naming the hook's type.
    """

    def vault() -> str:
        try:
            raise KeyError(key)  # noqa: TRY301 -- a chain, as a vault client builds one
        except KeyError as exc:
            raise ValueError(f"token {key} refused") from exc

    hook = recovery.chain(recovery.callback(vault, name="vault"))
    with pytest.raises(RecoveryError) as caught:
        hook(RecoveryContext("rpa_…OLD1", 1, 401, "GET", "https://api.runpod.ai/x"))

    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert [] == [e for e in chain if key in f"{e} {e!r}"]
    assert f"ValueError: token rpa_…{key[-4:]} refused" == str(chain[1])
    assert 3 == len(chain)


def test_command_repr_hides_a_key_in_its_arguments(key):
    """repr(from_command([...])) shows a key among the arguments by fingerprint only."""
    hook = recovery.from_command(["vault", "login", key])
    assert key not in repr(hook)
    assert f"rpa_…{key[-4:]}" in repr(hook)


# -- async hooks inside the wrappers -----------------------------------------------------

WRAPPERS = {
    "chain": lambda hook, tmp: recovery.chain(recovery.from_env("RR_TEST_UNSET"), hook),
    "callback": lambda hook, tmp: recovery.callback(hook, name="store"),
    "persist": lambda hook, tmp: recovery.persist(hook, tmp / "saved"),
    "shared": lambda hook, tmp: recovery.shared(hook, name=f"async-{tmp.name}"),
}


@pytest.mark.anyio
@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
async def test_an_async_hook_in_a_wrapper_runs_on_the_callers_loop(
    wrapper, runpod_emulator, tmp_path, monkeypatch
):
    """chain, callback, persist and shared run an async hook on the async client's loop.

    The hook uses a client made on that loop (an application's session), as a secret
    manager's async client would; the rejected request is sent again with its key.
    """
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    loops: list[asyncio.AbstractEventLoop] = []

    async with httpx.AsyncClient() as session:  # bound to this test's loop

        async def from_the_store(context: RecoveryContext) -> str:
            loops.append(asyncio.get_running_loop())
            await session.get(f"{runpod_emulator.api_url}/health")  # fails on another loop
            return new

        hook = WRAPPERS[wrapper](from_the_store, tmp_path)
        credentials = Credentials(old, recovery=hook, hosts=[runpod_emulator.host])
        async with async_client_for(runpod_emulator, credentials) as client:
            response = await client.get("/health")

    assert (200, new) == (response.status_code, credentials.api_key)
    assert [asyncio.get_running_loop()] == loops


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_a_wrapper_is_async_only_around_an_async_hook(wrapper, tmp_path):
    """Around sync hooks a wrapper stays sync (run in the recovery thread as before)."""

    def sync_hook(context: RecoveryContext) -> str:
        return make_key()

    async def async_hook(context: RecoveryContext) -> str:
        return make_key()

    wrap = WRAPPERS[wrapper]
    assert (False, True) == (
        is_async_callable(wrap(sync_hook, tmp_path)),
        is_async_callable(wrap(async_hook, tmp_path)),
    )
