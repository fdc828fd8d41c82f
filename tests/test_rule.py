"""The rule's two decision tables, row by row, as the README's "Turbulence" section states them.

Pure functions of plain facts: no sockets, no threads, no clock. Each case names the
README row it checks; the end-to-end wiring is proved in ``test_configurations.py`` and
``test_turbulence.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resilient_runpod import _rule
from resilient_runpod._rule import (
    FIRST_PAUSE,
    MAX_PAUSE,
    Act,
    Found,
    Outcome,
    Read,
    Rejection,
    after_401,
    after_read,
    may_ask,
    pause,
)

README = Path(__file__).resolve().parent.parent / "README.md"

# One case per row of "When a send gets 401": facts under which that row is the first
# to hold, and the act the README gives.
AFTER_401_ROWS = [
    (1, Rejection(replaced=True, recovering=True, cooling=True), Act.RESEND_CURRENT),
    (2, Rejection(recovering=True, cooling=True, first=False), Act.JOIN),
    (3, Rejection(accepted_since=True, first=False, cooling=True, waiting=True), Act.RESEND),
    (4, Rejection(first=True, known_rejected=False, cooling=True, waiting=True), Act.RESEND),
    (5, Rejection(first=False, cooling=True, waiting=True), Act.COOLDOWN),
    (6, Rejection(first=False, waiting=True), Act.WAIT),
    (7, Rejection(first=False), Act.READ),
]


@pytest.mark.parametrize(
    ("row", "facts", "expected"), AFTER_401_ROWS, ids=[f"row-{r[0]}" for r in AFTER_401_ROWS]
)
def test_after_401_follows_the_readme_row(row: int, facts: Rejection, expected: Act) -> None:
    """Each row of the 401 table decides when it is the first to hold, over every later one."""
    assert expected == after_401(facts)


def test_a_first_401_on_a_key_another_request_saw_rejected_twice_reads_the_source() -> None:
    """Row 4 needs both: a first 401 on a key known rejected skips the probe and reads."""
    assert Act.READ == after_401(Rejection(first=True, known_rejected=True))


def test_a_first_401_never_reads_the_source_nor_waits() -> None:
    """A spurious 401 costs one resend: whatever the store or breaker, no read, no wait."""
    for waiting in (False, True):
        for cooling in (False, True):
            facts = Rejection(first=True, waiting=waiting, cooling=cooling)
            assert Act.RESEND == after_401(facts)


AFTER_READ_ROWS = [
    (1, Read(Found.NEW, accepted_before=False, window_open=False), Outcome.NEW),
    (1, Read(Found.NEW, accepted_before=True, window_open=False, stale_episode=True), Outcome.NEW),
    (2, Read(Found.FAILED, accepted_before=True), Outcome.FAILED),
    (3, Read(Found.NOTHING_NEW, accepted_before=False), Outcome.NEVER_ACCEPTED),
    (3, Read(Found.NOTHING_NEW, accepted_before=False, stale_episode=True), Outcome.NEVER_ACCEPTED),
    (4, Read(Found.FAILED, accepted_before=False, stale_episode=True), Outcome.FAILED),
    (5, Read(Found.NOTHING_NEW, accepted_before=True), Outcome.STALE),
    (5, Read(Found.FAILED, accepted_before=True, stale_episode=True), Outcome.STALE),
    (6, Read(Found.NOTHING_NEW, accepted_before=True, window_open=False), Outcome.STALE_TOO_LONG),
    (6, Read(Found.FAILED, accepted_before=True, window_open=False, stale_episode=True),
     Outcome.STALE_TOO_LONG),
]  # fmt: skip


@pytest.mark.parametrize(
    ("row", "facts", "expected"),
    AFTER_READ_ROWS,
    ids=[f"row-{r[0]}-{r[1].found.value}" for r in AFTER_READ_ROWS],
)
def test_after_read_follows_the_readme_row(row: int, facts: Read, expected: Outcome) -> None:
    """Each row of the read table gives the outcome the README says."""
    assert expected == after_read(facts)


def test_nothing_new_never_fails_a_key_accepted_before_while_the_window_is_open() -> None:
    """A store that lags the revocation is waited for, never reported as a wrong key."""
    for found in (Found.NOTHING_NEW, Found.FAILED):
        assert Outcome.STALE == after_read(Read(found, accepted_before=True, stale_episode=True))


@pytest.mark.parametrize(
    ("accepted_before", "stale_rounds", "asked", "probing", "expected"),
    [
        (False, 0, False, False, True),  # a key never accepted: ask at once
        (True, 0, False, False, False),  # accepted before, first read: maybe spurious
        (True, 1, False, False, True),  # still rejected after a round of waiting
        (True, 3, True, False, False),  # asked already: once per key
        (False, 0, True, False, False),
        (False, 0, False, True, False),  # the breaker's re-reads never ask
        (True, 2, False, True, False),
    ],
)
def test_a_person_is_asked_only_about_a_key_known_to_be_bad(
    accepted_before: bool, stale_rounds: int, asked: bool, probing: bool, expected: bool
) -> None:
    """`may_ask`: never accepted, or rejected after a stale round; once; never on a probe."""
    assert expected == may_ask(
        accepted_before=accepted_before, stale_rounds=stale_rounds, asked=asked, probing=probing
    )


def test_stale_pauses_double_from_the_first_up_to_the_maximum() -> None:
    """0.1 s, 0.2 s, 0.4 s, ... never above 5 s: the README's backoff."""
    pauses = [pause(n) for n in range(1, 10)]
    assert [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0] == pytest.approx(pauses)
    assert (FIRST_PAUSE, MAX_PAUSE) == (pause(1), pause(100))


def _readme_rows(heading: str) -> list[str]:
    """The numbered rows of the README table right after *heading*."""
    text = README.read_text(encoding="utf-8")
    table = text[text.index(heading) :].split("\n\n", 2)[1]
    return [line for line in table.splitlines() if re.match(r"\| \d+ \|", line)]


def test_the_readme_tables_have_one_row_per_rule_row() -> None:
    """The README shows as many rows, in the same order of outcomes, as the code decides by."""
    after_401_rows = _readme_rows("**When a send gets 401**")
    after_read_rows = _readme_rows("**When the source was read**")
    assert len(_rule._AFTER_401) == len(after_401_rows)
    assert len(_rule._AFTER_READ) == len(after_read_rows)
    # The acts the README names, in the order the code tries its rows.
    words = {
        Act.RESEND_CURRENT: "current key",
        Act.JOIN: "wait for it",
        Act.RESEND: "resend the same key",
        Act.COOLDOWN: "CooldownError",
        Act.WAIT: "wait until",
        Act.READ: "read the source",
    }
    for (_, _, act), line in zip(_rule._AFTER_401, after_401_rows, strict=True):
        assert words[act] in line
    outcomes = {
        Outcome.NEW: "adopt it",
        Outcome.FAILED: "hook_failed",
        Outcome.NEVER_ACCEPTED: "never_accepted",
        Outcome.STALE: "wait (0.1 s",
        Outcome.STALE_TOO_LONG: "StaleSourceError",
    }
    for (_, _, outcome), line in zip(_rule._AFTER_READ, after_read_rows, strict=True):
        assert outcomes[outcome] in line
