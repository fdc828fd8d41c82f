"""What ``resilient-runpod doctor`` knows: where keys come from, and what is wrong with them.

RunPod's own troubleshooting page gives three causes for a rejected key: (1) the
variable is not set or is misspelled, (2) the key expired or was revoked, (3) the key
carries a typo. This module turns a snapshot of a machine's key setup into `Finding`
objects, each saying what is wrong, why it matters and the exact fix.

It is split so that the logic is testable without I/O:

- `gather` reads the environment and ``~/.runpod/config.toml`` into a `Setup`;
- `keys_to_check` lists the distinct keys a live check should ask RunPod about;
- `diagnose` is pure: a `Setup` and the live answers in, findings out.

Keys appear in findings by fingerprint only.
"""

from __future__ import annotations

import enum
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._config import ConfigProblem, config_path, keys_in_config, load_config
from .._errors import KEYS_PAGE, ConfigError, InvalidKeyError
from .._keys import (
    API_KEY_PREFIX,
    KEY_VARIABLES,
    KeyProblem,
    clean,
    fingerprint,
    key_problems,
    unquote,
)
from .._validate import KeyStatus, Validation, validate

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "CONSOLE_URL",
    "Finding",
    "FindingCode",
    "KeySource",
    "Setup",
    "Severity",
    "Winners",
    "check_live",
    "diagnose",
    "exit_code",
    "gather",
    "keys_to_check",
    "near_misses",
    "winners",
]

CONSOLE_URL = KEYS_PAGE

Severity = Literal["error", "warning", "info", "ok"]
# The command that saves a key where every tool reads it, mode 0600, after RunPod accepts it.
LOGIN = "resilient-runpod login"


class FindingCode(str, enum.Enum):
    """What a `Finding` is about: the stable identifier ``--json`` readers branch on."""

    CONFIG_INVALID = "config-invalid"
    CONFIG_PERMISSIONS = "config-permissions"
    PROFILE_MISSING = "profile-missing"
    NO_KEY = "no-key"
    EMPTY_VARIABLE = "empty-variable"
    MISSPELLED_VARIABLE = "misspelled-variable"
    KEY_EMPTY = "key-empty"
    KEY_WHITESPACE = "key-whitespace"
    KEY_QUOTED = "key-quoted"
    KEY_S3 = "key-s3"
    KEY_BAD_CHARACTERS = "key-bad-characters"
    KEY_BAD_SHAPE = "key-bad-shape"
    SDK_NO_KEY = "sdk-no-key"
    SOURCES_DISAGREE = "sources-disagree"
    CONFIG_ENTRIES_DISAGREE = "config-entries-disagree"
    VARIABLE_HIDES_WORKING_KEY = "variable-hides-working-key"
    KEY_ACCEPTED = "key-accepted"
    KEY_REJECTED = "key-rejected"
    KEY_FORBIDDEN = "key-forbidden"
    NO_KEY_SENT = "no-key-sent"
    UNREACHABLE = "unreachable"

    def __str__(self) -> str:
        return self.value


# The variables RunPod's tools read: the first by runpodctl, this library and most scripts,
# the second inside serverless workers.
_EXPECTED = KEY_VARIABLES
_EXPECTED_SQUASHED = {"RUNPODAPIKEY", "RUNPODAIAPIKEY"}
# Words that make a RUNPOD-ish variable look like it was meant to hold the key.
_KEYISH = ("KEY", "TOKEN", "APIKEY")
# RUNPOD_* variables that never hold an API key: URLs, ids, S3 credentials, paths to files.
_NOT_A_KEY = re.compile(
    r"S3|ACCESS_?KEY_?ID|_URL$|_ID$|_PORT|_IP$|WEBHOOK|ENDPOINT|_FILE$|_PATH$|_DIR$",
    re.IGNORECASE,
)
# A pod's secrets appear as RUNPOD_SECRET_<name>: only one named like the API key counts.
_POD_SECRET = "RUNPODSECRET"  # noqa: S105 -- a variable-name prefix, not a secret


