"""What the emulator remembers about keys, faults and traffic, shared between threads.

Test code calls the controls from its own threads while the app reads and writes the
same state from uvicorn's event-loop thread, so every access goes through one lock.
Nothing holds the lock across an ``await`` or any I/O.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from resilient_runpod._keys import API_KEY_PREFIX, fingerprint

from ._jobs import JobQueue

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._pods import Pod, PodStore

__all__ = [
    "SCOPES",
    "Counters",
    "EmulatorState",
    "KeyInfo",
    "Scope",
    "UnknownKeyError",
    "check_scope",
    "new_key",
]

Scope = Literal["all", "read"]
"""What a key may do: ``"all"`` reads and writes, ``"read"`` gets 403 on every write."""

SCOPES: tuple[Scope, ...] = ("all", "read")

# How many seconds of per-second counts a long-running emulator keeps.
_SECONDS_KEPT = 3600
_UPPER_DIGITS = string.ascii_uppercase + string.digits
_ALNUM = string.ascii_letters + string.digits


def new_key() -> str:
    """Return a fresh random key shaped like RunPod's: ``rpa_`` and 46 letters and digits.

    The shape matches the public secret-scanning rule, so code that checks a key's shape
    accepts emulator keys exactly as it accepts real ones.
    """
    head = "".join(secrets.choice(_UPPER_DIGITS) for _ in range(40))
    tail = "".join(secrets.choice(_ALNUM) for _ in range(6))
    return f"{API_KEY_PREFIX}{head}{tail}"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """What the emulator may say about one registered key: never the key itself."""

    fingerprint: str
    """The key's prefix and last four characters, e.g. ``rpa_…9XQ2``."""
    scope: Scope
    """``"all"`` or ``"read"``."""
    active: bool
    """False once the key was revoked (or rotated away): it then gets 401."""


@dataclass(frozen=True, slots=True)
class Counters:
    """A snapshot of the requests the emulator answered (admin requests excluded).

    Keys appear by fingerprint only; a request without a key counts as ``"<no key>"``.
    """

    total: int = 0
    """All requests answered."""
    by_status: Mapping[int, int] = field(default_factory=dict)
    """Requests per HTTP status code."""
    by_key: Mapping[str, int] = field(default_factory=dict)
    """Requests per key fingerprint."""
    by_key_status: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    """Requests per key fingerprint, then per status code."""
    by_second: Mapping[int, Mapping[int, int]] = field(default_factory=dict)
    """Requests per wall-clock second (``int(time.time())``), then per status code; the
    last hour only."""

    def to_json(self) -> dict[str, object]:
        """Return the snapshot as JSON-ready data (status codes become strings)."""
        return {
            "total": self.total,
            "by_status": {str(code): n for code, n in self.by_status.items()},
            "by_key": dict(self.by_key),
            "by_key_status": {
                fp: {str(code): n for code, n in codes.items()}
                for fp, codes in self.by_key_status.items()
            },
            "by_second": {
                str(second): {str(code): n for code, n in codes.items()}
                for second, codes in self.by_second.items()
            },
        }


@dataclass(slots=True)
class _KeyRecord:
    scope: Scope
    active: bool


RESET = 0
"""A fault "status" meaning: drop the connection mid-response instead of answering."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One injected failure: *status* (or `RESET`), before or after the request is served.

    Attributes:
        status: The HTTP status to answer with, or `RESET` to drop the connection.
        path_prefix: Only requests whose path starts with it; ``None`` for any.
        retry_after: The ``Retry-After`` header to send, if any.
        after: Serve the request first (a job is created), then fail: what a gateway
            timing out on a healthy backend looks like.
        firewall: Answer with an HTML page, as the firewall in front of RunPod does
            (Cloudflare's "you have been blocked"), instead of RunPod's own body.
    """

    status: int
    path_prefix: str | None = None
    retry_after: str | None = None
    after: bool = False
    firewall: bool = False


@dataclass(frozen=True, slots=True)
class Chaos:
    """Random trouble for every counted request: rates from 0 to 1, and a latency range.

    Attributes:
        unauthorized: Spurious 401s on keys that are valid.
        server_error: 502, 503 or 504 before the request is served.
        too_many: 429 with ``Retry-After: 0``.
        latency: Seconds, drawn uniformly from this range.
        seed: Makes a run repeatable.
        path_prefix: Only requests whose path starts with it are troubled.
    """

    unauthorized: float = 0.0
    server_error: float = 0.0
    too_many: float = 0.0
    latency: tuple[float, float] = (0.0, 0.0)
    seed: int | None = None
    path_prefix: str | None = None

    def __post_init__(self) -> None:
        rates = (self.unauthorized, self.server_error, self.too_many)
        if any(not 0 <= r <= 1 for r in rates) or sum(rates) > 1:
            raise ValueError("chaos rates must be between 0 and 1, and add up to at most 1")
        low, high = self.latency
        if not 0 <= low <= high:
            raise ValueError("latency must be a range (low, high) with 0 <= low <= high")


