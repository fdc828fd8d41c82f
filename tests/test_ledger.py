"""The key ledger (`_ledger.Ledger`): what RunPod said about the current key, times passed in."""

from __future__ import annotations

import pytest

from resilient_runpod._ledger import KeyState, Ledger
from resilient_runpod._rule import MAX_PAUSE, Rejection
from resilient_runpod.typing import RecoveredKey

from .helpers import make_key

T0 = 1000.0


def test_a_new_ledger_holds_generation_zero_not_yet_accepted():
    """The key it starts with is generation 0, never accepted, and its first acceptance is news."""
    key = make_key()
    ledger = Ledger(key, "argument")

    assert (KeyState(key, 0, "argument"), 0, False) == (
        ledger.current,
        ledger.watching,
        ledger.was_accepted(0),
    )


def test_the_key_state_repr_hides_the_key():
    """KeyState shows a fingerprint, the generation and the source, never the key."""
    key = make_key()

    shown = repr(KeyState(key, 3, "vault"))

    assert key not in shown
    assert shown.endswith("generation=3, source='vault')")


def test_install_makes_a_new_generation_and_forgets_the_old_keys_history():
    """A new key is the next generation: not known rejected, not stale, nobody asked."""
    ledger = Ledger(make_key(), "argument")
    _, mark = ledger.rejected(0, None)
    ledger.rejected(0, mark)
    ledger.stale_round(T0)
    ledger.note_asked()
    new = make_key()

    state = ledger.install(new, "vault", recovered=True)

    assert (KeyState(new, 1, "vault"), 1, None, False, 0) == (
        state,
        ledger.watching,
        ledger.stale,
        ledger.asked,
        ledger.stale_rounds,
    )
    assert Rejection() == ledger.rejected(1, None)[0]


def test_each_401_gets_a_new_mark():
    """Marks count the 401s reported, whatever their generation."""
    ledger = Ledger(make_key(), "argument")
    ledger.install(make_key(), "set_key", recovered=False)

    marks = [ledger.rejected(generation, None)[1] for generation in (0, 1, 1, 0)]

    assert [1, 2, 3, 4] == marks


def test_a_401_on_a_replaced_key_says_only_that():
    """A 401 with an older generation: the key was replaced, nothing else is learnt."""
    ledger = Ledger(make_key(), "argument")
    ledger.install(make_key(), "set_key", recovered=False)

    facts, _ = ledger.rejected(0, None)

    assert Rejection(replaced=True) == facts
    assert Rejection() == ledger.rejected(1, None)[0]  # the current key is not known rejected


def test_a_first_401_is_a_first_and_a_second_one_marks_the_key_known_rejected():
    """The first 401 of a request is a first; its resend's 401, with nothing accepted in
    between, makes the key known rejected, for every request's first 401 from then on.
    """
    ledger = Ledger(make_key(), "argument")

    first, mark = ledger.rejected(0, None)
    second, _ = ledger.rejected(0, mark)
    others_first, _ = ledger.rejected(0, None)

    assert Rejection(first=True, known_rejected=False) == first
    assert Rejection(first=False, known_rejected=True) == second
    assert Rejection(first=True, known_rejected=True) == others_first


def test_an_acceptance_after_a_401_is_accepted_since_its_mark():
    """RunPod accepted the key after a request's 401: that request's next 401 says so, and
    the key is not marked known rejected.
    """
    ledger = Ledger(make_key(), "argument")
    _, mark = ledger.rejected(0, None)
    ledger.accepted(0)

    facts, _ = ledger.rejected(0, mark)

    assert Rejection(accepted_since=True, first=False) == facts
    assert ledger.accepted_since(mark)


def test_an_acceptance_before_a_401_is_not_accepted_since_it():
    """An acceptance that came before a 401 tells nothing about the key after it."""
    ledger = Ledger(make_key(), "argument")
    ledger.accepted(0)
    _, mark = ledger.rejected(0, None)

    assert (False, True) == (ledger.accepted_since(mark), ledger.was_accepted(0))