@dataclass(frozen=True, slots=True)
class KeySource:
    """One place a key was found.

    Attributes:
        name: A stable identifier: ``env:RUNPOD_API_KEY``, ``config:[default].api_key``,
            ``config:apiKey``.
        where: The same place in words a person can act on.
        raw: The text found there, exactly. Never shown; findings use `fingerprint`.

    """

    name: str
    where: str
    raw: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """The key's fingerprint, without the whitespace and quotes it may have been pasted with."""
        return fingerprint(unquote(self.raw))

    @property
    def sendable(self) -> str | None:
        """The key as this library would send it (`clean`-ed), or ``None`` if it cannot be sent."""
        try:
            return clean(self.raw) if self.raw.strip() else None
        except InvalidKeyError:
            return None

    def __repr__(self) -> str:
        return f"KeySource({self.name!r}, {self.fingerprint})"


@dataclass(frozen=True, slots=True)
class Setup:
    """A snapshot of everything that decides which key a program on this machine uses.

    Attributes:
        profile: The config-file profile this library reads (``--profile``).
        config_path: The config file's path.
        config_exists: Whether the config file exists.
        config_error: Why the config file cannot be used, if it cannot.
        config_problem: The same as a code.
        config_mode: The file's permission bits, if it exists.
        profiles: The profile tables the config file has.
        env: Every environment variable whose name looks RunPod-key-related, with its value.
        sources: The keys found where RunPod's tools look, in the order they are listed.

    """

    profile: str = "default"
    config_path: Path = field(default_factory=lambda: Path("~/.runpod/config.toml"))
    config_exists: bool = False
    config_error: str | None = None
    config_problem: ConfigProblem | None = None
    config_mode: int | None = None
    profiles: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    sources: tuple[KeySource, ...] = ()

    def source(self, name: str) -> KeySource | None:
        """Return the source named *name*, if a key (even a blank one) was found there."""
        return next((s for s in self.sources if s.name == name), None)


@dataclass(frozen=True, slots=True)
class Winners:
    """Which source each tool uses, by `KeySource.name` (``None``: that tool has no key)."""

    sdk: str | None
    runpodctl: str | None
    library: str | None


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing `doctor` found.

    Attributes:
        code: What the finding is about; its value (``misspelled-variable``) is what
            ``--json`` prints.
        severity: ``error`` (this breaks something), ``warning`` (this will bite later),
            ``info`` or ``ok``.
        what: What is wrong (or right), naming keys by fingerprint only.
        why: Why it matters.
        fix: The exact thing to do; empty for ``ok`` findings.
        source: The `KeySource.name` it is about, if any.

    """

    code: FindingCode
    severity: Severity
    what: str
    why: str = ""
    fix: str = ""
    source: str | None = None


# -- gathering (I/O) -----------------------------------------------------------------------


def _squash(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", name.upper())


def _distance(a: str, b: str) -> int:
    """Levenshtein distance, for near-miss variable names like ``RUNPD_API_KEY``."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            substitution = previous[j - 1] + (char_a != char_b)
            current.append(min(previous[j] + 1, current[j - 1] + 1, substitution))
        previous = current
    return previous[-1]


def near_misses(names: Sequence[str]) -> list[str]:
    """Return the names among *names* that look like a misspelled ``RUNPOD_API_KEY``, sorted.

    Catches other spellings (``RUNPOD_APIKEY``, ``RUN_POD_API_KEY``, ``runpod_api_key``),
    other words (``RUNPOD_KEY``, ``RUNPOD_API_TOKEN``) and typos (``RUNPD_API_KEY``),
    and leaves alone the ``RUNPOD_*`` variables that hold URLs, ids or S3 credentials.
    """
    return sorted(name for name in names if name not in _EXPECTED and _meant_for_key(name))


