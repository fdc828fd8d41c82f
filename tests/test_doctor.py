"""`resilient-runpod doctor` against the emulator: each cause of a rejected key, explained."""

from __future__ import annotations

import json
import os
import socket

import pytest

from resilient_runpod._keys import fingerprint
from resilient_runpod.cli import main

from .helpers import make_key, run_cli

JSON_KEYS = {
    "ok",
    "exit_code",
    "profile",
    "config_path",
    "config_exists",
    "sources",
    "winners",
    "live",
    "offline",
    "findings",
}
FINDING_KEYS = {"code", "severity", "what", "why", "fix", "source"}


def doctor(capsys, *args):
    """Run doctor in this process; return (exit code, parsed JSON, all output)."""
    code = main(["doctor", "--json", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out), out + err


def doctor_process(home, env, *args):
    """Run doctor as a real subprocess with only *env* as RunPod-related environment."""
    clean = {k: v for k, v in os.environ.items() if "RUNPOD" not in k.upper()}
    clean.update(env, HOME=str(home))
    return run_cli("doctor", *args, env=clean)


def write_config(home, text):
    path = home / ".runpod" / "config.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def codes(data):
    return [f["code"] for f in data["findings"]]


def the(data, code):
    found = [f for f in data["findings"] if f["code"] == code]
    assert 1 == len(found), f"expected one {code!r} in {codes(data)}"
    return found[0]


def leaked(output, *keys):
    return [k for k in keys if k in output or k[4:] in output]


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def test_working_key_exits_0_with_the_json_shape(runpod_emulator, capsys, monkeypatch):
    """A key RunPod accepts: exit 0, ok, every documented field, the key never printed."""
    key = runpod_emulator.api_key
    monkeypatch.setenv("RUNPOD_API_KEY", key)

    code, data, output = doctor(capsys, "--api-url", runpod_emulator.api_url)

    assert 0 == code
    assert JSON_KEYS == set(data)
    assert all(FINDING_KEYS == set(f) for f in data["findings"])
    assert (True, 0) == (data["ok"], data["exit_code"])
    assert "accepted" == data["live"][0]["status"]
    assert "env:RUNPOD_API_KEY" == data["winners"]["library"]
    source = {
        "name": "env:RUNPOD_API_KEY",
        "where": "the environment variable RUNPOD_API_KEY",
        "fingerprint": fingerprint(key),
        "used_by": ["library", "runpodctl"],
    }
    assert [source] == data["sources"]
    assert "ok" == the(data, "key-accepted")["severity"]
    assert [] == leaked(output, key)


def test_no_key_anywhere(runpod_emulator, capsys):
    """Cause 1: no key at all: one `no-key` error, no request sent, no second error about it."""
    code, data, _ = doctor(capsys, "--api-url", runpod_emulator.api_url)

    assert 1 == code
    assert ["no-key"] == codes(data)
    assert [] == data["live"]
    assert 0 == runpod_emulator.counters().total
    assert "resilient-runpod login" in data["findings"][0]["fix"]


def test_no_key_and_no_network_is_still_one_error(capsys):
    """Without a key the API is not asked, so an unreachable API adds no error of its own."""
    code, data, _ = doctor(capsys, "--api-url", "http://127.0.0.1:9")

    assert (1, ["no-key"]) == (code, codes(data))


def test_misspelled_variable_in_a_real_process(runpod_emulator, home):
    """Cause 1: a key in RUNPOD_APIKEY: the found and expected names, exit 1, key not shown."""
    key = runpod_emulator.api_key

    result = doctor_process(home, {"RUNPOD_APIKEY": key}, "--api-url", runpod_emulator.api_url)

    text = " ".join(result.stdout.split())  # the text is wrapped to the terminal's width

    assert 1 == result.returncode
    assert "RUNPOD_APIKEY is set" in text
    assert "but RunPod's tools read RUNPOD_API_KEY" in text
    # The specific fix leads; the generic "no key is set" is dropped.
    first = text.split("[error]")[1]
    assert 'fix: Rename it: export RUNPOD_API_KEY="$RUNPOD_APIKEY"' in first
    assert 1 == text.count("[error]")
    assert "no RunPod API key is set" not in text
    assert "" == result.stderr
    assert [] == leaked(result.stdout + result.stderr, key)


def test_key_only_in_runpod_ai_api_key_is_no_key_for_the_tools(runpod_emulator, home):
    """Only RUNPOD_AI_API_KEY set: no tool has a key, so an error naming the variable they read."""
    key = runpod_emulator.api_key

    result = doctor_process(home, {"RUNPOD_AI_API_KEY": key}, "--api-url", runpod_emulator.api_url)

    text = " ".join(result.stdout.split())  # the text is wrapped to the terminal's width
    assert 1 == result.returncode
    assert "the key setup works" not in text
    assert "no tool here starts with a key" in text
    assert 'export RUNPOD_API_KEY="$RUNPOD_AI_API_KEY"' in text
    assert [] == leaked(result.stdout + result.stderr, key)


def test_revoked_key_is_rejected(runpod_emulator, capsys, monkeypatch):
    """Cause 2: a revoked key gets 401: key-rejected with where to make a new one."""
    key = runpod_emulator.api_key
    runpod_emulator.revoke(key)
    monkeypatch.setenv("RUNPOD_API_KEY", key)

    code, data, output = doctor(capsys, "--api-url", runpod_emulator.api_url)
    finding = the(data, "key-rejected")

    assert 1 == code
    assert "rejected" == data["live"][0]["status"]
    assert ("error", "env:RUNPOD_API_KEY") == (finding["severity"], finding["source"])
    assert "https://www.runpod.io/console/user/settings" in finding["fix"]
    assert [] == leaked(output, key)


def test_forbidden_is_not_rejected(runpod_emulator, capsys, monkeypatch):
    """A 403 is reported as a key lacking permission, not as a rejected key."""
    monkeypatch.setenv("RUNPOD_API_KEY", runpod_emulator.api_key)
    runpod_emulator.inject(403, path_prefix="/graphql")

    code, data, _ = doctor(capsys, "--api-url", runpod_emulator.api_url)

    assert 1 == code
    assert "forbidden" == data["live"][0]["status"]
    assert "key-rejected" not in codes(data)
    assert "error" == the(data, "key-forbidden")["severity"]


def test_firewall_page_is_not_called_a_key_without_permission(runpod_emulator, home):
    """A firewall's HTML 403: unreachable, advice about the firewall/proxy, no key-forbidden."""
    key = runpod_emulator.api_key
    runpod_emulator.inject(403, path_prefix="/graphql", firewall=True)

    result = doctor_process(
        home, {"RUNPOD_API_KEY": key}, "--json", "--api-url", runpod_emulator.api_url
    )

    data = json.loads(result.stdout)
    assert 1 == result.returncode
    assert "unreachable" == data["live"][0]["status"]
    assert "key-forbidden" not in codes(data)
    finding = the(data, "unreachable")
    assert "a firewall or proxy in front of RunPod refused the request" in finding["what"]
    assert "a firewall or proxy in front of RunPod" in finding["fix"]
    assert [] == leaked(result.stdout + result.stderr, key)


def test_network_failure_is_unreachable(capsys, monkeypatch):
    """Nothing listening: unreachable, not rejected, and --offline is offered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RUNPOD_API_KEY", make_key())

    code, data, _ = doctor(capsys, "--api-url", f"http://127.0.0.1:{port}")

    assert 1 == code
    assert "unreachable" == data["live"][0]["status"]
    assert "--offline" in the(data, "unreachable")["fix"]


@pytest.mark.parametrize(
    ("make_raw", "code"),
    [
        (lambda k: f"{k}\n", "key-whitespace"),
        (lambda k: f'"{k}"', "key-quoted"),
    ],
)
def test_pasted_whitespace_and_quotes(runpod_emulator, capsys, monkeypatch, make_raw, code):
    """Cause 3: a newline or quotes around a working key: the typo is an error, the key works."""
    key = runpod_emulator.api_key
    monkeypatch.setenv("RUNPOD_API_KEY", make_raw(key))

    exit_code, data, output = doctor(capsys, "--api-url", runpod_emulator.api_url)

    assert 1 == exit_code
    assert "error" == the(data, code)["severity"]
    assert "accepted" == data["live"][0]["status"]
    assert [] == leaked(output, key)


def test_s3_key_is_named_and_not_sent(runpod_emulator, capsys, monkeypatch):
    """Cause 3: an rps_ S3 key in RUNPOD_API_KEY is named as such and never sent."""
    s3 = "rps_" + make_key()[4:]
    monkeypatch.setenv("RUNPOD_API_KEY", s3)

    code, data, output = doctor(capsys, "--api-url", runpod_emulator.api_url)

    assert 1 == code
    assert "S3 credential" in the(data, "key-s3")["what"]
    assert [] == data["live"]
    assert 0 == runpod_emulator.counters().total
    assert [] == leaked(output, s3)


def test_wrong_length_key_is_warned_and_checked(runpod_emulator, capsys, monkeypatch):
    """Cause 3: an rpa_ key cut short is a warning, and RunPod's 401 says the rest."""
    short = runpod_emulator.api_key[:-3]
    monkeypatch.setenv("RUNPOD_API_KEY", short)

    code, data, _ = doctor(capsys, "--api-url", runpod_emulator.api_url)

    assert 1 == code
    assert "warning" == the(data, "key-bad-shape")["severity"]
    assert "rejected" == data["live"][0]["status"]


def test_variable_overriding_a_newer_config_key(runpod_emulator, capsys, monkeypatch, home):
    """The 'impossible' 401: a stale RUNPOD_API_KEY overrides the config file's working key."""
    old = runpod_emulator.api_key
    new = runpod_emulator.rotate(old)
    write_config(home, f'[default]\napi_key = "{new}"\n')
    monkeypatch.setenv("RUNPOD_API_KEY", old)

    code, data, output = doctor(capsys, "--api-url", runpod_emulator.api_url)

    assert 1 == code
    assert {
        "sdk": "config:[default].api_key",
        "runpodctl": "env:RUNPOD_API_KEY",
        "library": "env:RUNPOD_API_KEY",
    } == data["winners"]
    assert {"env:RUNPOD_API_KEY": "rejected", "config:[default].api_key": "accepted"} == {
        check["source"]: check["status"] for check in data["live"]
    }
    first = data["findings"][0]
    assert ("variable-hides-working-key", "error") == (first["code"], first["severity"])
    assert first["fix"].startswith("unset RUNPOD_API_KEY")
    assert ["variable-hides-working-key", "key-accepted"] == codes(data)
    assert [] == leaked(output, old, new)


def test_unknown_profile_is_not_a_working_setup(runpod_emulator, capsys, home):
    """--profile nope: the library has no key, so not "works": exit 1, the profile leads."""
    write_config(home, f'[default]\napi_key = "{runpod_emulator.api_key}"\n')

    code, data, _ = doctor(capsys, "--profile", "nope", "--api-url", runpod_emulator.api_url)

    assert 1 == code
    assert None is data["winners"]["library"]
    assert ("profile-missing", "error") == (
        data["findings"][0]["code"],
        data["findings"][0]["severity"],
    )


def test_unknown_profile_text_does_not_say_it_works(runpod_emulator, home):
    """The text verdict agrees with the table: no "the key setup works" without a key."""
    write_config(home, f'[default]\napi_key = "{runpod_emulator.api_key}"\n')

    result = doctor_process(home, {}, "--profile", "nope", "--api-url", runpod_emulator.api_url)

    assert 1 == result.returncode
    assert "the key setup works" not in result.stdout
    assert "Result: 1 problem(s) to fix" in result.stdout


def test_config_that_is_not_toml_in_a_real_process(home):
    """A broken config file is an error finding with the line, not a traceback."""
    path = write_config(home, '[default]\napi_key = "unterminated\n')

    result = doctor_process(home, {}, "--offline", "--json")
    data = json.loads(result.stdout)

    assert 1 == result.returncode
    assert "" == result.stderr
    assert f"{path} is not valid TOML" in the(data, "config-invalid")["what"]


@pytest.mark.parametrize(
    ("content", "what", "why", "fix"),
    [
        (
            b'[default]\napi_key = "caf\xe9"\n',
            "is not UTF-8 text",
            "the runpod SDK ignores the file",
            "Save the file as UTF-8",
        ),
        (
            b"[default]\napi_key = 5\n",
            "[default].api_key must be a string, not int",
            "a key is text in quotes",
            'Write the key in quotes (api_key = "rpa_...")',
        ),
        (
            b"[default\n",
            "is not valid TOML (line 1",
            "the runpod SDK ignores the file",
            "Fix the line named above",
        ),
    ],
    ids=["not-utf8", "not-a-string", "not-toml"],
)
def test_each_broken_config_gets_its_own_advice(home, content, what, why, fix):
    """Not UTF-8, a key that is not a string, not TOML: each its cause, why and fix, no false
    claim that the SDK fails at import or that permissions are to blame."""
    path = write_config(home, "")
    path.write_bytes(content)

    result = doctor_process(home, {}, "--offline", "--json")

    finding = the(json.loads(result.stdout), "config-invalid")
    assert (1, "") == (result.returncode, result.stderr)
    assert what in finding["what"]
    assert why in finding["why"]
    assert finding["fix"].startswith(fix)
    text = " ".join(str(value) for value in finding.values())
    assert "fails at import" not in text
    assert "permissions" not in text
    assert "UnicodeDecodeError" not in text


def test_profile_flag_picks_the_profile(runpod_emulator, capsys, home):
    """--profile work makes this library use [work].api_key; the SDK still reads [default]."""
    key = runpod_emulator.api_key
    write_config(home, f'[default]\napi_key = "{make_key()}"\n[work]\napi_key = "{key}"\n')

    code, data, _ = doctor(capsys, "--profile", "work", "--offline")

    assert "config:[work].api_key" == data["winners"]["library"]
    assert "config:[default].api_key" == data["winners"]["sdk"]
    assert "sources-disagree" in codes(data)
    assert 0 == code


def test_offline_sends_nothing(runpod_emulator, capsys, monkeypatch):
    """--offline: no live check, live is null, and the emulator sees no request."""
    monkeypatch.setenv("RUNPOD_API_KEY", runpod_emulator.api_key)

    code, data, _ = doctor(capsys, "--offline", "--api-url", runpod_emulator.api_url)

    assert (0, None, True) == (code, data["live"], data["offline"])
    assert 0 == runpod_emulator.counters().total


def test_text_output_in_a_real_process(runpod_emulator, home):
    """The default output is readable text with what, why and fix, and no key."""
    key = runpod_emulator.api_key
    runpod_emulator.revoke(key)

    result = doctor_process(home, {"RUNPOD_API_KEY": key}, "--api-url", runpod_emulator.api_url)

    text = " ".join(result.stdout.split())

    assert 1 == result.returncode
    assert "Which key each tool uses" in text
    assert "[error] RunPod rejected the key" in text
    assert "why:" in result.stdout
    assert "fix:" in result.stdout
    assert [] == leaked(result.stdout + result.stderr, key)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--no-such-flag"], "--no-such-flag"),
        (["--profile", " "], "--profile"),
        (["--api-url", "127.0.0.1:8000"], "127.0.0.1:8000"),
        (["--api-url", "ftp://example.invalid"], "ftp://example.invalid"),
    ],
)
def test_usage_errors_exit_2(home, args, named):
    """A bad flag or value is a usage error: exit 2, doctor's usage, the culprit named."""
    result = doctor_process(home, {}, *args)

    assert 2 == result.returncode
    assert result.stderr.startswith("usage: resilient-runpod doctor ")
    assert named in result.stderr
    assert "" == result.stdout
