"""`retry_init`: build a client with the current key; on rejection, recover and build again.

RunPod's troubleshooting page suggests wrapping client initialization in ``try/except``,
getting a new key and trying again. This is that, bounded and run by the engine:
"send with key *k*" is "call the factory with *k*, then ask RunPod whether *k* works"
(one GraphQL ``myself { id }``), and the status reported is RunPod's answer. A 401 (or
no key at all) runs recovery once for everyone sharing the credentials and the factory
is called again with the new key; a 403 means the key is valid and is not recovered.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar, cast

from .._credentials import Credentials
from .._engine import FORBIDDEN, UNAUTHORIZED, Wire, run_sync
from .._errors import AuthenticationError, PermissionDeniedError
from .._validate import KeyStatus, checked_graphql_url, graphql_url, validate

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Attempt", "retry_init"]

T = TypeVar("T")

_OK = 200
_STATUS = {
    KeyStatus.REJECTED: UNAUTHORIZED,
    KeyStatus.MISSING: UNAUTHORIZED,  # no key at all: recovery is how one is found
    KeyStatus.FORBIDDEN: FORBIDDEN,
}


@dataclass(slots=True)
class Attempt(Generic[T]):
    """One try at an SDK call, as the engine sees it: a status, and the value or the error."""

    status: int
    value: T | None = None
    error: BaseException | None = None


class _Factory(Wire[Attempt[T]]):
    """A client factory called with a key, for the engine: a rejection stands for a 401.

    A client built with a rejected key has not been handed out: nothing to close.
    """

    __slots__ = ("_factory", "_key", "_validate_at", "last_error")
    method = "INIT"

    def __init__(
        self, factory: Callable[[str | None], T], key: str | None, validate_at: str | None
    ) -> None:
        self._factory = factory
        self._key = key
        self._validate_at = validate_at  # the GraphQL URL to check the key at, if asked
        self.last_error: BaseException | None = None

    @property
    def url(self) -> str:  # type: ignore[override]
        return self._validate_at or "INIT"

    def stamp(self, key: str | None) -> None:
        self._key = key

    def send(self) -> Attempt[T]:
        key = self._key
        try:
            value = self._factory(key)
        except Exception as exc:
            status = _status_of_error(exc, keyless=key is None)
            if status is None:
                raise
            self.last_error = exc
            return Attempt(status, error=exc)
        attempt = Attempt(_OK, value)
        if self._validate_at is not None:
            answer = validate(key, self._validate_at)
            attempt.status = _STATUS.get(answer.status, _OK)
        return attempt

    def status(self, response: Attempt[T]) -> int:
        return response.status


def _status_of_error(error: BaseException, *, keyless: bool) -> int | None:
    """Return the status a factory error reports if it is a key rejection, else None.

    *keyless*: the factory was given no key. The SDK then refuses to start with a
    ``RuntimeError`` (``Endpoint``, ``AsyncioEndpoint``: "api_key not initialized"),
    which is the missing key itself: recovery is how one is found.
    """
    if keyless and isinstance(error, RuntimeError):
        return UNAUTHORIZED
    if isinstance(error, AuthenticationError):
        return UNAUTHORIZED
    if isinstance(error, PermissionDeniedError):
        return FORBIDDEN
    runpod_error = sys.modules.get("runpod.error")
    if runpod_error is not None and isinstance(error, runpod_error.AuthenticationError):
        return UNAUTHORIZED  # what the SDK raises for a 401, and for no key at all
    # requests' and httpx's HTTPStatusError carry the response; aiohttp's error its status.
    response = getattr(error, "response", None)
    for status in (getattr(response, "status_code", None), getattr(error, "status", None)):
        if status in (UNAUTHORIZED, FORBIDDEN):
            return int(status)
    return None


def retry_init(
    factory: Callable[[str | None], T],
    credentials: Credentials | None = None,
    *,
    validate_key: bool = True,
    api_url: str | None = None,
) -> T:
    """Return ``factory(key)``, recovering the key and calling it again if RunPod rejects it.

    The factory is called with the current key. If it raises a rejection (our
    `AuthenticationError`, ``runpod.error.AuthenticationError``, or an HTTP error with
    status 401), or refuses to start without a key (the SDK's ``RuntimeError`` when
    there is no key anywhere), or, with *validate_key*, RunPod rejects the key it was
    given, recovery runs and the factory is called again with the new key, as many
    times as the credentials' bounds allow::

        client = retry_init(lambda key: runpod.Endpoint("ENDPOINT_ID", api_key=key))

    Args:
        factory: Builds the client from a key.
        credentials: The key and the recovery policy (default: ``Credentials()``).
        validate_key: Also ask RunPod (GraphQL ``myself { id }``) whether the key works
            once the factory has returned, so a client that checks nothing itself is
            not handed out with a dead key. A network failure there is not a rejection.
        api_url: RunPod's API base for that check (default: ``RUNPOD_API_BASE_URL`` or
            RunPod's own); it must be a host the credentials may send the key to.

    Raises:
        AuthenticationError: every key recovery produced was rejected (also a
            ``runpod.error.AuthenticationError`` when the SDK is in use).
        PermissionDeniedError: RunPod said the key is valid but lacks permission.
        ValueError: *api_url* is not a host the key may be sent to.
        Exception: whatever else the factory raises, unchanged.

    """
    credentials = credentials if credentials is not None else Credentials()
    url = checked_graphql_url(credentials.hosts, api_url) if validate_key else graphql_url(api_url)
    wire = _Factory(factory, credentials.api_key, url if validate_key else None)
    try:
        result = run_sync(credentials, wire, check_host=False)  # only `validate` sends the key
    except AuthenticationError as exc:
        raise _give_up(exc) from (exc.__cause__ or wire.last_error)
    return cast("T", result.value)


def _give_up(error: AuthenticationError) -> BaseException:
    """Return *error* as the SDK's callers catch it too, when the SDK is in use."""
    if "runpod.error" not in sys.modules:
        return error
    from ._errors import compatible  # noqa: PLC0415 -- imports runpod

    return compatible(error)
