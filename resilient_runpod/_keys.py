"""What a RunPod API key looks like, and how to talk about one without showing it.

Everything that puts a key into text (logs, errors, reprs, CLI output) goes through
`fingerprint`. Everything that accepts a key from outside goes through `clean`
(sources that read files, variables or a person's typing) or `check` (keys handed to us
in code, which we refuse to alter silently).
"""

from __future__ import annotations

import enum
import hashlib
import re
import threading
from collections import deque

from ._errors import KEYS_PAGE, InvalidKeyError

__all__ = [
    "API_KEY_PREFIX",
    "KEYS_PAGE",
    "KEY_VARIABLES",
    "S3_KEY_PREFIX",
    "KeyProblem",
    "check",
    "clean",
    "fingerprint",
    "key_id",
    "key_problems",
    "known_keys",
    "note_key",
    "shape_problems",
    "unquote",
]

API_KEY_PREFIX = "rpa_"
S3_KEY_PREFIX = "rps_"
# The variables RunPod's tools read the key from: the first by runpodctl, the SDK and most
# scripts, the second inside serverless workers.
KEY_VARIABLES = ("RUNPOD_API_KEY", "RUNPOD_AI_API_KEY")

# A public secret-scanning rule for keys made since 2024-11: 50 characters in all.
_RPA_SHAPE = re.compile(r"rpa_[A-Z0-9]{40}[A-Za-z0-9]{6}")
# Characters a header value can carry and no RunPod key has ever contained.
_FORBIDDEN = re.compile(r"[\s\"'`<>\\]|[^\x21-\x7e]")
_QUOTES = "\"'`"
# Below this length, even the last four characters say too much about the key.
_MIN_FINGERPRINT_LEN = 12

# Keys this process has held, so that keys without a prefix to match (legacy keys) can be
# scrubbed from text too. Bounded: a long-lived worker rotating every hour must not grow
# it forever; the newest keys are the ones still in flight.
_known_keys: deque[str] = deque(maxlen=64)
# Of those, the keys a `Credentials` held: each new one guards the loggers made since.
_held_keys: deque[str] = deque(maxlen=64)
_known_lock = threading.Lock()


def note_key(key: str | None, *, held: bool = True) -> bool:
    """Remember *key* as a secret to scrub from text; True if it was not held yet.

    *held*: a `Credentials` holds it (else it was only handed to `check`).
    """
    if not key:
        return False
    with _known_lock:
        if key not in _known_keys:
            _known_keys.append(key)
        if not held or key in _held_keys:
            return False
        _held_keys.append(key)
        return True


def known_keys() -> tuple[str, ...]:
    """The keys `note_key` was told about, newest last, for exact-match scrubbing."""
    return tuple(_known_keys)


def fingerprint(key: str | None) -> str:
    """Name *key* for humans without revealing it: its prefix and its last 4 characters.

    >>> fingerprint("rpa_" + "A" * 42 + "9XQ2")
    'rpa_…9XQ2'
    """
    if key is None:
        return "<no key>"
    if not key:
        return "<empty key>"
    if len(key) < _MIN_FINGERPRINT_LEN:
        return f"<{len(key)}-character key>"
    prefix = key[:4] if key[:4] in (API_KEY_PREFIX, S3_KEY_PREFIX) else ""
    return f"{prefix}…{key[-4:]}"


def key_id(key: str | None) -> str:
    """A stable identity for *key* that cannot be turned back into it (a SHA-256 prefix).

    Fingerprints are for people and may collide; this is for programs that must tell
    two keys apart without keeping either, e.g. processes sharing one recovery.
    """
    if key is None:
        return ""
    return hashlib.sha256(key.encode()).hexdigest()[:24]


class KeyProblem(enum.Enum):
    """What can be wrong with a key's text; `message` renders it for people."""

    EMPTY = "empty"
    WHITESPACE = "whitespace"
    QUOTED = "quoted"
    S3_KEY = "s3-key"
    BAD_CHARACTERS = "bad-characters"
    BAD_SHAPE = "bad-shape"
    TOO_LONG = "too-long"

    @property
    def fatal(self) -> bool:
        """Whether a key with this problem cannot be sent at all.

        A wrong length for an ``rpa_`` key is not fatal: legacy keys have no prefix and
        RunPod may change the format, so only `doctor` and the prompt warn about it.
        """
        return self is not KeyProblem.BAD_SHAPE

    def message(self, key: str = "") -> str:
        """The problem in plain words (*key* gives `BAD_SHAPE` its length; never shown)."""
        if self is KeyProblem.BAD_SHAPE:
            return (
                f"the key starts with 'rpa_' but is {len(key.strip())} characters long "
                "or has unexpected characters; RunPod's rpa_ keys are 50 letters and digits"
            )
        return _MESSAGES[self]


