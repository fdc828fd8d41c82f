from __future__ import annotations

import pytest

from resilient_runpod import InvalidKeyError, fingerprint
from resilient_runpod._keys import KeyProblem, check, clean, key_problems, shape_problems

from .helpers import make_key


class TestFingerprint:
    def test_shows_prefix_and_last_four(self):
        """An rpa_ key is named by its prefix and its last four characters."""
        key = "rpa_" + "A" * 42 + "9XQ2"

        assert "rpa_…9XQ2" == fingerprint(key)

    def test_legacy_key_has_no_prefix(self):
        """A key from before the rpa_ format shows only its last four characters."""
        assert "…wxyz" == fingerprint("0123456789abcdefghijklmnopqrstuvwxyz")

    def test_short_key_shows_only_its_length(self):
        """Four characters of a short string say too much about it: only the length is shown."""
        assert "<8-character key>" == fingerprint("abcdefgh")

    def test_missing_and_empty(self):
        """No key and an empty key have names of their own."""
        assert ("<no key>", "<empty key>") == (fingerprint(None), fingerprint(""))

    def test_never_contains_the_key(self):
        """The fingerprint of a real-shaped key does not contain the key."""
        key = make_key()

        assert key not in fingerprint(key)


class TestShapeProblems:
    def test_good_key_has_none(self):
        """A key of RunPod's current shape has no shape problems."""
        assert [] == shape_problems(make_key())

    @pytest.mark.parametrize(
        ("raw", "fragment"),
        [
            ("", "empty"),
            (" rpa_X\n", "whitespace"),
            ('"' + "rpa_" + "A" * 46 + '"', "quotes"),
            ("rps_" + "A" * 46, "S3 credential"),
            ("rpa_" + "A" * 10, "50 letters"),
            ("abc def ghi jkl", "characters"),
        ],
    )
    def test_each_problem_is_named(self, raw, fragment):
        """Each way a pasted key goes wrong is described in plain words."""
        problems = shape_problems(raw)

        assert any(fragment in p for p in problems), problems


class TestCheck:
    def test_returns_good_key_unchanged(self):
        """A usable key is returned as it is."""
        key = make_key()

        assert key == check(key)

    @pytest.mark.parametrize(
        "raw",
        ["", "   ", make_key() + "\n", " " + make_key(), "rps_" + "B" * 46, "a key"],
        # Named, not shown: the ids must not differ from one collection to the next.
        ids=["empty", "blank", "trailing-newline", "leading-space", "s3-key", "words"],
    )
    def test_refuses_unusable_keys_without_showing_them(self, raw):
        """Empty, padded, S3 and spaced keys raise InvalidKeyError; the message hides the key."""
        with pytest.raises(InvalidKeyError) as info:
            check(raw)

        assert raw.strip() == "" or raw.strip() not in str(info.value)
        assert isinstance(info.value, ValueError)

    def test_wrong_length_rpa_key_is_allowed(self):
        """A wrongly sized rpa_ key is only warned about by doctor: RunPod may change formats."""
        key = "rpa_" + "C" * 30

        assert key == check(key)

    def test_refuses_non_strings(self):
        """Passing bytes or a number says what type was expected."""
        with pytest.raises(InvalidKeyError, match="must be a str"):
            check(b"rpa_x")  # type: ignore[arg-type]


class TestClean:
    def test_strips_newline_and_quotes(self):
        """A key read from a file or pasted with quotes is cleaned of those artefacts."""
        key = make_key()

        assert [key, key, key] == [clean(key + "\n"), clean(f"'{key}'"), clean(f' "{key}" \n')]

    def test_whitespace_only_is_empty(self):
        """Whitespace alone is an empty key, refused with a reason."""
        with pytest.raises(InvalidKeyError, match="empty"):
            clean(" \n\t")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", [KeyProblem.EMPTY]),
        (" rpa_X\n", [KeyProblem.WHITESPACE, KeyProblem.BAD_SHAPE]),
        ('"' + "rpa_" + "A" * 46 + '"', [KeyProblem.QUOTED]),
        ("rps_" + "A" * 46, [KeyProblem.S3_KEY]),
        ("rpa_" + "A" * 10, [KeyProblem.BAD_SHAPE]),
        ("abc def ghi jkl", [KeyProblem.BAD_CHARACTERS]),
    ],
)
def test_key_problems_are_codes_and_the_words_are_rendered_from_them(raw, expected):
    """Each problem is a `KeyProblem`; `shape_problems` is their messages, in the same order."""
    assert expected == key_problems(raw)
    assert [p.message(raw) for p in expected] == shape_problems(raw)


def test_only_a_wrong_length_is_not_fatal():
    """A wrong-length rpa_ key can still be sent (RunPod may change its format); the rest not."""
    assert [KeyProblem.BAD_SHAPE] == [p for p in KeyProblem if not p.fatal]
    short = "rpa_" + "A" * 10
    assert short == check(short)


@pytest.mark.parametrize("padding", ["", " \n"], ids=["used", "refused"])
def test_a_key_handed_over_is_scrubbed_by_value_from_then_on(padding: str) -> None:
    """A legacy key (no prefix for a pattern to find) that went through `check`, accepted
    or refused, is replaced by its fingerprint in any text cleaned afterwards.
    """
    import contextlib
    import uuid

    from resilient_runpod._hosts import redact_text

    legacy = uuid.uuid4().hex.upper()
    with contextlib.suppress(InvalidKeyError):
        check(legacy + padding)

    assert f"botocore said {fingerprint(legacy)}" == redact_text(f"botocore said {legacy}")


def test_a_key_far_too_long_is_refused_without_being_shown():
    """100,000 characters (a file pasted for the key) cannot be sent: TOO_LONG, fatal."""
    pasted = "x" * 100_000
    with pytest.raises(InvalidKeyError, match="far longer than any RunPod key") as info:
        check(pasted)
    assert [KeyProblem.TOO_LONG] == key_problems(pasted)
    assert pasted[:20] not in str(info.value)


def test_a_quote_at_one_end_only_is_a_bad_character():
    """A stray quote pasted on one side is not a matched pair: the key cannot be sent."""
    key = make_key()
    for stray in (f'"{key}', f"{key}'", f"`{key}"):
        assert [KeyProblem.BAD_CHARACTERS] == key_problems(stray)
        with pytest.raises(InvalidKeyError):
            check(stray)
