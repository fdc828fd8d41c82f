"""The diagnosis behind `doctor`: sources found, which one each tool uses, and findings."""

from __future__ import annotations

import dataclasses

import pytest

from resilient_runpod._keys import fingerprint
from resilient_runpod._validate import KeyStatus, Validation
from resilient_runpod.cli._diagnose import (
    FindingCode,
    KeySource,
    Setup,
    check_live,
    diagnose,
    exit_code,
    gather,
    keys_to_check,
    near_misses,
    winners,
)

from .helpers import make_key


def env_source(name: str, raw: str) -> KeySource:
    return KeySource(f"env:{name}", f"the environment variable {name}", raw)


def config_source(entry: str, raw: str) -> KeySource:
    return KeySource(f"config:{entry}", f"{entry} in config.toml", raw)


def codes(findings):
    return sorted(f.code for f in findings)


def by_code(findings, code):
    matches = [f for f in findings if f.code == code]
    assert 1 == len(matches), f"expected one {code!r} finding in {codes(findings)}"
    return matches[0]


def all_text(findings) -> str:
    return "\n".join(f"{f.what} {f.why} {f.fix}" for f in findings)


def answer(status: KeyStatus, key: str | None) -> Validation:
    url = "http://127.0.0.1:1/graphql"
    return Validation(status, fingerprint(key), url, f"said {status.value}")


# -- near-miss variable names --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "RUNPOD_APIKEY",
        "RUNPOD_KEY",
        "RUN_POD_API_KEY",
        "RUNPOD_API_TOKEN",
        "runpod_api_key",
        "Runpod_Api_Key",
        "RUNPD_API_KEY",
        "RUNPOD_TOKEN",
        "RUNPOD-API-KEY",
        "RUNPOD_SECRET_API_KEY",
        "runpod_ai_api_key",
    ],
)
def test_near_misses_finds_misspelled_key_variables(name):
    """Other spellings, other words and typos of RUNPOD_API_KEY are near misses."""
    assert [name] == near_misses([name])


@pytest.mark.parametrize(
    "name",
    [
        "RUNPOD_API_KEY",
        "RUNPOD_AI_API_KEY",
        "RUNPOD_API_BASE_URL",
        "RUNPOD_ENDPOINT_BASE_URL",
        "RUNPOD_API_URL",
        "RUNPOD_POD_ID",
        "RUNPOD_PUBLIC_IP",
        "RUNPOD_TCP_PORT_22",
        "RUNPOD_WEBHOOK_GET_JOB",
        "RUNPOD_S3_SECRET_KEY",
        "RUNPOD_API_KEY_FILE",
        "RUNPOD_SECRET_HF_TOKEN",
        "PATH",
    ],
)
def test_near_misses_leaves_other_variables_alone(name):
    """The expected names and RunPod's URL, id, port, S3 and file variables are not near misses."""
    assert [] == near_misses([name])


# -- gathering ---------------------------------------------------------------------------


def test_gather_reads_variables_and_both_config_entries(tmp_path):
    """gather finds RUNPOD_API_KEY, the SDK's [default].api_key and runpodctl's apiKey."""
    env_key, sdk_key, ctl_key = make_key(), make_key(), make_key()
    path = tmp_path / "config.toml"
    path.write_text(f'apiKey = "{ctl_key}"\n[default]\napi_key = "{sdk_key}"\n')

    setup = gather({"RUNPOD_API_KEY": env_key, "HOME": "/x"}, path=path)

    assert ["env:RUNPOD_API_KEY", "config:[default].api_key", "config:apiKey"] == [
        s.name for s in setup.sources
    ]
    assert [env_key, sdk_key, ctl_key] == [s.raw for s in setup.sources]
    assert {"RUNPOD_API_KEY": env_key} == dict(setup.env)
    assert ("default",) == setup.profiles


def test_gather_reads_the_chosen_profile_and_default(tmp_path):
    """With --profile, the profile's key is read for this library and [default] for the SDK."""
    path = tmp_path / "config.toml"
    path.write_text(f'[default]\napi_key = "{make_key()}"\n[work]\napi_key = "{make_key()}"\n')

    setup = gather({}, profile="work", path=path)

    assert ["config:[default].api_key", "config:[work].api_key"] == [s.name for s in setup.sources]
    assert "config:[work].api_key" == winners(setup).library
    assert "config:[default].api_key" == winners(setup).sdk