def _meant_for_key(name: str) -> bool:
    squashed = _squash(name)
    if squashed.startswith(_POD_SECRET):
        rest = squashed[len(_POD_SECRET) :]
        return "APIKEY" in rest or rest in ("KEY", "RUNPODKEY")
    if squashed in _EXPECTED_SQUASHED or _distance(squashed, "RUNPODAPIKEY") <= 2:  # noqa: PLR2004
        return True
    return (
        squashed.startswith("RUNPOD")
        and any(word in squashed[6:] for word in _KEYISH)
        and not _NOT_A_KEY.search(name.upper())
    )


def gather(
    environ: Mapping[str, str] | None = None,
    *,
    profile: str = "default",
    path: Path | None = None,
) -> Setup:
    """Read the environment and the config file into a `Setup`. Never raises for bad files."""
    environ = os.environ if environ is None else environ
    path = path or config_path()
    relevant = set(_EXPECTED) | set(near_misses(list(environ)))
    env = {name: environ[name] for name in sorted(relevant) if name in environ}
    sources = [
        KeySource(f"env:{name}", f"the environment variable {name}", env[name])
        for name in _EXPECTED
        if name in env
    ]
    exists = path.exists()
    mode: int | None = None
    error: str | None = None
    problem: ConfigProblem | None = None
    profiles: tuple[str, ...] = ()
    if exists:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            data = load_config(path) or {}
            profiles = tuple(name for name, value in data.items() if isinstance(value, dict))
            # The SDK reads [default] whatever --profile says; this library reads [profile].
            wanted = dict.fromkeys(["default", profile])
            seen: set[str] = set()
            for table in wanted:
                sdk_entry, ctl_entry = keys_in_config(table, path)
                for entry in (sdk_entry, ctl_entry):
                    if entry is not None and entry.entry not in seen:
                        seen.add(entry.entry)
                        where = f"{entry.entry} in {path}"
                        sources.append(KeySource(f"config:{entry.entry}", where, entry.key))
        except ConfigError as exc:
            error, problem = str(exc), exc.problem
        except OSError as exc:
            error, problem = str(exc), ConfigProblem.UNREADABLE
    return Setup(
        profile=profile,
        config_path=path,
        config_exists=exists,
        config_error=error,
        config_problem=problem,
        config_mode=mode,
        profiles=profiles,
        env=env,
        sources=tuple(sources),
    )


# -- deciding (pure) -----------------------------------------------------------------------


def _usable(setup: Setup, name: str) -> KeySource | None:
    source = setup.source(name)
    return source if source is not None and source.raw.strip() else None


def winners(setup: Setup) -> Winners:
    """Which source the runpod SDK, runpodctl and this library each take their key from.

    - The SDK 1.12 reads ``[default].api_key`` once, at import; it never reads
      ``RUNPOD_API_KEY``.
    - runpodctl: ``RUNPOD_API_KEY``, then its top-level ``apiKey``.
    - This library: ``RUNPOD_API_KEY``, then ``[profile].api_key``, then ``apiKey``.
    """

    def first(*names: str) -> str | None:
        return next((n for n in names if _usable(setup, n) is not None), None)

    env, ctl = "env:RUNPOD_API_KEY", "config:apiKey"
    return Winners(
        sdk=first("config:[default].api_key"),
        runpodctl=first(env, ctl),
        library=first(env, f"config:[{setup.profile}].api_key", ctl),
    )


def keys_to_check(setup: Setup) -> dict[str, str]:
    """Return the distinct sendable keys worth a live check, by the first source holding each.

    Returns a mapping from `KeySource.name` to the key, so that each key is sent once.
    """
    checks: dict[str, str] = {}
    for source in setup.sources:
        key = source.sendable
        if key is not None and key not in checks.values():
            checks[source.name] = key
    return checks


