"""`resilient-runpod doctor`: find out why a RunPod key fails, and say how to fix it.

Lists every place a key can come from, which one each tool uses, and what is wrong:
an unset or misspelled variable, a key RunPod rejects (revoked, expired), a typo
(whitespace, quotes, an S3 key). Keys appear by fingerprint only. Exit code 0 when no
problem was found, 1 when one was, 2 for usage errors.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from typing import TYPE_CHECKING, Any, TextIO

from ._common import api_url, not_blank

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable
    from pathlib import Path

    from resilient_runpod._validate import Validation
    from resilient_runpod.cli._diagnose import Finding, Setup, Winners

__all__ = ["add_parser", "report"]

_MARKS = {"error": "[error]  ", "warning": "[warning]", "info": "[info]   ", "ok": "[ok]     "}
_TOOLS = (
    ("library", "resilient_runpod", "RUNPOD_API_KEY, then [PROFILE].api_key, then apiKey"),
    ("sdk", "runpod SDK", "[default].api_key only, read at import"),
    ("runpodctl", "runpodctl", "RUNPOD_API_KEY, then apiKey"),
)


def add_parser(sub: Any) -> None:
    """Register the `doctor` subcommand on *sub* (an argparse subparsers object)."""
    parser = sub.add_parser(
        "doctor",
        help="find out why a RunPod API key fails, and how to fix it",
        description=(
            "Check every place a RunPod API key can come from (RUNPOD_API_KEY, RUNPOD_AI_API_KEY, "
            "~/.runpod/config.toml), say which key each tool uses, find misspelled variables and "
            "mistyped keys, and ask RunPod whether each key works. Keys are shown by fingerprint "
            "only. Exit code: 0 no problem found, 1 a problem found, 2 usage error."
        ),
    )
    parser.add_argument(
        "--profile",
        default="default",
        type=not_blank,
        help="the config-file profile this library reads (default: %(default)s)",
    )
    parser.add_argument(
        "--offline", action="store_true", help="do not ask RunPod whether the keys work"
    )
    parser.add_argument(
        "--api-url",
        metavar="URL",
        type=api_url,
        help="the API to ask (default: $RUNPOD_API_BASE_URL or https://api.runpod.io), "
        "e.g. an emulator's URL",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=_run, command_parser=parser)


def report(
    *,
    profile: str = "default",
    offline: bool = False,
    api_url: str | None = None,
    config: Path | None = None,
) -> dict[str, Any]:
    """Run the checks and return the JSON-ready report ``doctor --json`` prints."""
    from resilient_runpod.cli import _diagnose  # noqa: PLC0415 (keeps `resilient-runpod --help` fast)

    setup = _diagnose.gather(profile=profile, path=config)
    live = None if offline else _diagnose.check_live(setup, api_url)
    findings = _diagnose.diagnose(setup, live)
    return _as_json(setup, _diagnose.winners(setup), live, findings, offline=offline)


def _as_json(
    setup: Setup,
    winners: Winners,
    live: dict[str, Validation] | None,
    findings: list[Finding],
    *,
    offline: bool,
) -> dict[str, Any]:
    from resilient_runpod.cli._diagnose import exit_code  # noqa: PLC0415

    used_by: dict[str, list[str]] = {}
    for tool, _, _ in _TOOLS:
        name = getattr(winners, tool)
        if name is not None:
            used_by.setdefault(name, []).append(tool)
    code = exit_code(findings)
    return {
        "ok": code == 0,
        "exit_code": code,
        "profile": setup.profile,
        "config_path": str(setup.config_path),
        "config_exists": setup.config_exists,
        "sources": [
            {
                "name": s.name,
                "where": s.where,
                "fingerprint": s.fingerprint,
                "used_by": used_by.get(s.name, []),
            }
            for s in setup.sources
        ],
        "winners": {tool: getattr(winners, tool) for tool, _, _ in _TOOLS},
        "live": None
        if live is None
        else [
            {
                "source": name,
                "status": v.status.value,
                "fingerprint": v.fingerprint,
                "url": v.url,
                "detail": v.detail,
            }
            for name, v in live.items()
        ],
        "offline": offline,
        "findings": [
            {
                "code": f.code.value,
                "severity": f.severity,
                "what": f.what,
                "why": f.why,
                "fix": f.fix,
                "source": f.source,
            }
            for f in findings
        ],
    }


def _render(data: dict[str, Any], out: TextIO) -> None:
    width = max(60, min(shutil.get_terminal_size().columns, 100))

    def say(text: str = "", indent: str = "") -> None:
        lines = textwrap.wrap(text, width, subsequent_indent=indent or "  ") if text else [""]
        out.write("\n".join(lines) + "\n")

    _render_sources(data, say)
    _render_findings(data, say)


def _render_sources(data: dict[str, Any], say: Callable[..., None]) -> None:
    sources = {s["name"]: s for s in data["sources"]}
    say(f"Where a RunPod key can come from (profile: {data['profile']})")
    rows = [
        ("RUNPOD_API_KEY", "env:RUNPOD_API_KEY"),
        ("RUNPOD_AI_API_KEY", "env:RUNPOD_AI_API_KEY"),
        ("[default].api_key", "config:[default].api_key"),
    ]
    if data["profile"] != "default":
        rows.append((f"[{data['profile']}].api_key", f"config:[{data['profile']}].api_key"))
    rows.append(("apiKey (runpodctl)", "config:apiKey"))
    for label, name in rows:
        source = sources.get(name)
        shown = source["fingerprint"] if source else "not set"
        say(f"  {label:<24} {shown}")
    state = "" if data["config_exists"] else " (does not exist)"
    say(f"  config file: {data['config_path']}{state}")
    say()
    say("Which key each tool uses")
    for tool, label, rule in _TOOLS:
        name = data["winners"][tool]
        shown = f"{sources[name]['fingerprint']} from {name}" if name else "no key"
        say(f"  {label:<24} {shown}")
        say(f"  {'':<24} ({rule.replace('PROFILE', data['profile'])})")
    say()
    if data["live"] is None:
        say("Live check: skipped (--offline)")
    elif not data["live"]:
        say("Live check: nothing to ask (no key that can be sent)")
    else:
        for check in data["live"]:
            what = f"{check['fingerprint']} from {check['source']}"
            say(f"Live check: {what}: {check['status']} ({check['url']})")
    say()


def _render_findings(data: dict[str, Any], say: Callable[..., None]) -> None:
    problems = [f for f in data["findings"] if f["severity"] in ("error", "warning")]
    for finding in data["findings"]:
        say(f"{_MARKS[finding['severity']]} {finding['what']}", " " * 10)
        if finding["why"] and finding["severity"] != "ok":
            say(f"{'':<10}why: {finding['why']}", " " * 15)
        if finding["fix"]:
            say(f"{'':<10}fix: {finding['fix']}", " " * 15)
    if data["findings"]:
        say()
    errors = sum(1 for f in problems if f["severity"] == "error")
    if data["exit_code"] == 0:
        verdict = "the key setup works" if data["live"] else "no problem found (not checked live)"
        extra = f", {len(problems)} warning(s)" if problems else ""
        say(f"Result: {verdict}{extra}.")
    else:
        say(f"Result: {errors} problem(s) to fix{', see above' if errors else ''}.")


def _run(args: argparse.Namespace) -> int:
    data = report(profile=args.profile, offline=args.offline, api_url=args.api_url)
    if args.json:
        json.dump(data, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        _render(data, sys.stdout)
    sys.stdout.flush()
    code: int = data["exit_code"]
    return code
