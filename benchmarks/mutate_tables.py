"""Mutation check of the rule's two decision tables, which mutmut does not reach.

mutmut 3 changes code inside functions only; ``_AFTER_401`` and ``_AFTER_READ`` in
``resilient_runpod/_rule.py`` are module-level tuples of lambdas, so its run on ``_rule.py``
never touches a row. This script changes one thing at a time in those two tables (a
condition negated, ``and`` and ``or`` swapped, a ``not`` dropped, a ``Found`` member swapped,
a row's result replaced by each other member, a row deleted, two rows swapped, the last
row's ``True`` made ``False``), runs the fast tests on a copy of the project, and prints
each survivor and the count.

Usage: ``.venv/bin/python benchmarks/mutate_tables.py [-j 2]`` from the project's root.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RULE = "resilient_runpod/_rule.py"
TESTS = [
    "tests/test_rule.py",
    "tests/test_ledger.py",
    "tests/test_breaker.py",
    "tests/test_credentials.py",
]
TABLES = {
    "_AFTER_401": ("Act", ["RESEND_CURRENT", "RESEND", "JOIN", "COOLDOWN", "WAIT", "READ"]),
    "_AFTER_READ": (
        "Outcome",
        ["NEW", "STALE", "NEVER_ACCEPTED", "STALE_TOO_LONG", "FAILED"],
    ),
}
FOUND = ["NEW", "NOTHING_NEW", "FAILED"]


def _table_span(source: str, name: str) -> tuple[int, int]:
    """Where the tuple of rows assigned to *name* starts and ends (its outer parentheses)."""
    start = source.index("= (\n", source.index(f"\n{name}:")) + 2
    end = source.index("\n)\n", start) + 2
    return start, end


def _rows(body: str) -> list[tuple[int, int]]:
    """Where each row of a table's body starts and ends: a balanced ``( ... ),`` text."""
    rows: list[tuple[int, int]] = []
    depth, begin = 0, 0
    for i, char in enumerate(body):
        if char == "(":
            if depth == 1:
                begin = i
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 1:
                rows.append((begin, i + 2))  # with its comma
    return rows


def _row_mutants(row: str, enum: str, members: list[str]) -> list[tuple[str, str]]:
    """One-change variants of a row, each with a label."""
    out: list[tuple[str, str]] = []
    cond = re.search(r"lambda (_?f): (.*?),\s*" + enum + r"\.", row, re.DOTALL)
    assert cond is not None, row
    text = cond.group(2)
    at = cond.start(2)

    def swap(old: str, new: str, label: str) -> None:
        out.append((label, row[:at] + new + row[at + len(old) :]))

    if text == "True":
        swap(text, "False", "True -> False")
    else:
        swap(text, f"not ({text})", "condition negated")
    for match in re.finditer(r"\b(and|or)\b", text):
        other = "or" if match.group(1) == "and" else "and"
        swap(
            text,
            text[: match.start()] + other + text[match.end() :],
            f"{match.group(1)} -> {other}",
        )
    for match in re.finditer(r"\bnot ", text):
        swap(text, text[: match.start()] + text[match.end() :], "not dropped")
    for match in re.finditer(r"\bis Found\.(\w+)", text):
        swap(text, text[: match.start()] + "is not" + text[match.start() + 2 :], "is -> is not")
        for member in FOUND:
            if member != match.group(1):
                new = text[: match.start(1)] + member + text[match.end(1) :]
                swap(text, new, f"Found.{match.group(1)} -> Found.{member}")
    result = re.search(enum + r"\.(\w+)", row[cond.end(2) :])
    assert result is not None
    start = cond.end(2) + result.start(1)
    for member in members:
        if member != result.group(1):
            mutated = row[:start] + member + row[start + len(result.group(1)) :]
            out.append((f"{enum}.{result.group(1)} -> {enum}.{member}", mutated))
    return out


def mutants(source: str) -> list[tuple[str, str]]:
    """Every one-change variant of the two tables in *source*, each with a label."""
    out: list[tuple[str, str]] = []
    for name, (enum, members) in TABLES.items():
        start, end = _table_span(source, name)
        body = source[start:end]
        spans = _rows(body)
        for number, (first, last) in enumerate(spans, 1):
            where = f"{name} row {number}"
            row = body[first:last]

            def with_body(new: str, start: int = start, end: int = end) -> str:
                return source[:start] + new + source[end:]

            for label, mutated in _row_mutants(row, enum, members):
                out.append((f"{where}: {label}", with_body(body[:first] + mutated + body[last:])))
            out.append((f"{where}: deleted", with_body(body[:first] + body[last:])))
            if number < len(spans):
                second, past = spans[number]
                between = body[last:second]
                swapped = body[:first] + body[second:past] + between + row + body[past:]
                out.append((f"{where}: swapped with the next", with_body(swapped)))
    return out


def killed(source: str) -> bool:
    """Whether the fast tests fail on a copy of the project whose rule is *source*."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        shutil.copytree(ROOT / "resilient_runpod", copy / "resilient_runpod")
        shutil.copytree(ROOT / "tests", copy / "tests")
        for name in ("README.md", "pyproject.toml"):
            shutil.copy(ROOT / name, copy / name)
        (copy / RULE).write_text(source, encoding="utf-8")
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
            cwd=copy,
            capture_output=True,
            check=False,
        )
        return run.returncode != 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-j", type=int, default=2, help="tests run at once")
    args = parser.parse_args()
    source = (ROOT / RULE).read_text(encoding="utf-8")
    assert not killed(source), "the tests fail on the unchanged code"
    found = mutants(source)
    with ThreadPoolExecutor(args.j) as pool:
        results = list(pool.map(lambda m: killed(m[1]), found))
    for (label, _), dead in zip(found, results, strict=True):
        if not dead:
            print(f"survived: {label}")
    print(f"killed {sum(results)} / {len(found)}")


if __name__ == "__main__":
    main()