def test_gather_reports_a_config_file_that_is_not_toml(tmp_path):
    """A config file that is not TOML is a finding, not an exception."""
    path = tmp_path / "config.toml"
    path.write_text("[default\napi_key = oops\n")

    setup = gather({"RUNPOD_API_KEY": make_key()}, path=path)
    finding = by_code(diagnose(setup), "config-invalid")

    assert "error" == finding.severity
    assert str(path) in finding.what
    assert ["env:RUNPOD_API_KEY"] == [s.name for s in setup.sources]


def test_gather_keeps_only_key_related_variables():
    """Unrelated variables are not kept; near misses are."""
    setup = gather({"HOME": "/x", "RUNPOD_APIKEY": "v", "RUNPOD_POD_ID": "p"}, path=None)

    assert {"RUNPOD_APIKEY": "v"} == dict(setup.env)


# -- cause 1: not set or misspelled --------------------------------------------------------


def test_no_key_anywhere_is_an_error():
    """No key in any variable or config entry: one `no-key` error, exit code 1."""
    findings = diagnose(Setup())

    assert ["no-key"] == codes(findings)
    assert "error" == findings[0].severity
    assert 1 == exit_code(findings)


def test_misspelled_variable_names_the_found_and_expected_names():
    """A key in RUNPOD_APIKEY is reported as a near miss of RUNPOD_API_KEY, with the fix."""
    key = make_key()
    setup = Setup(env={"RUNPOD_APIKEY": key})

    finding = by_code(diagnose(setup), "misspelled-variable")

    assert "error" == finding.severity
    assert "RUNPOD_APIKEY" in finding.what
    assert "RUNPOD_API_KEY" in finding.what
    assert 'export RUNPOD_API_KEY="$RUNPOD_APIKEY"' in finding.fix
    assert key not in all_text([finding])


def test_misspelled_variable_is_a_warning_when_a_key_is_set_too():
    """With a key in RUNPOD_API_KEY as well, the near miss is only a warning."""
    key = make_key()
    setup = Setup(
        env={"RUNPOD_KEY": make_key(), "RUNPOD_API_KEY": key},
        sources=(env_source("RUNPOD_API_KEY", key),),
    )

    assert "warning" == by_code(diagnose(setup), "misspelled-variable").severity


def test_empty_variable_is_reported():
    """RUNPOD_API_KEY set to nothing is reported as empty, and counts as no key."""
    setup = Setup(env={"RUNPOD_API_KEY": "  "}, sources=(env_source("RUNPOD_API_KEY", "  "),))

    assert [FindingCode.NO_KEY, FindingCode.EMPTY_VARIABLE] == [f.code for f in diagnose(setup)]
    assert None is winners(setup).library


# -- cause 3: typos ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_raw", "code", "severity"),
    [
        (lambda k: k + "\n", "key-whitespace", "error"),
        (lambda k: f'"{k}"', "key-quoted", "error"),
        (lambda k: "rps_" + k[4:], "key-s3", "error"),
        (lambda k: k[:20] + "<>" + k[22:], "key-bad-characters", "error"),
        (lambda k: k[:-3], "key-bad-shape", "warning"),
    ],
)
def test_key_typos_are_named(make_raw, code, severity):
    """Whitespace, quotes, an S3 key, bad characters and a wrong length each get their code."""
    key = make_key()
    raw = make_raw(key)
    setup = Setup(sources=(env_source("RUNPOD_API_KEY", raw),))

    finding = by_code(diagnose(setup), code)

    assert severity == finding.severity
    assert "env:RUNPOD_API_KEY" == finding.source
    assert finding.fix
    assert raw.strip() not in all_text(diagnose(setup))


def test_fingerprint_of_a_pasted_key_ignores_the_quotes_and_newline():
    """A quoted key with a newline is named by the key's own fingerprint."""
    key = make_key()

    assert fingerprint(key) == env_source("RUNPOD_API_KEY", f' "{key}"\n').fingerprint


def test_a_key_that_cannot_be_sent_is_not_checked_live():
    """An S3 key is never sent to RunPod; a padded key is checked as it would be sent."""
    key = make_key()
    setup = Setup(
        sources=(
            env_source("RUNPOD_API_KEY", "rps_" + key[4:]),
            config_source("[default].api_key", key + "\n"),
        )
    )

    assert {"config:[default].api_key": key} == keys_to_check(setup)


# -- which one wins, and disagreements ---------------------------------------------------


def test_env_variable_overriding_a_different_config_key_is_flagged():
    """RUNPOD_API_KEY wins for this library and runpodctl, [default].api_key for the SDK."""
    old, new = make_key(), make_key()
    setup = Setup(
        sources=(
            env_source("RUNPOD_API_KEY", old),
            config_source("[default].api_key", new),
        )
    )

    chosen = winners(setup)
    finding = by_code(diagnose(setup), "sources-disagree")

    assert ("config:[default].api_key", "env:RUNPOD_API_KEY", "env:RUNPOD_API_KEY") == (
        chosen.sdk,
        chosen.runpodctl,
        chosen.library,
    )
    assert "warning" == finding.severity
    assert "unset RUNPOD_API_KEY" in finding.fix
    assert fingerprint(old) in finding.what
    assert fingerprint(new) in finding.what


