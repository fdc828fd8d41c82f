"""Key sources: where a recovery hook can look for a newer key.

Each source is a small callable object with a ``name`` (reported in events, errors and
``doctor``). It returns a `RecoveredKey`, ``None`` when it has nothing, or raises
`SourceError` when its source is broken, with a message that names the variable,
file or command and never the secret.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._config import config_path, keys_in_config
from .._errors import (
    ConfigError,
    InvalidKeyError,
    NonInteractiveError,
    RecoveryError,
    SourceError,
)
from .._files import read_secret_file
from .._hooks import CANCELLED, awaited, hook_name, is_async_callable
from .._hosts import redact_text
from .._keys import KEY_VARIABLES, clean, fingerprint, key_id
from .._redact import scrubbed_exception
from ..typing import HookResult, RecoveredKey, RecoveryContext, RecoveryHook
from ._watch import FileWatcher

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "DEFAULT_VARIABLES",
    "AsyncChain",
    "Chain",
    "FromEnv",
    "FromFile",
    "FromRunPodConfig",
    "WatchedFile",
    "callback",
    "chain",
    "from_env",
    "from_file",
    "from_runpod_config",
    "subscribe_all",
]

DEFAULT_VARIABLES = KEY_VARIABLES


def _clean_or_raise(raw: str, where: str) -> str:
    try:
        return clean(raw)
    except InvalidKeyError as exc:
        raise SourceError(f"{where} holds an unusable key: {exc}") from None


class FromEnv:
    """Re-read environment variables; the first one set wins. See `from_env`."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.name = "env:" + ",".join(self.names)

    def __call__(self, context: RecoveryContext | None = None) -> RecoveredKey | None:
        """Return the first set variable's key, or ``None`` if none is set."""
        for variable in self.names:
            raw = os.environ.get(variable)
            if raw is not None and raw.strip():
                return RecoveredKey(_clean_or_raise(raw, f"${variable}"), f"env:{variable}")
        return None

    def __repr__(self) -> str:
        return f"from_env({', '.join(map(repr, self.names))})"


def from_env(*names: str) -> FromEnv:
    """A hook that re-reads the environment: ``RUNPOD_API_KEY``, then ``RUNPOD_AI_API_KEY``.

    Useful when something else (a sidecar, ``os.environ[...] = ...`` in a notebook)
    updates the variable while the program runs.
    """
    return FromEnv(names or DEFAULT_VARIABLES)


class FromFile:
    """Re-read a mounted secret file on every call. See `from_file`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.name = f"file:{self.path}"
        self.watch = False

    def __call__(self, context: RecoveryContext | None = None) -> RecoveredKey:
        """Return the file's key, stripped of its trailing newline.

        Raises:
            SourceError: the file is missing, unreadable or empty.

        """
        try:
            raw = read_secret_file(self.path)
        except FileNotFoundError:
            raise SourceError(f"secret file {self.path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise SourceError(f"cannot read secret file {self.path}: {reason}") from None
        if not raw.strip():
            raise SourceError(f"secret file {self.path} is empty")
        return RecoveredKey(_clean_or_raise(raw, f"secret file {self.path}"), self.name)

    def __repr__(self) -> str:
        return f"from_file({str(self.path)!r})"


class WatchedFile(FromFile):
    """A `FromFile` that also pushes each new key written to the file. See `from_file`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.watch = True
        self._watcher = FileWatcher(self.path, self.name)

    def subscribe(self, callback: Callable[[RecoveredKey], None]) -> Callable[[], None]:
        """Call *callback* with each new key written to the file; return how to stop."""
        return self._watcher.subscribe(callback)

    def __repr__(self) -> str:
        return f"from_file({str(self.path)!r}, watch=True)"


