"""Which `Credentials` an SDK object follows: the shared ones, or its own key's.

The rule: an object created with its own key (``Endpoint("E", api_key=K)``, a call
with ``api_key=K``) sends that key. If RunPod rejects it, recovery runs with the same
hook and the same single-flight rules, and the recovered key replaces it for that
object only: neither the shared `Credentials` nor ``runpod.api_key`` change. Objects
created without a key of their own follow the shared `Credentials`.

An explicit key gets a `Credentials` of its own, derived from the shared one (same
hook, hosts, bounds and retry policy) and made once per distinct key, so that every
object holding that key shares one recovery. A key equal to the shared key, or to
``runpod.api_key`` (what the SDK falls back to when given none), or one we put there
before a rotation, is not a key of the object's own.
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from .._credentials import Credentials
from .._engine import UNAUTHORIZED, AsyncWire, Wire, run_async, run_sync
from .._errors import AuthenticationError, InvalidKeyError, ResilientRunPodError
from .._hosts import AnyURL
from .._keys import key_id
from ._copies import KeyCopies, copies_for, was_global
from ._errors import compatible
from ._retry_init import Attempt

__all__ = ["Binding", "acall_with_key", "binding_for", "call_with_key", "shared"]


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Binding:
    """The credentials an SDK object sends with, and the copies of their key to keep."""

    credentials: Credentials
    copies: KeyCopies


_derived: weakref.WeakKeyDictionary[Credentials, dict[str, Binding]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def shared(credentials: Credentials) -> Binding:
    """The binding of objects that follow *credentials*."""
    return Binding(credentials, copies_for(credentials))


def _own(parent: Credentials, key: str) -> Binding | None:
    with _lock:
        table = _derived.setdefault(parent, {})
        found = table.get(key_id(key))
        if found is not None:
            return found
        try:
            credentials = parent._derive(key)  # noqa: SLF001 -- every setting, one definition
        except InvalidKeyError:
            return None  # a key that cannot be sent: the SDK sends it as it is, unchanged
        made = table[key_id(key)] = Binding(credentials, KeyCopies(credentials, global_key=False))
        return made


def binding_for(credentials: Credentials, key: Any) -> Binding | None:
    """The binding of an object holding *key*; None leaves the object as the SDK made it.

    *key* is what the object holds (or the ``api_key=`` a call passes): a key of its
    own gets its own binding, anything else follows *credentials*.
    """
    runpod: Any = sys.modules["runpod"]
    if (
        not isinstance(key, str)
        or not key
        or key in (credentials.api_key, runpod.api_key)
        or was_global(key)
    ):
        return shared(credentials)
    return _own(credentials, key)


def _keyless(binding: Binding) -> bool:
    """Whether neither the credentials nor the SDK have a key."""
    runpod: Any = sys.modules["runpod"]
    return binding.credentials.api_key is None and not runpod.api_key


def _refused(error: BaseException) -> bool:
    """Whether *error* is the SDK refusing to start for lack of a key.

    Asked only when there was no key anywhere: ``RuntimeError`` from an endpoint,
    ``AuthenticationError`` ("No API key provided") from an API function; never one of
    our own errors.
    """
    sdk_error: Any = sys.modules["runpod.error"]
    return isinstance(error, (RuntimeError, sdk_error.AuthenticationError)) and not isinstance(
        error, ResilientRunPodError
    )


# What the events name as the rejected "request": the key the SDK had, none.
_WHERE = "runpod.api_key"
_OK = 200


class _Keyless(Generic[T]):
    """What both SDK-call wires share: the key handed over, a refusal read as a 401.

    The key is handed over by refreshing the SDK's copies of it; a refusal to start for
    lack of a key stands for the 401 it would have been.
    """

    __slots__ = ("_binding", "_call")
    method = "INIT"
    url: AnyURL = _WHERE

    def __init__(self, binding: Binding, call: Callable[[], Any]) -> None:
        self._binding = binding
        self._call = call

    def stamp(self, key: str | None) -> None:
        self._binding.copies.refresh()  # the key is in the copies already

    def status(self, response: Attempt[T]) -> int:
        return response.status


class _Call(_Keyless[T], Wire["Attempt[T]"]):
    """An SDK call that may be refused for lack of a key, for the engine."""

    __slots__ = ()

    def send(self) -> Attempt[T]:
        try:
            return Attempt(_OK, self._call())
        except Exception as exc:
            if not _refused(exc):
                raise
            return Attempt(UNAUTHORIZED, error=exc)


class _AsyncCall(_Keyless[T], AsyncWire["Attempt[T]"]):
    """`_Call` for coroutines."""

    __slots__ = ()

    async def send(self) -> Attempt[T]:
        try:
            return Attempt(_OK, await self._call())
        except Exception as exc:
            if not _refused(exc):
                raise
            return Attempt(UNAUTHORIZED, error=exc)


def call_with_key(binding: Binding, call: Callable[[], T]) -> T:
    """Run *call* (an SDK call) with the key handed to the SDK first.

    With no key anywhere, the SDK refuses before it sends anything, so no 401 would
    ever run recovery. The engine then sees that refusal as the 401 it stands for:
    recovery runs under its usual rules, and *call* is made again with the key found.
    A call that needs no key (it fails validation, say) runs no recovery.

    Raises:
        AuthenticationError: recovery found no key (also the SDK's error types).
    """
    binding.copies.refresh()
    if not _keyless(binding):
        return call()
    try:
        # The SDK sends the key itself, to the hosts it is pointed at: no host check.
        attempt: Attempt[T] = run_sync(
            binding.credentials, _Call[T](binding, call), check_host=False
        )
    except AuthenticationError as error:
        raise compatible(error) from error.__cause__
    return cast("T", attempt.value)


async def acall_with_key(binding: Binding, call: Callable[[], Awaitable[T]]) -> T:
    """`call_with_key` for coroutines: recovery never blocks the event loop."""
    binding.copies.refresh()
    if not _keyless(binding):
        return await call()
    try:
        attempt: Attempt[T] = await run_async(
            binding.credentials, _AsyncCall[T](binding, call), check_host=False
        )
    except AuthenticationError as error:
        raise compatible(error) from error.__cause__
    return cast("T", attempt.value)
