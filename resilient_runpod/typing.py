"""Public types: what a recovery hook is, what it is handed, and what it may return."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

from ._keys import fingerprint

__all__ = ["HookResult", "RecoveredKey", "RecoveryContext", "RecoveryHook"]


@dataclass(frozen=True, slots=True)
class RecoveryContext:
    """What a recovery hook is told about the rejection it is asked to repair.

    Attributes:
        fingerprint: The rejected key's fingerprint (``rpa_…9XQ2``), never the key.
        attempt: Which recovery round this is for the request, starting at 1.
        status_code: The HTTP status that triggered recovery (401).
        method: The HTTP method of the rejected request.
        url: The rejected request's URL, with secrets (``api_key=``, user info) removed.
        key_id: A stable, irreversible identity of the rejected key (a SHA-256 prefix;
            empty when no key was sent): tells two keys apart where fingerprints may not.
        may_ask: Whether a hook may ask a person now. ``False`` while recovery waits for
            a secret store to show a rotation, or re-reads sources while the breaker is
            open: a person is asked only about a key known to be bad, and once. A hook
            that asks (`recovery.prompt`) then returns ``None`` without asking.
    """

    fingerprint: str
    attempt: int
    status_code: int
    method: str
    url: str
    key_id: str = ""
    may_ask: bool = True


@dataclass(frozen=True, slots=True)
class RecoveredKey:
    """A key a hook found, with the name of where it came from.

    Hooks may return a plain ``str``; returning this instead lets the ``source`` show in
    the ``runpod.auth.recovered`` event and in ``doctor``. Its repr shows a fingerprint.
    """

    key: str = field(repr=False)
    source: str

    def __repr__(self) -> str:
        """Show the fingerprint and the source, never the key."""
        return f"RecoveredKey({fingerprint(self.key)}, source={self.source!r})"


HookResult: TypeAlias = "str | RecoveredKey | None"


@runtime_checkable
class RecoveryHook(Protocol):
    """Anything that can be asked for a new key after RunPod rejected the current one.

    A hook is a callable, sync or async, that takes a `RecoveryContext` and returns a new
    key, a `RecoveredKey`, or ``None`` when it cannot help. It may raise; the error is
    reported and chained to the `AuthenticationError` the caller sees. It runs at most
    once per rejected key, however many requests were rejected with it, and never under
    a lock that other requests' network I/O needs.

    Optional attributes a hook may have: ``name`` (reported under that name),
    ``timeout`` (seconds it bounds itself to; the engine waits that long), and
    ``accepted(found: RecoveredKey)``, called once when RunPod first accepts a key the
    hook produced (`recovery.persist` saves it then), and
    ``subscribe(callback: Callable[[RecoveredKey], None]) -> Callable[[], None]``: a hook
    that can tell when its source changes (a watched file) calls *callback* with each new
    key; `Credentials` subscribes when it is made, installs each key as `set_key` would,
    and calls the returned function to unsubscribe when it is collected.
    """

    def __call__(self, context: RecoveryContext, /) -> HookResult | Awaitable[HookResult]:
        """Return a new key, or ``None`` if this hook cannot produce one."""