def from_file(path: str | os.PathLike[str], *, watch: bool = False) -> FromFile:
    """A hook that re-reads a secret file (Kubernetes or Docker secrets, a Vault agent's sink).

    Mounted secrets are updated in place when the key rotates; the file is read afresh
    each time, and its trailing newline removed.

    With ``watch=True``, a new key written to the file is also pushed to the
    `Credentials` using this hook (as `Credentials.set_key` would) within about a
    second, so a rotation written before the old key is revoked causes no 401. This
    works inside `chain`, `persist` and `shared` too. Atomic renames, in-place edits,
    Kubernetes Secret volumes (``..data`` symlink swaps) and a file deleted and created
    again are all followed. The watching thread is a daemon, and stops once no
    `Credentials` uses the hook.
    """
    return WatchedFile(path) if watch else FromFile(path)


class FromRunPodConfig:
    """Re-read ``~/.runpod/config.toml``. See `from_runpod_config`."""

    def __init__(
        self, profile: str = "default", path: str | os.PathLike[str] | None = None
    ) -> None:
        self.profile = profile
        self._path = Path(path) if path is not None else None
        self.name = f"config:{profile}"

    @property
    def path(self) -> Path:
        """The config file (resolved at call time, so a changed ``HOME`` is honoured)."""
        return self._path or config_path()

    def __call__(self, context: RecoveryContext | None = None) -> RecoveredKey | None:
        """Return the profile's ``api_key`` (else runpodctl's ``apiKey``), or ``None``.

        Raises:
            SourceError: the file is not TOML, or holds a key that cannot be sent.

        """
        try:
            sdk_entry, ctl_entry = keys_in_config(self.profile, self.path)
        except ConfigError as exc:
            raise SourceError(str(exc)) from None
        for entry in (sdk_entry, ctl_entry):
            if entry is not None and entry.key.strip():
                where = f"{self.path} {entry.entry}"
                return RecoveredKey(_clean_or_raise(entry.key, where), f"config:{entry.entry}")
        return None

    def __repr__(self) -> str:
        return f"from_runpod_config(profile={self.profile!r})"


def from_runpod_config(
    profile: str = "default", path: str | os.PathLike[str] | None = None
) -> FromRunPodConfig:
    """A hook that re-reads RunPod's config file, as ``runpod config`` or ``login`` wrote it.

    Reads the SDK's ``[profile].api_key``, then runpodctl's top-level ``apiKey``.
    """
    return FromRunPodConfig(profile, path)


def _resolve(hook: Callable[..., Any], *args: Any) -> Any:
    result = hook(*args)
    if inspect.isawaitable(result):
        # Hooks run in a worker thread with no event loop of its own.
        result = asyncio.run(awaited(result))
    return result


def any_async(hooks: Iterable[object]) -> bool:
    """Whether one of *hooks* is async: a wrapper around them is async then."""
    return any(is_async_callable(hook) for hook in hooks)


async def _resolve_async(hook: Callable[..., Any], *args: Any) -> Any:
    """Call *hook* from a coroutine, on the caller's event loop.

    An async hook is awaited here; a sync one runs in a worker thread, so that it may
    block (a prompt, a command).

    Raises:
        RecoveryError: the person cancelled a prompt (its cause the KeyboardInterrupt).

    """
    if is_async_callable(hook):
        result = hook(*args)
    else:
        import anyio.to_thread  # noqa: PLC0415 -- asyncio or trio: already loaded by the caller

        result, interrupt = await anyio.to_thread.run_sync(_interruptible, partial(hook, *args))
        if interrupt is not None:
            # A KeyboardInterrupt leaving a task would stop the application's event loop.
            raise RecoveryError(CANCELLED) from interrupt
    if inspect.isawaitable(result):
        result = await result
    return result


def _interruptible(call: Callable[[], Any]) -> tuple[Any, KeyboardInterrupt | None]:
    # Runs in the worker thread: the interrupt travels back as a value, not as an exception.
    try:
        return call(), None
    except KeyboardInterrupt as exc:
        return None, exc


def _cancelled(exc: BaseException) -> bool:
    """Whether *exc* says the person cancelled a prompt (as `_resolve_async` reports it)."""
    return isinstance(exc, RecoveryError) and isinstance(exc.__cause__, KeyboardInterrupt)


def _as_key(result: object, name: str) -> RecoveredKey | None:
    if result is None or isinstance(result, RecoveredKey):
        return result
    if isinstance(result, str):
        return RecoveredKey(result, name)
    raise RecoveryError(f"recovery hook {name!r} returned a {type(result).__name__}, not a key")


