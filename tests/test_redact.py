"""`scrubbed_exception`: what the library chains never shows a key, and nothing else changes."""

from __future__ import annotations

from resilient_runpod import RecoveryError
from resilient_runpod._redact import scrubbed_exception

from .helpers import make_key


def _raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    """*error* as Python leaves it once raised (with a traceback), from *cause*."""
    try:
        raise error from cause  # noqa: TRY301 -- raised to get a real traceback
    except BaseException as exc:  # returned for the test to inspect
        return exc


def test_an_error_that_shows_no_key_is_returned_itself():
    """A hook's error without a key in its chain is chained as it is, type and all."""
    error = _raised(ValueError("vault sealed"), _raised(OSError(13, "denied")))
    assert scrubbed_exception(error) is error


def test_an_error_that_quotes_a_key_becomes_a_scrubbed_stand_in():
    """The stand-in names the original type, shows the fingerprint, keeps the traceback."""
    key = make_key()
    error = _raised(KeyError(f"no such token {key}"))

    stand_in = scrubbed_exception(error)

    assert isinstance(stand_in, RecoveryError)
    assert f"KeyError: 'no such token rpa_…{key[-4:]}'" == str(stand_in)
    assert error.__traceback__ is stand_in.__traceback__


def test_a_key_deep_in_the_chain_is_scrubbed_at_every_link():
    """A clean error whose cause quotes the key is replaced too, and so is its cause."""
    key = make_key()
    error = _raised(RuntimeError("lookup failed"), _raised(ValueError(key)))

    stand_in = scrubbed_exception(error)

    texts = []
    link: BaseException | None = stand_in
    while link is not None:
        texts.append(f"{link} {link!r} {link.args!r}")
        link = link.__cause__ or link.__context__
    assert ["RuntimeError: lookup failed", f"ValueError: rpa_…{key[-4:]}"] == [
        str(e) for e in (stand_in, stand_in.__cause__)
    ]
    assert [] == [t for t in texts if key in t]


def test_a_cycle_in_the_chain_ends():
    """Exceptions whose contexts form a cycle are handled without recursing for ever."""
    key = make_key()
    first, second = ValueError(key), ValueError("second")
    first.__context__, second.__context__ = second, first

    stand_in = scrubbed_exception(first)

    texts, seen = [], set()
    link: BaseException | None = stand_in
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        texts.append(f"{link} {link!r}")
        link = link.__cause__ or link.__context__
    assert [] == [t for t in texts if key in t]
    assert 1 < len(texts)
