"""Saving a key so the next run starts with it: into RunPod's config file, or a plain file.

``~/.runpod/config.toml`` is shared with the ``runpod`` SDK and runpodctl, so a save
changes only ``[profile].api_key`` (the entry the SDK reads) and keeps everything else,
comments included. Every save writes a temporary file beside the target and renames it
over the target: a crash leaves the old file or the new one, never half of either. The
file is made readable by its owner only (0600), a directory made for it 0700.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from .._config import config_path, parse_config
from .._errors import ConfigError, InvalidKeyError
from .._files import FileRefusedError, refuse_unless_regular
from .._hooks import hook_name
from .._keys import check, clean, fingerprint
from .._logging import logger
from ..typing import HookResult, RecoveredKey, RecoveryContext, RecoveryHook
from ._sources import _as_key, _resolve, _resolve_async, any_async, subscribe_all

__all__ = ["AsyncPersist", "Persist", "persist", "save_key", "save_to_config", "save_to_file"]

_FILE_MODE = 0o600
_DIR_MODE = 0o700


def save_to_config(
    key: str, *, profile: str = "default", path: str | os.PathLike[str] | None = None
) -> Path:
    """Write *key* as ``[profile].api_key`` in RunPod's config file; return the file.

    The rest of the file is kept as it was. A missing file (and ``~/.runpod``) is created.

    Raises:
        InvalidKeyError: *key* cannot be sent.
        ConfigError: the existing file is not TOML, or *profile* in it is not a table;
            the file is left untouched.
        OSError: the file cannot be written.

    """
    import tomlkit  # noqa: PLC0415 -- only when a key is saved: it costs 6 ms at import
    from tomlkit.items import InlineTable, Table  # noqa: PLC0415

    check(key)
    target = Path(path) if path is not None else config_path()
    try:
        document = parse_config(target) or tomlkit.document()
    except ConfigError as exc:
        raise ConfigError(f"{exc} The key was not saved.", path=exc.path) from None
    table: Any = document.get(profile)
    if table is None:
        table = tomlkit.table()
        table.add("api_key", key)
        document.add(profile, table)
    elif isinstance(table, (Table, InlineTable)):
        table["api_key"] = key
    else:
        raise ConfigError(
            f"{target}: {profile!r} is a {type(table).__name__}, not a [{profile}] table; "
            "the key was not saved",
            path=str(target),
        )
    # The default file lives in ~/.runpod, a directory for secrets: keep it private.
    _write_private(target, tomlkit.dumps(document), tighten_dir=path is None)
    return target


def save_to_file(key: str, path: str | os.PathLike[str]) -> Path:
    """Write *key* and a newline to *path*, the way `recovery.from_file` reads it; return it.

    Raises:
        InvalidKeyError: *key* cannot be sent.
        ConfigError: *path* is not a regular file (a FIFO, a device, a directory).
        OSError: the file cannot be written.

    """
    check(key)
    target = Path(path)
    _write_private(target, key + "\n", tighten_dir=False)
    return target


def save_key(
    key: str, to: str | os.PathLike[str] | None = None, *, profile: str = "default"
) -> Path:
    """Save *key* for the next run: RunPod's config file by default, else the file *to*."""
    if to is None:
        return save_to_config(key, profile=profile)
    return save_to_file(key, to)