class _Tally:
    """What a chain's hooks did, in order: the notes for its error, and its answer."""

    def __init__(self, context: RecoveryContext) -> None:
        self.context = context
        self.notes: list[str] = []
        self.last_error: BaseException | None = None
        self.unasked: NonInteractiveError | None = None  # a prompt with nobody to ask
        self.unchanged: RecoveredKey | None = None

    def failed(self, name: str, exc: BaseException) -> None:
        # A hook's message may quote what it read: never repeat a key.
        self.notes.append(f"{name}: {redact_text(str(exc))}")
        if isinstance(exc, NonInteractiveError):
            # Nobody to ask is nothing new, as a bare prompt's is: not a failure.
            self.unasked = exc
        else:
            self.last_error = exc

    def is_new(self, name: str, found: RecoveredKey | None) -> bool:
        """Whether *found* is the chain's answer: a key other than the rejected one."""
        if found is None:
            self.notes.append(f"{name}: no key")
            return False
        if _is_rejected(found.key, self.context):
            self.notes.append(f"{name}: only the rejected key ({self.context.fingerprint})")
            self.unchanged = self.unchanged or found
            return False
        return True

    def end(self) -> RecoveredKey | None:
        """The chain's outcome once no hook had a new key.

        Hooks that had nothing newer (the rejected key, no key, nobody to ask) make
        "nothing new", as a bare source would say it: the rejected key, from the first
        hook that held it, or None; or, where a prompt had nobody to ask, its
        `NonInteractiveError` listing what each hook did. A hook that failed makes the
        chain fail.
        """
        summary = "; ".join(self.notes)
        if self.last_error is not None:
            raise RecoveryError(f"no source had a new key ({summary})") from scrubbed_exception(
                self.last_error
            )
        if self.unasked is not None:
            # Nothing new, as a bare prompt with nobody to ask says it: with what each
            # hook did, and what to set instead, for the error the request ends with.
            raise NonInteractiveError(
                f"no source had a new key ({summary})", reason=self.unasked.reason
            )
        # Sources that still hold the rejected key: "not updated yet", for the engine.
        return self.unchanged


class Chain:
    """Try hooks in order. See `chain`."""

    def __init__(self, hooks: Sequence[RecoveryHook]) -> None:
        if not hooks:
            raise ValueError("chain() needs at least one hook")
        self.hooks = tuple(hooks)
        self._names = tuple(hook_name(h) for h in self.hooks)
        self.name = "chain(" + ", ".join(self._names) + ")"
        # Hooks that declare how long they may take (a prompt, a command) add up.
        declared = [getattr(h, "timeout", None) for h in self.hooks]
        self.timeout: float | None = sum(t for t in declared if isinstance(t, (int, float)))
        self.timeout = self.timeout or None

    def __call__(self, context: RecoveryContext) -> RecoveredKey | None:
        """Return the first key that differs from the rejected one.

        Raises:
            RecoveryError: no hook produced a new key and at least one failed; the
                message lists what each hook did, the last failure is the cause.

        """
        tally = _Tally(context)
        for hook, name in zip(self.hooks, self._names, strict=False):
            try:
                found = _as_key(_resolve(hook, context), name)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # one broken source must not hide the next
                tally.failed(name, exc)
                continue
            if tally.is_new(name, found):
                return found
        return tally.end()

    @property
    def interactive(self) -> bool:
        """Whether one of the hooks asks a person (then the chain is never polled)."""
        return any(getattr(hook, "interactive", False) for hook in self.hooks)

    def accepted(self, found: RecoveredKey) -> None:
        """Pass RunPod's acceptance of *found* on to the hooks that want to know."""
        for hook in self.hooks:
            accepted = getattr(hook, "accepted", None)
            if callable(accepted):
                accepted(found)

    def subscribe(self, callback: Callable[[RecoveredKey], None]) -> Callable[[], None]:
        """Subscribe to every hook in the chain that announces new keys (a watched file)."""
        return subscribe_all(self.hooks, callback)

    def __repr__(self) -> str:
        return self.name