class UnknownKeyError(KeyError):
    """The emulator was asked to change a key it never registered. Names it by fingerprint."""


def check_scope(scope: str) -> Scope:
    """Return *scope* if it is one the emulator knows, else raise `ValueError`."""
    for known in SCOPES:
        if scope == known:
            return known
    raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")


class EmulatorState:
    """Keys, faults, latency, counters, jobs and pods of one emulator."""

    def __init__(
        self, keys: Iterable[str], *, read_keys: Iterable[str] = (), job_seconds: float
    ) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, _KeyRecord] = {}
        self._faults: list[Fault] = []
        self._chaos = Chaos()
        self._random = random.Random()  # noqa: S311 -- test traffic, not secrets
        self._in_flight = 0
        self._latency = 0.0
        self._by_key_status: Counter[tuple[str, int]] = Counter()
        self._by_second: dict[int, Counter[int]] = {}
        self._job_seconds = job_seconds
        self.jobs = JobQueue(job_seconds)
        self._pods: PodStore | None = None
        initial: dict[str, Scope] = dict.fromkeys(keys, "all")
        initial.update(dict.fromkeys(read_keys, "read"))
        self._initial = initial or {new_key(): "all"}
        for key, scope in self._initial.items():
            self.add_key(key, scope=scope)

    # -- keys ---------------------------------------------------------------------------

    def add_key(self, key: str | None = None, *, scope: str = "all") -> str:
        """Register *key* (or a new random one) with *scope*; re-activate it if known."""
        checked = check_scope(scope)
        if key is None:
            key = new_key()
        if not isinstance(key, str) or not key or key != key.strip():
            raise ValueError("an emulator key must be a non-empty str without surrounding spaces")
        with self._lock:
            self._keys[key] = _KeyRecord(checked, active=True)
        return key

    def revoke(self, key: str) -> None:
        """Make *key* answer 401 from now on."""
        with self._lock:
            record = self._record(key)
            record.active = False

    def rotate(self, old_key: str) -> str:
        """Revoke *old_key* and return a new key with the same scope."""
        new = new_key()
        with self._lock:
            record = self._record(old_key)
            record.active = False
            self._keys[new] = _KeyRecord(record.scope, active=True)
        return new

    def _record(self, key: str) -> _KeyRecord:
        try:
            return self._keys[key]
        except KeyError:
            raise UnknownKeyError(f"the emulator has no key {fingerprint(key)}") from None

    def scope_of(self, key: str | None) -> Scope | None:
        """Return the scope *key* grants, or None if it is missing, unknown or revoked."""
        if key is None:
            return None
        with self._lock:
            record = self._keys.get(key)
        return record.scope if record is not None and record.active else None

    @staticmethod
    def user_id(key: str) -> str:
        """Return the stable account id the emulator shows for *key*."""
        # Stable, so tests can tell which key a GraphQL call used; a one-way hash, so that
        # nothing in a response reveals the key's characters.
        digest = hashlib.sha256(b"resilient-runpod-emulator\0" + key.encode()).hexdigest()
        return f"user-{digest[:12]}"

    def first_key(self) -> str | None:
        """Return the first active full-access key, if any."""
        with self._lock:
            for key, record in self._keys.items():
                if record.active and record.scope == "all":
                    return key
        return None

    def key_infos(self) -> tuple[KeyInfo, ...]:
        """Describe every registered key, in the order they were added."""
        with self._lock:
            return tuple(
                KeyInfo(fingerprint(key), record.scope, record.active)
                for key, record in self._keys.items()
            )

    # -- pods ---------------------------------------------------------------------------

    @property
    def pods(self) -> PodStore:
        """The account's pods, made on first use: only pod routes need `_pods`."""
        store = self._pods
        if store is None:
            from ._pods import PodStore  # noqa: PLC0415 (loaded by the first pod request)

            with self._lock:
                store = self._pods  # another thread may have made it meanwhile
                if store is None:
                    store = self._pods = PodStore()
        return store

    def pod_list(self) -> list[Pod]:
        """Every pod, oldest first, without making the store if no pod was ever asked for."""
        store = self._pods
        return [] if store is None else store.all()

    # -- faults -------------------------------------------------------------------------

    def inject(self, fault: Fault, count: int) -> None:
        """Queue *count* copies of *fault*."""
        status = fault.status
        if status != RESET and not 400 <= status <= 599:  # noqa: PLR2004 (HTTP error codes)
            raise ValueError(f"an injected status must be an HTTP error (400-599), not {status}")
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count}")
        with self._lock:
            self._faults.extend([fault] * count)

    def take_fault(self, path: str) -> Fault | None:
        """Consume the first queued fault that applies to *path*, else draw one from chaos."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.path_prefix is None or path.startswith(fault.path_prefix):
                    del self._faults[index]
                    return fault
            chaos = self._chaos
            if chaos.path_prefix is not None and not path.startswith(chaos.path_prefix):
                return None
            draw = self._random.random()
            if draw < chaos.unauthorized:
                return Fault(401)
            draw -= chaos.unauthorized
            if draw < chaos.server_error:
                return Fault(self._random.choice((502, 503, 504)))
            draw -= chaos.server_error
            if draw < chaos.too_many:
                return Fault(429, retry_after="0")
        return None

    def set_chaos(self, chaos: Chaos) -> None:
        """Draw random trouble for every request from now on (``Chaos()`` for none)."""
        with self._lock:
            self._chaos = chaos
            self._random = random.Random(chaos.seed)  # noqa: S311 -- test traffic

    def next_latency(self) -> float:
        """The delay for the next request: the fixed latency plus chaos's random part."""
        with self._lock:
            low, high = self._chaos.latency
            extra = self._random.uniform(low, high) if high > 0 else 0.0
            return self._latency + extra

    @property
    def latency(self) -> float:
        """Seconds every counted request waits before it is answered."""
        with self._lock:
            return self._latency

    def set_latency(self, seconds: float) -> None:
        """Delay every counted request by *seconds* from now on."""
        if seconds < 0:
            raise ValueError(f"latency cannot be negative, not {seconds}")
        with self._lock:
            self._latency = float(seconds)

    def clear_faults(self) -> None:
        """Drop every queued fault, the chaos and the latency."""
        with self._lock:
            self._faults.clear()
            self._chaos = Chaos()
            self._latency = 0.0

    # -- counters -----------------------------------------------------------------------

    def arrived(self, delta: int) -> None:
        """A counted request arrived (+1) or was answered (-1)."""
        with self._lock:
            self._in_flight += delta

    @property
    def in_flight(self) -> int:
        """Counted requests that arrived and are not answered yet."""
        with self._lock:
            return self._in_flight

    def count(self, key_fingerprint: str, status: int) -> None:
        """Record one answered request."""
        second = int(time.time())
        with self._lock:
            self._by_key_status[key_fingerprint, status] += 1
            self._by_second.setdefault(second, Counter())[status] += 1
            if len(self._by_second) > _SECONDS_KEPT:
                # A long-running emulator keeps the last hour; dicts keep insertion order.
                del self._by_second[next(iter(self._by_second))]

    def counters(self) -> Counters:
        """Return a snapshot of the counters."""
        with self._lock:
            items = list(self._by_key_status.items())
            by_second = {second: dict(codes) for second, codes in self._by_second.items()}
        by_status: Counter[int] = Counter()
        by_key: Counter[str] = Counter()
        by_key_status: dict[str, dict[int, int]] = {}
        for (fp, status), n in items:
            by_status[status] += n
            by_key[fp] += n
            by_key_status.setdefault(fp, {})[status] = n
        return Counters(
            total=sum(by_status.values()),
            by_status=dict(by_status),
            by_key=dict(by_key),
            by_key_status=by_key_status,
            by_second=by_second,
        )

    def reset_counters(self) -> None:
        """Forget every request counted so far."""
        with self._lock:
            self._by_key_status.clear()
            self._by_second.clear()

    # -- everything ---------------------------------------------------------------------

    def reset(self) -> None:
        """Return to the state right after construction, keeping the initial keys' values."""
        with self._lock:
            self._keys = {
                key: _KeyRecord(scope, active=True) for key, scope in self._initial.items()
            }
            self._faults.clear()
            self._chaos = Chaos()
            self._latency = 0.0
            self._by_key_status.clear()
            self._by_second.clear()
        self.jobs.reset(self._job_seconds)
        if self._pods is not None:
            self._pods.reset()