def check_live(
    setup: Setup,
    api_url: str | None = None,
    *,
    check: Callable[[str | None, str | None], Validation] = validate,
) -> dict[str, Validation]:
    """Ask RunPod about each distinct key in *setup* (the only part that uses the network).

    Keys that cannot be sent at all are not sent; with no sendable key, nothing is asked
    (the answer to a request without a key would only repeat the ``no-key`` finding).

    Returns:
        The answers by `KeySource.name`.

    """
    return {name: check(key, api_url) for name, key in keys_to_check(setup).items()}


def _same_key(setup: Setup, a: str | None, b: str | None) -> bool:
    source_a = setup.source(a) if a else None
    source_b = setup.source(b) if b else None
    if source_a is None or source_b is None:
        return source_a is source_b
    key_a = source_a.sendable or source_a.raw.strip()
    return key_a == (source_b.sendable or source_b.raw.strip())


# What each config-file problem breaks, as the runpod SDK 1.12 reads the file at import:
# it ignores a file it cannot parse (no key) but fails on one it cannot open.
_UNPARSED = (
    "the runpod SDK ignores the file (it finds no key at import), and runpodctl and this "
    "library cannot read a key from it"
)
_CONFIG_WHY: dict[ConfigProblem | None, str] = {
    ConfigProblem.UNREADABLE: "the runpod SDK fails at import (it cannot open the file), and "
    "runpodctl and this library cannot read a key from it",
    ConfigProblem.NOT_REGULAR: "RunPod's tools cannot read a key from it; opening it, the "
    "runpod SDK fails or waits at import",
    ConfigProblem.TOO_LARGE: "this library does not read a config file that size, so it finds "
    "no key there",
    ConfigProblem.WRONG_TYPE: "a key is text in quotes: no tool can send this entry as a key",
}


def _config_fix(problem: ConfigProblem | None, path: Path) -> str:
    """The fix for each cause; moving the file away and logging in again fits them all."""
    anew = f"or move it away (mv {path} {path}.bak) and run `{LOGIN}` to write a new one."
    if problem is ConfigProblem.NOT_UTF8:
        return f"Save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8), {anew}"
    if problem is ConfigProblem.NOT_TOML:
        return f"Fix the line named above, {anew}"
    if problem is ConfigProblem.UNREADABLE:
        return f"Make it readable by you alone (chown $USER {path}; chmod 600 {path}), {anew}"
    if problem is ConfigProblem.WRONG_TYPE:
        return f'Write the key in quotes (api_key = "rpa_..."), {anew}'
    return f"Fix the file, {anew}"


def _config_findings(setup: Setup, chosen: Winners) -> list[Finding]:
    findings: list[Finding] = []
    path = setup.config_path
    if setup.config_error is not None:
        findings.append(
            Finding(
                FindingCode.CONFIG_INVALID,
                "error",
                setup.config_error,
                _CONFIG_WHY.get(setup.config_problem, _UNPARSED),
                _config_fix(setup.config_problem, path),
            )
        )
    elif setup.config_mode is not None and setup.config_mode & 0o077:
        findings.append(
            Finding(
                FindingCode.CONFIG_PERMISSIONS,
                "warning",
                f"{path} can be read by other users (mode {setup.config_mode:o})",
                "it holds your API key: anyone who can read it can use your RunPod account",
                f"chmod 600 {path}",
            )
        )
    profile = setup.profile
    if (
        setup.config_exists
        and setup.config_error is None
        and profile != "default"
        and profile not in setup.profiles
    ):
        known = ", ".join(f"[{p}]" for p in setup.profiles) or "none"
        # An error when nothing else gives this library a key: it would send none.
        severity: Severity = "error" if chosen.library is None else "warning"
        findings.append(
            Finding(
                FindingCode.PROFILE_MISSING,
                severity,
                f"{path} has no [{profile}] table (profiles there: {known})",
                f"--profile {profile} finds no key in the config file"
                + (", so this library has no key at all" if chosen.library is None else ""),
                f"Check the profile name, or save a key there: `{LOGIN} --profile {profile}`.",
            )
        )
    return findings


