"""The recovery circuit breaker (`_breaker.CircuitBreaker`): states over times passed in."""

from __future__ import annotations

import pytest

from resilient_runpod._breaker import Breaker, CircuitBreaker, Gate

T0 = 1000.0


def opened(
    threshold: int = 3, cooldown: float = 60.0, probe_interval: float = 5.0
) -> CircuitBreaker:
    """A breaker that has just opened at T0, after *threshold* failures in a row."""
    breaker = CircuitBreaker(threshold, cooldown, probe_interval)
    for _ in range(threshold):
        breaker.failed(T0)
    assert Breaker.OPEN == breaker.state
    return breaker


def test_a_new_breaker_is_closed_and_lets_recovery_run():
    """Nothing failed yet: closed, recovery runs, nothing to wait for."""
    breaker = CircuitBreaker(3, 60.0, 5.0)

    assert (Breaker.CLOSED, Gate.RUN, False, 0.0, 0) == (
        breaker.seen(T0),
        breaker.gate(T0),
        breaker.would_refuse(T0),
        breaker.retry_after(T0),
        breaker.failures,
    )


def test_failures_below_the_threshold_keep_it_closed():
    """Two failures in a row with a threshold of three: still closed, recovery still runs."""
    breaker = CircuitBreaker(3, 60.0, 5.0)
    breaker.failed(T0)
    breaker.failed(T0)

    assert (Breaker.CLOSED, Gate.RUN, 2) == (breaker.seen(T0), breaker.gate(T0), breaker.failures)


def test_the_threshold_opens_it_for_the_cooldown():
    """The threshold-th failure opens it: recovery is refused, for the cooldown's length."""
    breaker = opened(cooldown=60.0)

    assert (Breaker.OPEN, Gate.REFUSE, True, 60.0) == (
        breaker.seen(T0 + 1),
        breaker.gate(T0 + 1),
        breaker.would_refuse(T0 + 1),
        breaker.retry_after(T0),
    )


def test_an_open_breaker_lets_one_probe_through_every_probe_interval():
    """While open, one probe per probe_interval: refused before, let through at it, then
    refused until the next interval, which the probe booked.
    """
    breaker = opened(cooldown=60.0, probe_interval=5.0)

    gates = [breaker.gate(T0 + t) for t in (4.9, 5.0, 5.0, 9.9, 10.0)]

    assert [Gate.REFUSE, Gate.PROBE, Gate.REFUSE, Gate.REFUSE, Gate.PROBE] == gates
    assert Breaker.OPEN == breaker.state


def test_would_refuse_books_nothing():
    """Asking whether it would refuse never uses up a probe: the gate still lets it through."""
    breaker = opened(probe_interval=5.0)

    asked = [breaker.would_refuse(T0 + 5.0) for _ in range(3)]

    assert ([False, False, False], Gate.PROBE) == (asked, breaker.gate(T0 + 5.0))


def test_a_zero_probe_interval_probes_every_time():
    """With probe_interval 0, every recovery while open is a probe: none is refused."""
    breaker = opened(probe_interval=0.0)

    assert [Gate.PROBE] * 3 == [breaker.gate(T0 + 1) for _ in range(3)]


def test_past_the_cooldown_it_is_half_open_and_the_next_recovery_is_a_trial():
    """After the cooldown it is seen half open; the gate lets the trial run and says so."""
    breaker = opened(cooldown=60.0)

    seen = breaker.seen(T0 + 60.0)
    gate = breaker.gate(T0 + 60.0)

    assert (Breaker.HALF_OPEN, Gate.RUN, Breaker.HALF_OPEN, 0.0) == (
        seen,
        gate,
        breaker.state,
        breaker.retry_after(T0 + 60.0),
    )


def test_a_failed_trial_opens_it_again_at_once():
    """One failure while half open reopens it for a full cooldown: no count to the threshold."""
    breaker = opened(cooldown=60.0)
    breaker.gate(T0 + 60.0)

    breaker.failed(T0 + 60.0)

    assert (Breaker.OPEN, Gate.REFUSE, 60.0) == (
        breaker.state,
        breaker.gate(T0 + 61.0),
        breaker.retry_after(T0 + 60.0),
    )


def test_a_recovered_key_makes_it_half_open_until_accepted():
    """A probe that found a new key: half open (not closed) until RunPod accepts that key."""
    breaker = opened()

    breaker.recovered()

    assert (Breaker.HALF_OPEN, Gate.RUN) == (breaker.seen(T0 + 1), breaker.gate(T0 + 1))


def test_a_recovered_key_leaves_a_closed_breaker_closed():
    """A recovery that worked while closed changes nothing."""
    breaker = CircuitBreaker(3, 60.0, 5.0)

    breaker.recovered()

    assert Breaker.CLOSED == breaker.state


def test_close_forgets_the_failures():
    """An accepted key (or one set by the application) closes it and restarts the count."""
    breaker = opened(threshold=3)
    breaker.close()
    breaker.failed(T0 + 1)
    breaker.failed(T0 + 1)

    assert (Breaker.CLOSED, 2, Gate.RUN) == (breaker.state, breaker.failures, breaker.gate(T0 + 1))


def test_a_failure_while_open_extends_the_cooldown():
    """A probe's failure counted while open opens it anew from that moment."""
    breaker = opened(cooldown=60.0)

    breaker.failed(T0 + 30.0)

    assert pytest.approx(60.0) == breaker.retry_after(T0 + 30.0)


def test_a_zero_cooldown_is_over_at_once():
    """With cooldown 0 the breaker opens and is half open the same instant: a trial runs."""
    breaker = opened(cooldown=0.0)

    assert (Breaker.HALF_OPEN, Gate.RUN) == (breaker.seen(T0), breaker.gate(T0))