_MESSAGES = {
    KeyProblem.EMPTY: "the key is empty",
    KeyProblem.WHITESPACE: "the key has leading or trailing whitespace (a pasted newline?)",
    KeyProblem.QUOTED: "the key is wrapped in quotes that were pasted along with it",
    KeyProblem.S3_KEY: "the key starts with 'rps_': that is a RunPod S3 credential, not an API key",
    KeyProblem.BAD_CHARACTERS: "the key contains characters that no RunPod key has "
    "(spaces, quotes, ...)",
    KeyProblem.TOO_LONG: "the key is far longer than any RunPod key (a file or a page pasted "
    "instead of the key?)",
}

# No RunPod key comes near this; a longer "key" is something else pasted by mistake.
MAX_KEY_LENGTH = 512


def key_problems(key: str) -> list[KeyProblem]:
    """Everything about *key*'s text that would make RunPod reject it, as codes.

    An empty list means the key looks like a key; only the API can say whether it works.
    """
    if not key:
        return [KeyProblem.EMPTY]
    problems: list[KeyProblem] = []
    if key != key.strip():
        problems.append(KeyProblem.WHITESPACE)
    stripped = key.strip()
    if len(stripped) >= 2 and stripped[0] == stripped[-1] and stripped[0] in _QUOTES:  # noqa: PLR2004
        problems.append(KeyProblem.QUOTED)
    # Matching quotes at both ends are their own problem; a quote at one end only is not.
    inner = stripped[1:-1] if KeyProblem.QUOTED in problems else stripped
    if len(stripped) > MAX_KEY_LENGTH:
        problems.append(KeyProblem.TOO_LONG)
    elif stripped.startswith(S3_KEY_PREFIX):
        problems.append(KeyProblem.S3_KEY)
    elif _FORBIDDEN.search(inner):
        problems.append(KeyProblem.BAD_CHARACTERS)
    elif stripped.startswith(API_KEY_PREFIX) and not _RPA_SHAPE.fullmatch(stripped):
        problems.append(KeyProblem.BAD_SHAPE)
    return problems


def shape_problems(key: str) -> list[str]:
    """`key_problems` in plain words, one sentence fragment each."""
    return [problem.message(key) for problem in key_problems(key)]


def check(key: str) -> str:
    """Return *key* unchanged if it can be sent, else raise `InvalidKeyError` saying why.

    Used for keys handed to us in code: we never alter them behind the caller's back.
    Every key checked is remembered (`note_key`) to be scrubbed from text by value.
    A wrong length for an ``rpa_`` key is not fatal here (only `doctor` warns about it),
    since legacy keys have no prefix and RunPod may change the format.
    """
    if not isinstance(key, str):
        msg = f"an API key must be a str, not {type(key).__name__}"
        raise InvalidKeyError(msg, fingerprint=None)
    if len(key.strip()) >= _MIN_FINGERPRINT_LEN:
        # A key handed to us is scrubbed by value from now on, used or refused: a legacy
        # key has no prefix for the patterns to find.
        note_key(key.strip(), held=False)
    fatal = [p.message(key) for p in key_problems(key) if p.fatal]
    if fatal:
        raise InvalidKeyError(
            f"API key {fingerprint(key.strip())} cannot be used: {'; '.join(fatal)}. "
            f"Copy the key again from {KEYS_PAGE}.",
            fingerprint=fingerprint(key.strip()),
        )
    return key


def clean(raw: str) -> str:
    """Normalize a key read from a file, a variable, a command or a person, then `check` it.

    Surrounding whitespace (a trailing newline from ``echo`` or a mounted secret) and one
    pair of matching surrounding quotes are removed: those are artefacts of how the key
    travelled, not part of it.
    """
    return check(unquote(raw))


def unquote(raw: str) -> str:
    """*raw* without surrounding whitespace and one pair of matching surrounding quotes.

    What a key picks up on its way through a shell, a ``.env`` file or a paste.
    """
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:  # noqa: PLR2004
        text = text[1:-1].strip()
    return text