def _variable_findings(setup: Setup, *, have_key: bool) -> list[Finding]:
    findings: list[Finding] = []
    for name in _EXPECTED:
        value = setup.env.get(name)
        if value is not None and not value.strip():
            findings.append(
                Finding(
                    FindingCode.EMPTY_VARIABLE,
                    "warning",
                    f"{name} is set but empty",
                    "RunPod's tools treat it as no key; an empty value usually means a failed "
                    "`export` or a secret that was not mounted",
                    f"Set it to your key (export {name}=rpa_...) or remove it (unset {name}).",
                    f"env:{name}",
                )
            )
    for name in near_misses(list(setup.env)):
        value = setup.env[name]
        if not value.strip():
            continue
        expected = "RUNPOD_AI_API_KEY" if "AI" in _squash(name)[6:8] else "RUNPOD_API_KEY"
        findings.append(
            Finding(
                FindingCode.MISSPELLED_VARIABLE,
                "warning" if have_key else "error",
                f"{name} is set (a key, {fingerprint(value.strip())}), "
                f"but RunPod's tools read {expected}",
                "nothing reads that name, so the key in it is never sent",
                f'Rename it: export {expected}="${name}"; unset {name} (and fix the name where '
                "it is set: .env file, shell profile, CI secret, Kubernetes manifest).",
                f"env:{name}",
            )
        )
    return findings


_SHAPE_CODES = {
    KeyProblem.EMPTY: FindingCode.KEY_EMPTY,
    KeyProblem.WHITESPACE: FindingCode.KEY_WHITESPACE,
    KeyProblem.QUOTED: FindingCode.KEY_QUOTED,
    KeyProblem.S3_KEY: FindingCode.KEY_S3,
    KeyProblem.BAD_CHARACTERS: FindingCode.KEY_BAD_CHARACTERS,
    KeyProblem.BAD_SHAPE: FindingCode.KEY_BAD_SHAPE,
}
_SHAPE_WHY = {
    KeyProblem.WHITESPACE: "the runpod SDK, curl and most scripts send the key as it is, "
    "and RunPod rejects it with 401 (or the HTTP library refuses the header)",
    KeyProblem.QUOTED: "the quotes are sent as part of the key, and RunPod rejects it with 401",
    KeyProblem.S3_KEY: "RunPod answers 401 to an S3 credential used as an API key",
    KeyProblem.BAD_CHARACTERS: "RunPod keys are letters, digits and _; this one cannot work",
    KeyProblem.BAD_SHAPE: "it was probably cut short or has extra characters from pasting",
}


def _shape_fix(problem: KeyProblem, source: KeySource) -> str:
    if problem is KeyProblem.S3_KEY:
        return (
            f"Put an API key (it starts with {API_KEY_PREFIX}) in {source.where}: create one at "
            f"{CONSOLE_URL} under API Keys. rps_ keys belong in S3 tools' "
            "secret-access-key settings."
        )
    if problem in (KeyProblem.WHITESPACE, KeyProblem.QUOTED):
        if source.name.startswith("env:"):
            variable = source.name.removeprefix("env:")
            return (
                f"Set it again without them: export {variable}=rpa_... (no quotes inside the "
                "value; to read it from a file: \"$(tr -d '[:space:]' < file)\")."
            )
        return f"Save the key again, exactly: `{LOGIN}` (it strips what was pasted along)."
    if source.name.startswith("env:"):
        variable = source.name.removeprefix("env:")
        return f"Copy the key again from {CONSOLE_URL}: export {variable}=rpa_..."
    return f"Copy the key again from {CONSOLE_URL} and save it with `{LOGIN}`."