def test_same_key_in_env_and_config_is_not_a_disagreement():
    """The same key in both places (one padded) is one key: no disagreement, one live check."""
    key = make_key()
    setup = Setup(
        sources=(
            env_source("RUNPOD_API_KEY", key),
            config_source("[default].api_key", f"{key} "),
        )
    )

    assert "sources-disagree" not in codes(diagnose(setup))
    assert {"env:RUNPOD_API_KEY": key} == keys_to_check(setup)


def test_sdk_without_a_key_is_flagged():
    """A key only in RUNPOD_API_KEY is invisible to the SDK, which never reads it."""
    setup = Setup(sources=(env_source("RUNPOD_API_KEY", make_key()),))

    finding = by_code(diagnose(setup), "sdk-no-key")

    assert "warning" == finding.severity
    assert "runpod.api_key" in finding.fix


def test_runpodctl_and_sdk_entries_with_different_keys_are_flagged():
    """runpodctl's apiKey and the SDK's [default].api_key holding different keys is flagged."""
    setup = Setup(
        sources=(
            config_source("[default].api_key", make_key()),
            config_source("apiKey", make_key()),
        )
    )

    assert "warning" == by_code(diagnose(setup), "config-entries-disagree").severity


def test_missing_profile_is_flagged():
    """--profile naming a table the config file lacks is reported with the ones it has."""
    setup = Setup(profile="wrok", config_exists=True, profiles=("default", "work"))

    finding = by_code(diagnose(setup), "profile-missing")

    assert "[default], [work]" in finding.what


def test_config_readable_by_others_is_flagged():
    """A config file other users can read is a warning with the chmod to run."""
    setup = Setup(
        config_exists=True,
        config_mode=0o644,
        sources=(config_source("[default].api_key", make_key()),),
    )

    finding = by_code(diagnose(setup), "config-permissions")

    assert f"chmod 600 {setup.config_path}" == finding.fix


# -- cause 2: the live check ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "severity", "code_expected"),
    [
        (KeyStatus.ACCEPTED, "key-accepted", "ok", 0),
        (KeyStatus.REJECTED, "key-rejected", "error", 1),
        (KeyStatus.FORBIDDEN, "key-forbidden", "error", 1),
        (KeyStatus.UNREACHABLE, "unreachable", "error", 1),
    ],
)
def test_live_answers_become_findings(status, code, severity, code_expected):
    """Accepted, rejected (401), forbidden (403) and unreachable each get their own finding."""
    key = make_key()
    setup = Setup(
        sources=(
            env_source("RUNPOD_API_KEY", key),
            config_source("[default].api_key", key),
        )
    )

    findings = diagnose(setup, {"env:RUNPOD_API_KEY": answer(status, key)})
    finding = by_code(findings, code)

    assert severity == finding.severity
    assert "the environment variable RUNPOD_API_KEY and [default].api_key" in finding.what
    assert code_expected == exit_code(findings)


def test_live_check_without_any_key_asks_nothing():
    """With no key anywhere, nothing is sent, and `no-key` is the only error (no echo of it)."""
    sent = []

    def check(key, api_url):
        sent.append((key, api_url))
        return answer(KeyStatus.UNREACHABLE, key)

    live = check_live(Setup(), "http://127.0.0.1:1", check=check)
    findings = diagnose(Setup(), live)

    assert [] == sent
    assert [FindingCode.NO_KEY] == [f.code for f in findings]


def test_live_check_sends_each_distinct_key_once():
    """Three sources holding two distinct keys mean two requests."""
    a, b = make_key(), make_key()
    setup = Setup(
        sources=(
            env_source("RUNPOD_API_KEY", a),
            config_source("[default].api_key", b),
            config_source("apiKey", a),
        )
    )
    sent = []

    def check(key, api_url):
        sent.append(key)
        return answer(KeyStatus.ACCEPTED, key)

    live = check_live(setup, check=check)

    assert [a, b] == sent
    assert ["env:RUNPOD_API_KEY", "config:[default].api_key"] == list(live)


