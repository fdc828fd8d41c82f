"""`resilient-runpod login`: ask for a key, check it with RunPod, save it for the next run."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

from .._errors import (
    ConfigError,
    HookTimeoutError,
    InvalidKeyError,
    NonInteractiveError,
    RecoveryError,
)
from .._keys import clean, fingerprint
from .._validate import KeyStatus, Validation, validate
from ..recovery._persist import save_to_config, save_to_file
from ..recovery._prompt import Prompt
from ._common import api_url, not_blank

if TYPE_CHECKING:
    import argparse

__all__ = ["add_parser"]

# Exit codes: 0 saved; 1 the key was not saved (rejected, unreachable, cancelled, write
# failed); 2 nobody can answer here, or the arguments were wrong.
_SAVED, _NOT_SAVED, _USAGE = 0, 1, 2


def add_parser(sub: Any) -> None:
    """Register the `login` subcommand on *sub* (an argparse subparsers object)."""
    parser = sub.add_parser(
        "login",
        help="ask for an API key, check it with RunPod, save it to ~/.runpod/config.toml",
        description=(
            "Ask for a RunPod API key (hidden input), check it with RunPod, and save it as "
            "[PROFILE].api_key in ~/.runpod/config.toml, where the runpod SDK reads it. "
            "The rest of the file is kept; the file is made private (0600). The key is "
            "never printed. Exit code: 0 saved, 1 not saved (rejected, unreachable, cancelled, "
            "write failed), 2 nobody can be asked here, or a usage error."
        ),
    )
    parser.add_argument(
        "--profile", default="default", type=not_blank, help="config profile (default: default)"
    )
    parser.add_argument(
        "--api-url",
        metavar="URL",
        type=api_url,
        help="RunPod API base to check the key against (default: RUNPOD_API_BASE_URL or RunPod's)",
    )
    parser.add_argument(
        "--to",
        metavar="PATH",
        type=not_blank,
        help="save to this file alone (key and newline) instead of the config",
    )
    parser.add_argument(
        "--stdin",
        action="store_true",
        help="read the key from stdin instead of asking (e.g. piped from a secret manager)",
    )
    parser.add_argument(
        "--no-validate", action="store_true", help="save without asking RunPod first"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="also print the outcome as one JSON object on stdout (saved, fingerprint, where)",
    )
    parser.set_defaults(run=_run, command_parser=parser)


class _LoginPrompt(Prompt):
    """The recovery prompt, but strict: a key RunPod could not check is not taken."""

    def __init__(self, *, api_url: str | None, check: bool) -> None:
        super().__init__(validate=check, api_url=api_url, timeout=None)
        self.unreachable: Validation | None = None
        self.checked: Validation | None = None

    def _check_with_runpod(self, validation: Validation) -> str:
        self.checked = validation
        if validation.status is KeyStatus.UNREACHABLE:
            self.unreachable = validation
            raise RecoveryError(f"could not ask RunPod at {validation.url}: {validation.detail}")
        return super()._check_with_runpod(validation)


def _say(text: str) -> None:
    print(text, file=sys.stderr)  # noqa: T201 -- the CLI talks on stderr, stdout stays clean


def _key_from_stdin(args: argparse.Namespace) -> tuple[str | None, Validation | None]:
    """The piped key and RunPod's answer about it (None: not asked); no key if not to save."""
    try:
        key = clean(sys.stdin.read() if sys.stdin is not None else "")
    except InvalidKeyError as exc:
        _say(f"login: {exc}")
        return None, None
    if args.no_validate:
        return key, None
    validation = validate(key, args.api_url)
    if validation.status is KeyStatus.REJECTED:
        _say(f"login: not saved: RunPod rejected {fingerprint(key)} ({validation.url}).")
        return None, validation
    if validation.status is KeyStatus.UNREACHABLE:
        _say(
            f"login: not saved: could not ask RunPod whether {fingerprint(key)} works "
            f"({validation.detail} from {validation.url}). Check the network or --api-url, "
            "or add --no-validate to save it unchecked."
        )
        return None, validation
    return key, validation


def _verdict(validation: Validation | None) -> str:
    """What the saved line says about RunPod's answer."""
    if validation is None:
        return "unchecked"
    if validation.status is KeyStatus.FORBIDDEN:
        # A valid key without some permission (a read-only key): still the person's key,
        # but not one RunPod accepted for everything.
        return (
            f"RunPod answered 403 ({validation.detail}): the key is known but lacks some "
            "permission; give it more at the console if your code needs it"
        )
    return "RunPod accepted it"


# Why `login` cannot ask: said by `login` itself, since the prompt's own advice ("run
# `resilient-runpod login`") would send the person in a circle.
_NO_TERMINAL = (
    "login: cannot ask for a key here: {why}. Pipe the key in instead, e.g. "
    "`pbpaste | resilient-runpod login --stdin` or "
    "`op read op://vault/runpod/key | resilient-runpod login --stdin`."
)


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def _ask(args: argparse.Namespace) -> tuple[str | None, Validation | None, int]:
    """Ask the person for a key: (the key, RunPod's answer, 0), or (None, _, the exit code)."""
    if not _stdin_is_terminal():
        _say(_NO_TERMINAL.format(why="stdin is not a terminal"))
        return None, None, _USAGE
    asker = _LoginPrompt(api_url=args.api_url, check=not args.no_validate)
    try:
        found = asker(None)  # with no context, it asks: None comes only from a context
    except NonInteractiveError as exc:
        _say(_NO_TERMINAL.format(why=exc.reason))
        return None, None, _USAGE
    except (KeyboardInterrupt, EOFError):
        _say("login: cancelled; nothing was saved")
        return None, None, _NOT_SAVED
    except (RecoveryError, HookTimeoutError) as exc:
        hint = " Use --no-validate to save it unchecked." if asker.unreachable else ""
        _say(f"login: not saved: {exc}.{hint}")
        return None, None, _NOT_SAVED
    return (found.key if found is not None else None), asker.checked, _SAVED


def _run(args: argparse.Namespace) -> int:
    if args.stdin and _stdin_is_terminal():
        # Typed into a terminal, the key would be echoed as it is typed.
        _say(
            "login: --stdin reads a piped key, but stdin is a terminal, where the key would "
            "be shown as it is typed. Pipe it in (`pbpaste | resilient-runpod login --stdin`), "
            "or run `resilient-runpod login` without --stdin for the hidden prompt."
        )
        key, validation, code = None, None, _USAGE
    elif args.stdin:
        (key, validation), code = _key_from_stdin(args), _NOT_SAVED
    else:
        key, validation, code = _ask(args)
    where = None
    if key is not None:
        try:
            if args.to is not None:
                where = str(save_to_file(key, args.to))
            else:
                where = f"{save_to_config(key, profile=args.profile)} [{args.profile}].api_key"
        except (ConfigError, OSError) as exc:
            _say(f"login: not saved: {exc}")
        else:
            _say(f"Saved API key {fingerprint(key)} to {where} ({_verdict(validation)}).")
            code = _SAVED
    if args.json:
        result = {
            "saved": code == _SAVED,
            "exit_code": code,
            "fingerprint": None if key is None else fingerprint(key),
            "where": where,
            "validated": code == _SAVED
            and validation is not None
            and validation.status is KeyStatus.ACCEPTED,
        }
        print(json.dumps(result))  # noqa: T201 -- the one line a script reads
    return code