def _shape_findings(setup: Setup) -> list[Finding]:
    findings: list[Finding] = []
    for source in setup.sources:
        if not source.raw.strip():
            continue
        findings.extend(
            Finding(
                _SHAPE_CODES[problem],
                # A wrong length may still work (RunPod may change its format).
                "error" if problem.fatal else "warning",
                f"the key in {source.where} ({source.fingerprint}): {problem.message(source.raw)}",
                _SHAPE_WHY.get(problem, "RunPod rejects keys like this with 401"),
                _shape_fix(problem, source),
                source.name,
            )
            for problem in key_problems(source.raw)
        )
    return findings


def _tool_findings(setup: Setup, chosen: Winners) -> list[Finding]:
    findings: list[Finding] = []
    env = setup.source("env:RUNPOD_API_KEY")
    library = setup.source(chosen.library) if chosen.library else None
    sdk = setup.source(chosen.sdk) if chosen.sdk else None
    if library is not None and sdk is None:
        findings.append(
            Finding(
                FindingCode.SDK_NO_KEY,
                "warning",
                "the runpod SDK finds no key: it reads only [default].api_key in "
                f"{setup.config_path}, "
                f"and your key is in {library.where}",
                "runpod.Endpoint(...) and runpod.get_pods() fail with 'API key invalid or missing' "
                "unless your code sets runpod.api_key itself (the SDK never reads RUNPOD_API_KEY)",
                'In code: runpod.api_key = os.environ["RUNPOD_API_KEY"] before creating endpoints '
                f"(or use resilient_runpod's SDK wrapper); or run `{LOGIN}` to save it as "
                "[default].api_key.",
            )
        )
    if sdk is not None and library is not None and not _same_key(setup, sdk.name, library.name):
        lib = library
        if env is not None and library.name == env.name:
            what = (
                f"RUNPOD_API_KEY ({lib.fingerprint}) overrides {sdk.where} ({sdk.fingerprint}) for "
                "this library and runpodctl, while the runpod SDK uses the config file's key"
            )
            fix = (
                "Keep one key: if the config file's key is the newer one, `unset RUNPOD_API_KEY` "
                f"(and remove it from your shell profile or .env); otherwise run `{LOGIN}` "
                "with the key in RUNPOD_API_KEY."
            )
        else:
            what = (
                f"this library uses {lib.where} ({lib.fingerprint}) and the runpod SDK uses "
                f"{sdk.where} ({sdk.fingerprint})"
            )
            fix = "Put the same, current key in both, or run with --profile default."
        findings.append(
            Finding(
                FindingCode.SOURCES_DISAGREE,
                "warning",
                what,
                "a program that works with one tool gets 401 with the other; a stale variable "
                "silently overriding a newer key is the classic 401 that 'cannot happen'",
                fix,
            )
        )
    ctl = setup.source("config:apiKey")
    if (
        ctl is not None
        and chosen.runpodctl == ctl.name
        and sdk is not None
        and not _same_key(setup, ctl.name, sdk.name)
    ):
        findings.append(
            Finding(
                FindingCode.CONFIG_ENTRIES_DISAGREE,
                "warning",
                f"runpodctl's apiKey ({ctl.fingerprint}) and the SDK's [default].api_key "
                f"({sdk.fingerprint}) in {setup.config_path} are different keys",
                "runpodctl and the runpod SDK each read only their own entry, so one of them uses "
                "an old key",
                f"Run `runpodctl config --apiKey rpa_...` and `{LOGIN}` with the same current key.",
            )
        )
    return findings


def _live_findings(
    setup: Setup, checks: Mapping[str, str], live: Mapping[str, Validation]
) -> list[Finding]:
    findings: list[Finding] = []
    for name, result in live.items():
        source = setup.source(name)
        holders = [s.where for s in setup.sources if name in checks and s.sendable == checks[name]]
        if holders:
            where = " and ".join(holders)
        else:
            where = source.where if source else "a request without a key"
        findings.append(_live_finding(name, where, result))
    return findings