def test_stale_variable_over_a_working_config_key():
    """The classic: RUNPOD_API_KEY rejected, the config's key accepted: `unset` leads."""
    old, new = make_key(), make_key()
    setup = Setup(
        sources=(
            env_source("RUNPOD_API_KEY", old),
            config_source("[default].api_key", new),
        )
    )
    live = {
        "env:RUNPOD_API_KEY": answer(KeyStatus.REJECTED, old),
        "config:[default].api_key": answer(KeyStatus.ACCEPTED, new),
    }

    findings = diagnose(setup, live)

    assert [FindingCode.VARIABLE_HIDES_WORKING_KEY, FindingCode.KEY_ACCEPTED] == [
        f.code for f in findings
    ]
    assert findings[0].fix.startswith("unset RUNPOD_API_KEY")
    assert 1 == exit_code(findings)


def test_stale_variable_with_no_working_key_elsewhere_asks_for_a_new_key():
    """Both keys rejected: unsetting the variable would not help, so each rejection stays."""
    old, older = make_key(), make_key()
    setup = Setup(
        sources=(
            env_source("RUNPOD_API_KEY", old),
            config_source("[default].api_key", older),
        )
    )
    live = {
        "env:RUNPOD_API_KEY": answer(KeyStatus.REJECTED, old),
        "config:[default].api_key": answer(KeyStatus.REJECTED, older),
    }

    findings = diagnose(setup, live)

    assert [FindingCode.KEY_REJECTED, FindingCode.KEY_REJECTED] == [f.code for f in findings[:2]]
    assert FindingCode.VARIABLE_HIDES_WORKING_KEY not in codes(findings)
    assert "export RUNPOD_API_KEY=" in findings[0].fix
    assert "resilient-runpod login" in findings[1].fix


def test_misspelled_variable_leads_and_replaces_no_key():
    """Only RUNPOD_APIKEY set: the rename is the first fix, and the generic `no-key` is gone."""
    setup = Setup(env={"RUNPOD_APIKEY": make_key()})

    findings = diagnose(setup, check_live(setup, check=lambda *_: pytest.fail("sent")))

    assert FindingCode.MISSPELLED_VARIABLE == findings[0].code
    assert findings[0].fix.startswith('Rename it: export RUNPOD_API_KEY="$RUNPOD_APIKEY"')
    assert FindingCode.NO_KEY not in codes(findings)
    assert 1 == exit_code(findings)


def test_unknown_profile_with_no_other_key_for_the_library_is_an_error():
    """--profile nope and only [default] in the file: this library has no key, exit 1."""
    key = make_key()
    setup = Setup(
        profile="nope",
        config_exists=True,
        profiles=("default",),
        sources=(config_source("[default].api_key", key),),
    )

    findings = diagnose(setup, {"config:[default].api_key": answer(KeyStatus.ACCEPTED, key)})

    assert FindingCode.PROFILE_MISSING == findings[0].code
    assert "error" == findings[0].severity
    assert "resilient-runpod login --profile nope" in findings[0].fix
    assert 1 == exit_code(findings)


@pytest.mark.parametrize(
    "setup",
    [
        Setup(),
        Setup(config_error="config.toml is not valid TOML"),
        Setup(sources=(env_source("RUNPOD_API_KEY", make_key()),)),
        Setup(sources=(config_source("[default].api_key", "rpa_short"),)),
        Setup(
            sources=(
                env_source("RUNPOD_API_KEY", make_key()),
                config_source("[default].api_key", make_key()),
                config_source("apiKey", make_key()),
            )
        ),
    ],
)
def test_fixes_recommend_login_not_runpod_config(setup):
    """Advice names `resilient-runpod login` (validates, saves 0600), never `runpod config`."""
    findings = diagnose(setup, {})
    fixes = " ".join(f.fix for f in findings)

    assert "resilient-runpod login" in fixes
    assert "`runpod config`" not in fixes


def test_findings_never_contain_a_key():
    """Across every kind of finding, no key appears in what, why or fix."""
    keys = [make_key() for _ in range(4)]
    setup = Setup(
        env={"RUNPOD_APIKEY": keys[0], "RUNPOD_API_KEY": f'"{keys[1]}"\n'},
        sources=(
            env_source("RUNPOD_API_KEY", f'"{keys[1]}"\n'),
            config_source("[default].api_key", keys[2]),
            config_source("apiKey", keys[3]),
        ),
    )
    live = {name: answer(KeyStatus.REJECTED, key) for name, key in keys_to_check(setup).items()}

    text = all_text(diagnose(setup, live))

    assert [] == [k for k in keys if k in text or k[4:] in text]


def test_findings_are_frozen():
    """A Finding cannot be changed after it is made."""
    finding = diagnose(Setup())[0]

    with pytest.raises(dataclasses.FrozenInstanceError):
        finding.code = "other"  # type: ignore[misc]