def _write_private(target: Path, text: str, *, tighten_dir: bool) -> None:
    # Follow a symlinked file (dotfile managers) so the link survives the rename.
    real = Path(os.path.realpath(target))
    try:
        # A link to /dev/zero or a FIFO is not a file to replace: the rename would put
        # a regular file where a device or a pipe was, in a directory not ours.
        refuse_unless_regular(real)
    except FileRefusedError as exc:
        raise ConfigError(
            f"refusing to save the key to {target}: {exc.reason}. Save it to a regular "
            "file, or remove what is at that path.",
            path=str(target),
        ) from None
    directory = real.parent
    if not directory.exists():
        directory.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        directory.chmod(_DIR_MODE)  # mkdir's mode is filtered by the umask
    elif tighten_dir and stat.S_IMODE(directory.stat().st_mode) & 0o077:
        directory.chmod(_DIR_MODE)
    # mkstemp creates the file 0600 from the start: the key is never readable by others.
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{real.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(temporary).chmod(_FILE_MODE)
        Path(temporary).replace(real)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(temporary).unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class Persist:
    """A hook wrapper that saves the key its hook found. See `persist`."""

    def __init__(
        self,
        hook: RecoveryHook,
        to: str | os.PathLike[str] | None = None,
        *,
        profile: str = "default",
        when: Literal["accepted", "found"] = "accepted",
    ) -> None:
        if when not in ("accepted", "found"):
            raise ValueError(f"when must be 'accepted' or 'found', not {when!r}")
        self.hook = hook
        self.to = Path(to) if to is not None else None
        self.profile = profile
        self.when = when
        self.name = hook_name(hook)
        # A prompt declares how long the person has; pass that on to whoever reads it.
        self.timeout: float | None = getattr(hook, "timeout", None)
        self.interactive: bool = getattr(hook, "interactive", False)
        self._found: str | None = None  # the last key found, until RunPod accepts it

    def __call__(self, context: RecoveryContext) -> HookResult:
        """Run the hook and return its key; with ``when="found"``, save it now."""
        return self._keep(_as_key(_resolve(self.hook, context), self.name))

    def _keep(self, found: RecoveredKey | None) -> HookResult:
        """Save *found* now (``when="found"``) or once RunPod accepts it; return it cleaned."""
        if found is None:
            return None
        try:
            key = clean(found.key)
        except InvalidKeyError:
            return found  # Credentials refuses it with the reason; nothing worth saving
        if self.when == "found":
            self._save(key)
        else:
            self._found = key
        return RecoveredKey(key, found.source)

    def accepted(self, found: RecoveredKey) -> None:
        """RunPod accepted *found*: save it, if this hook is the one that found it."""
        if self.when == "accepted" and self._found is not None and found.key == self._found:
            self._found = None
            self._save(found.key)
        accepted = getattr(self.hook, "accepted", None)
        if callable(accepted):
            accepted(found)

    def subscribe(self, callback: Callable[[RecoveredKey], None]) -> Callable[[], None]:
        """Forward to the wrapped hook, if it can announce new keys (a watched file)."""
        return subscribe_all((self.hook,), callback)

    def _save(self, key: str) -> None:
        # A save that fails is logged and the key kept in use: losing a working key
        # because a disk is read-only would be worse.
        try:
            where = save_key(key, self.to, profile=self.profile)
        except (OSError, ConfigError) as exc:
            logger.warning(
                "runpod.auth.persist_failed",
                hook=self.name,
                fingerprint=fingerprint(key),
                error=f"{type(exc).__name__}: {exc}",
            )
        else:
            logger.info(
                "runpod.auth.persisted",
                hook=self.name,
                fingerprint=fingerprint(key),
                path=str(where),
            )

    def __repr__(self) -> str:
        target = str(self.to) if self.to is not None else f"config:[{self.profile}]"
        return f"persist({self.name}, to={target!r}, when={self.when!r})"


class AsyncPersist(Persist):
    """A `Persist` around an async hook: run on the caller's event loop. See `persist`."""

    # The same hook, awaited: `persist` returns this class only around an async hook.
    async def __call__(self, context: RecoveryContext) -> HookResult:  # type: ignore[override]
        """Await the hook and return its key; with ``when="found"``, save it now."""
        found = _as_key(await _resolve_async(self.hook, context), self.name)
        if self.when == "found":
            import anyio.to_thread  # noqa: PLC0415 -- loaded by the caller's loop already

            # Writing and syncing a file blocks: not on the application's loop.
            return await anyio.to_thread.run_sync(self._keep, found)
        return self._keep(found)


def persist(
    hook: RecoveryHook,
    to: str | os.PathLike[str] | None = None,
    *,
    profile: str = "default",
    when: Literal["accepted", "found"] = "accepted",
) -> Persist:
    """Wrap *hook* so that the key it finds is saved for the next run.

    By default the key goes into ``~/.runpod/config.toml`` as ``[profile].api_key``, the
    entry the ``runpod`` SDK reads, keeping the rest of the file; with *to*, into that
    file alone (what `from_file` reads). Saved atomically, mode 0600::

        Credentials(recovery=recovery.chain(
            recovery.from_env(),
            recovery.persist(recovery.prompt(validate=True)),
        ))

    By default (``when="accepted"``) the key is saved once RunPod has accepted it: the
    first request sent with it that is not rejected. A key RunPod rejects is never saved,
    so it cannot spoil the next run. ``when="found"`` saves as soon as the hook returns
    it, for scripts that call the hook themselves.

    Around an async hook, the wrapper is async too (an `AsyncPersist`): used by an
    async client, the hook runs on that client's event loop.
    """
    kind = AsyncPersist if any_async((hook,)) else Persist
    return kind(hook, to, profile=profile, when=when)