def _live_finding(name: str, where: str, result: Validation) -> Finding:
    shown = result.fingerprint
    if result.status is KeyStatus.ACCEPTED:
        return Finding(
            FindingCode.KEY_ACCEPTED,
            "ok",
            f"RunPod accepted the key in {where} ({shown})",
            f"asked {result.url}",
            "",
            name,
        )
    if result.status is KeyStatus.REJECTED:
        return Finding(
            FindingCode.KEY_REJECTED,
            "error",
            f"RunPod rejected the key in {where} ({shown}): {result.detail}",
            "the key was revoked, has expired or was never valid (a typo): every request with it "
            "gets 401",
            f"Create a new key at {CONSOLE_URL} (API Keys) and {_put_it(name, where)}; then "
            "delete the old key in the console.",
            name,
        )
    if result.status is KeyStatus.FORBIDDEN:
        return Finding(
            FindingCode.KEY_FORBIDDEN,
            "error",
            f"RunPod knows the key in {where} ({shown}) but it lacks permission: {result.detail}",
            "this is not a rejected key (401): a new copy of the same key will not help, and this "
            "library never retries 403",
            f"At {CONSOLE_URL}, give the key the permission it needs (Read/Write or All), or use "
            "a key that has it.",
            name,
        )
    if result.status is KeyStatus.MISSING:
        return Finding(
            FindingCode.NO_KEY_SENT,
            "error",
            f"RunPod saw no key ({result.url}): {result.detail}",
            "requests without a key get 401 from every RunPod API except GraphQL",
            "Check for a proxy or gateway that removes the Authorization header, or --api-url.",
            name,
        )
    return Finding(
        FindingCode.UNREACHABLE,
        "error",
        f"could not ask RunPod about the key in {where} ({shown}): {result.detail} from "
        f"{result.url}",
        "nothing is known about whether RunPod accepts the key",
        "Check the network, a VPN, a firewall or proxy in front of RunPod (HTTPS_PROXY) or "
        "--api-url; or run with --offline to skip the live check.",
        name,
    )


def _put_it(name: str, where: str) -> str:
    """Where to put a new key, for a source: the variable it was in, or `login`."""
    if name.startswith("env:"):
        variable = name.removeprefix("env:")
        return f"put it in {variable} (export {variable}=rpa_...)"
    return f"save it with `{LOGIN}` (it replaces the key in {where})"


def _hidden_working_key(
    setup: Setup, chosen: Winners, live: Mapping[str, Validation]
) -> Finding | None:
    """RUNPOD_API_KEY is rejected while a key in the config file is accepted.

    The classic 401 that "cannot happen": a stale variable wins over the newer key. The
    fix is to remove the variable, not to make yet another key.
    """
    env = "env:RUNPOD_API_KEY"
    answer = live.get(env)
    if chosen.library != env or answer is None or answer.status is not KeyStatus.REJECTED:
        return None
    working = next(
        (
            s
            for s in setup.sources
            if s.name.startswith("config:")
            and (check := live.get(s.name)) is not None
            and check.status is KeyStatus.ACCEPTED
        ),
        None,
    )
    if working is None:
        return None
    return Finding(
        FindingCode.VARIABLE_HIDES_WORKING_KEY,
        "error",
        f"RunPod rejects RUNPOD_API_KEY ({answer.fingerprint}), and it overrides the key in "
        f"{working.where} ({working.fingerprint}), which RunPod accepts",
        "this library and runpodctl take RUNPOD_API_KEY first, so they send the rejected key "
        "while a working one sits in the config file",
        "unset RUNPOD_API_KEY (and remove it where it is set: shell profile, .env file, CI "
        "secret); the config file's key is then used.",
        env,
    )