class AsyncChain(Chain):
    """A `Chain` with an async hook in it: run on the caller's event loop. See `chain`."""

    # The same hook, awaited: `chain` returns this class only where a hook is async.
    async def __call__(self, context: RecoveryContext) -> RecoveredKey | None:  # type: ignore[override]
        """Return the first key that differs from the rejected one, as `Chain` does.

        Async hooks are awaited on this loop; sync ones run in a worker thread.
        """
        tally = _Tally(context)
        for hook, name in zip(self.hooks, self._names, strict=False):
            try:
                found = _as_key(await _resolve_async(hook, context), name)
            except Exception as exc:  # not BaseException: a cancelled task stays cancelled
                if _cancelled(exc):
                    raise  # the person said stop, as Ctrl-C stops a sync chain
                tally.failed(name, exc)
                continue
            if tally.is_new(name, found):
                return found
        return tally.end()


def subscribe_all(
    hooks: Sequence[object], callback: Callable[[RecoveredKey], None]
) -> Callable[[], None]:
    """Subscribe *callback* to each of *hooks* that announces new keys; return one unsubscribe."""
    unsubscribes: list[Callable[[], object]] = []
    for hook in hooks:
        subscribe = getattr(hook, "subscribe", None)
        if callable(subscribe):
            unsubscribe = subscribe(callback)
            if callable(unsubscribe):
                unsubscribes.append(unsubscribe)

    def unsubscribe_all() -> None:
        for unsubscribe in unsubscribes:
            unsubscribe()

    return unsubscribe_all


def _is_rejected(key: str, context: RecoveryContext) -> bool:
    """Whether *key* is the one RunPod rejected (by its id; by fingerprint in old contexts)."""
    if context.key_id:
        return key_id(key.strip()) == context.key_id
    return fingerprint(key.strip()) == context.fingerprint


def chain(*hooks: RecoveryHook) -> Chain:
    """A hook that tries *hooks* in order; the first key different from the rejected one wins.

    A hook that fails or finds nothing is noted and the next one tried. "Different"
    compares the context's `key_id`, as hooks are never shown the rejected key itself.
    When no hook fails and none has a newer key (each found the rejected key, nothing,
    or, for a prompt, nobody to ask), the chain answers as a bare source with nothing
    newer would: the rejected key (or None), and the engine decides what that means.

    With an async hook among *hooks*, the chain is async too (an `AsyncChain`): used
    by an async client, its async hooks run on that client's event loop (and may use
    what lives there, such as an aiohttp session), its sync hooks in a worker thread.
    """
    return AsyncChain(hooks) if any_async(hooks) else Chain(hooks)


class _Callback:
    def __init__(self, fn: Callable[..., Any], name: str | None) -> None:
        self._fn = fn
        self._takes_context = _accepts_argument(fn)
        self.name = name or getattr(fn, "__qualname__", None) or repr(fn)

    def __call__(self, context: RecoveryContext) -> HookResult:
        result = _resolve(self._fn, context) if self._takes_context else _resolve(self._fn)
        return _as_key(result, self.name)

    def __repr__(self) -> str:
        return f"callback({self.name!r})"


class _AsyncCallback(_Callback):
    """A callback around an async function: awaited on the caller's event loop."""

    # The same hook, awaited: `callback` returns this class only for an async function.
    async def __call__(self, context: RecoveryContext) -> HookResult:  # type: ignore[override]
        call = self._fn(context) if self._takes_context else self._fn()
        return _as_key(await call, self.name)


def _accepts_argument(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: assume the protocol
        return True
    return any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters
    )


def callback(fn: Callable[..., Any], *, name: str | None = None) -> RecoveryHook:
    """Turn any function into a named hook: ``fn()`` or ``fn(context)``, sync or async.

    Handy for a secret manager's client::

        recovery.callback(lambda: vault.read("secret/runpod")["key"], name="vault")

    An async *fn* gives an async hook: used by an async client, it runs on that
    client's event loop, so it may use the application's aiohttp session.
    """
    return _AsyncCallback(fn, name) if is_async_callable(fn) else _Callback(fn, name)