def test_a_request_that_cannot_be_resent_cannot_probe():
    """A 401 on a request that cannot be sent again is never a first: the source is read."""
    ledger = Ledger(make_key(), "argument")

    facts, _ = ledger.rejected(0, None, resendable=False)

    assert Rejection(first=False, known_rejected=False) == facts


def test_an_acceptance_clears_known_rejected_and_stale():
    """Once RunPod accepts the key again, what its 401s suggested is forgotten."""
    ledger = Ledger(make_key(), "argument")
    _, mark = ledger.rejected(0, None)
    ledger.rejected(0, mark)
    ledger.stale_round(T0)

    ledger.accepted(0)

    assert (None, 0.0, Rejection()) == (
        ledger.stale,
        ledger.waiting(T0),
        ledger.rejected(0, None)[0],
    )


def test_only_the_watched_generations_acceptance_is_news():
    """After an acceptance nothing is watched; a 401 on the key makes its next acceptance news."""
    ledger = Ledger(make_key(), "argument")
    ledger.accepted(0)
    after_acceptance = ledger.watching
    ledger.rejected(0, None)

    assert (None, 0) == (after_acceptance, ledger.watching)


def test_a_recovered_key_is_handed_back_once_on_its_first_acceptance():
    """The key a hook found is returned, with its source, the first time RunPod accepts it."""
    ledger = Ledger(make_key(), "argument")
    new = make_key()
    ledger.install(new, "vault", recovered=True)

    first = ledger.accepted(1)
    second = ledger.accepted(1)

    assert (RecoveredKey(new, "vault"), None) == (first, second)


def test_a_key_set_by_the_application_is_never_handed_back():
    """A key installed as not recovered (set_key) has no hook to tell."""
    ledger = Ledger(make_key(), "argument")
    ledger.install(make_key(), "set_key", recovered=False)

    assert None is ledger.accepted(1)


def test_forget_recovered_drops_the_key_waiting_to_be_told():
    """After forget_recovered, the recovered key's acceptance hands nothing back."""
    ledger = Ledger(make_key(), "argument")
    ledger.install(make_key(), "vault", recovered=True)

    ledger.forget_recovered()

    assert None is ledger.accepted(1)


def test_an_older_generations_acceptance_is_counted_but_changes_nothing_current():
    """RunPod accepting an older key marks it accepted, but clears nothing of the current key."""
    ledger = Ledger(make_key(), "argument")
    ledger.install(make_key(), "vault", recovered=True)
    ledger.stale_round(T0)

    told = ledger.accepted(0)

    assert (None, True, False, 1) == (
        told,
        ledger.was_accepted(0),
        ledger.was_accepted(1),
        ledger.stale_rounds,
    )


def test_stale_rounds_pause_twice_as_long_each_time_up_to_the_maximum():
    """Each stale read pauses 0.1 s, then twice as long each round, never beyond 5 s."""
    ledger = Ledger(make_key(), "argument")

    pauses = [ledger.stale_round(T0) for _ in range(8)]

    assert [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, MAX_PAUSE, MAX_PAUSE] == pytest.approx(pauses)
    assert 8 == ledger.stale_rounds


def test_the_next_read_is_due_after_the_pause():
    """After a stale round, the store is not read again until its pause has passed."""
    ledger = Ledger(make_key(), "argument")
    ledger.stale_round(T0)

    waits = [ledger.waiting(T0 + t) for t in (0.0, 0.05, 0.1, 1.0)]

    assert pytest.approx([0.1, 0.05, 0.0, 0.0]) == waits


def test_stale_for_counts_from_the_first_stale_read():
    """How long the store has been stale counts from its first stale read, not its last."""
    ledger = Ledger(make_key(), "argument")
    before = ledger.stale_for(T0)
    ledger.stale_round(T0)
    ledger.stale_round(T0 + 3)

    assert (0.0, 10.0) == (before, ledger.stale_for(T0 + 10))


def test_a_person_asked_is_remembered_for_the_key():
    """note_asked is remembered until a new key is installed."""
    ledger = Ledger(make_key(), "argument")
    ledger.note_asked()
    asked = ledger.asked
    ledger.accepted(0)
    still = ledger.asked
    ledger.install(make_key(), "vault", recovered=True)

    assert (True, True, False) == (asked, still, ledger.asked)