# Findings made redundant by a more specific one: the specific one leads, these are dropped.
_EXPLAINED_BY: dict[FindingCode, frozenset[FindingCode]] = {
    FindingCode.MISSPELLED_VARIABLE: frozenset({FindingCode.NO_KEY}),
    FindingCode.VARIABLE_HIDES_WORKING_KEY: frozenset(
        {FindingCode.SOURCES_DISAGREE, FindingCode.KEY_REJECTED}
    ),
}


def _drop_explained(findings: list[Finding]) -> list[Finding]:
    # A generic finding (no source) is explained outright; one about a source only when
    # the specific finding is about that same source (another rejected key still counts).
    explained = {(code, f.source) for f in findings for code in _EXPLAINED_BY.get(f.code, ())}
    codes = {code for code, _ in explained}
    return [
        f
        for f in findings
        if (f.code, f.source) not in explained and not (f.source is None and f.code in codes)
    ]


def _no_key(setup: Setup) -> Finding:
    """No tool has a key: none anywhere, or only where none of them reads it."""
    unread = [s for s in setup.sources if s.raw.strip()]
    if not unread:
        where = ", ".join(_EXPECTED) + f", {setup.config_path}"
        return Finding(
            FindingCode.NO_KEY,
            "error",
            f"no RunPod API key is set anywhere RunPod's tools look ({where})",
            "every request goes out without a key and RunPod answers 401",
            f"Create a key at {CONSOLE_URL} (API Keys), then run `{LOGIN}` to check it and "
            "save it where the SDK, runpodctl and this library read it (or export "
            "RUNPOD_API_KEY=rpa_...).",
        )
    held = ", ".join(f"{s.where} ({s.fingerprint})" for s in unread)
    variable = unread[0].name.removeprefix("env:")
    return Finding(
        FindingCode.NO_KEY,
        "error",
        f"no tool here starts with a key: the only one is in {held}, which the runpod SDK and "
        "runpodctl do not read (RunPod sets it inside serverless workers); this library "
        "finds it only by recovery, after a first request is rejected",
        "requests go out without a key and RunPod answers 401 (this library then recovers)",
        f'Put it where they read it: export RUNPOD_API_KEY="${variable}" (this library and '
        f"runpodctl), or run `{LOGIN}` to save it as [default].api_key for the runpod SDK too.",
    )


def diagnose(setup: Setup, live: Mapping[str, Validation] | None = None) -> list[Finding]:
    """Every finding about *setup*, the one to act on first.

    Errors come before warnings; among them, a specific diagnosis (a stale variable over
    a working key, a misspelled variable) leads, and the generic findings it explains
    (no key, the rejected key, sources that disagree) are dropped.

    Args:
        setup: What `gather` found.
        live: The live check's answers by `KeySource.name` (as `keys_to_check` names them).
            ``None`` when it was skipped.

    """
    chosen = winners(setup)
    # What each tool would send, not whether a key sits somewhere: one in a place no tool
    # reads (RUNPOD_AI_API_KEY outside a worker) leaves every request without a key.
    have_key = any((chosen.sdk, chosen.runpodctl, chosen.library))
    findings: list[Finding] = []
    if live is not None:
        hidden = _hidden_working_key(setup, chosen, live)
        if hidden is not None:
            findings.append(hidden)
    findings += _variable_findings(setup, have_key=have_key)
    findings += _config_findings(setup, chosen)
    if not have_key:
        findings.append(_no_key(setup))
    findings += _shape_findings(setup)
    findings += _tool_findings(setup, chosen)
    if live is not None:
        findings += _live_findings(setup, keys_to_check(setup), live)
    order = {"error": 0, "warning": 1, "info": 2, "ok": 3}
    return sorted(_drop_explained(findings), key=lambda f: order[f.severity])


def exit_code(findings: Sequence[Finding]) -> int:
    """``doctor``'s exit code: 1 if any finding is an error, else 0."""
    return 1 if any(f.severity == "error" for f in findings) else 0
