"""Every copy of the key the SDK keeps, brought up to date when the key changes.

The SDK copies the key into many places: the global ``runpod.api_key`` (read by new
endpoints and by GraphQL calls), each sync client's ``api_key`` and ``Authorization``
header, each async endpoint's and async job's headers, an ``AsyncClientSession``'s
default header. Our adapters stamp the current key on every request anyway; the copies
are kept current so that objects made later, and code that reads them, see the new key.

`KeyCopies.refresh` runs before and after every request an SDK adapter handles: it
costs a comparison unless the key changed. The global is written only while it holds a
key some `Credentials` held (or none): a different key put there by the application is
its own rotation, and is adopted with `Credentials.set_key`. The copies of a key an
object was given for itself (see `_bindings`) never touch the global.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._errors import InvalidKeyError

if TYPE_CHECKING:
    from .._credentials import Credentials

__all__ = ["KeyCopies", "copies_for", "was_global", "write_header"]

Writer = Callable[[Any, str], None]

# Keys written into runpod.api_key by any KeyCopies (bounded, as the log scrubber's list).
_ours: deque[str] = deque(maxlen=64)
_registry: weakref.WeakKeyDictionary[Credentials, KeyCopies] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def write_header(headers: Any, key: str) -> None:
    """Replace the key in an ``Authorization`` header, keeping its bare or Bearer form."""
    old = headers.get("Authorization")
    if old is None:
        return
    headers["Authorization"] = f"Bearer {key}" if str(old).startswith("Bearer ") else key


def was_global(key: str) -> bool:
    """Whether *key* is one we put in ``runpod.api_key`` (an object holding it got it there)."""
    return key in _ours


def copies_for(credentials: Credentials) -> KeyCopies:
    """Return the one `KeyCopies` of *credentials*."""
    with _registry_lock:
        copies = _registry.get(credentials)
        if copies is None:
            copies = _registry[credentials] = KeyCopies(credentials)
        return copies


class KeyCopies:
    """The SDK objects that hold a copy of one `Credentials`' key."""

    def __init__(self, credentials: Credentials, *, global_key: bool = True) -> None:
        """Track the copies of *credentials*' key; *global_key*: ``runpod.api_key`` too."""
        # Weak: the registry maps credentials to this object, which must not keep them alive.
        self._credentials = weakref.ref(credentials)
        self._lock = threading.Lock()
        self._objects: weakref.WeakKeyDictionary[Any, Writer] = weakref.WeakKeyDictionary()
        self._generation = -1
        runpod: Any = sys.modules["runpod"]
        self._global_key = global_key
        # Whether runpod.api_key holds our key: only then may we replace it, or adopt a
        # key the application puts there later. A key an object was given for itself
        # never touches it.
        self._owns_global = global_key and (
            runpod.api_key is None or runpod.api_key == credentials.api_key
        )
        if self._owns_global and credentials.api_key is not None:
            _ours.append(credentials.api_key)

    @property
    def credentials(self) -> Credentials:
        """The credentials whose key the copies hold."""
        credentials = self._credentials()
        if credentials is None:  # pragma: no cover -- every caller holds them strongly
            raise ReferenceError("these credentials no longer exist")
        return credentials

    def add(self, obj: Any, writer: Writer) -> None:
        """Keep *obj*'s copy current with *writer* (obj, key); write the current key now."""
        key = self.credentials.api_key
        with self._lock:
            self._objects[obj] = writer
            if key is not None:
                writer(obj, key)

    def refresh(self) -> None:
        """Adopt a key the application set on ``runpod.api_key``; write a changed key."""
        runpod: Any = sys.modules["runpod"]
        current = self.credentials.api_key
        shown = runpod.api_key
        if (
            self._owns_global
            and isinstance(shown, str)
            and shown
            and shown != current
            and shown not in _ours
        ):
            # A key that cannot be sent is not ours to judge here: the SDK sends it, RunPod answers.
            with contextlib.suppress(InvalidKeyError):
                self.credentials.set_key(shown, source="runpod.api_key")
            _ours.append(shown)
        state = self.credentials.current
        if state.generation == self._generation or state.key is None:
            return
        with self._lock:
            if state.generation <= self._generation:
                return
            for obj, writer in list(self._objects.items()):
                writer(obj, state.key)
            if self._global_key and (runpod.api_key is None or runpod.api_key in _ours):
                _ours.append(state.key)
                runpod.api_key = state.key
                self._owns_global = True
            self._generation = state.generation
