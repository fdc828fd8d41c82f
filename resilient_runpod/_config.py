"""RunPod's shared config file, ``~/.runpod/config.toml``, as the SDK and runpodctl use it.

The SDK reads ``[default].api_key`` (a table per profile); runpodctl writes a
top-level ``apiKey``. Neither reads the other's entry, so we read both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import ConfigError, ConfigProblem
from ._files import CONFIG_LIMIT, FileProblem, FileRefusedError, read_small_file
from ._keys import fingerprint

if TYPE_CHECKING:
    import tomlkit

__all__ = [
    "ConfigKey",
    "ConfigProblem",
    "config_path",
    "keys_in_config",
    "load_config",
    "parse_config",
]


_REFUSED = {
    FileProblem.NOT_REGULAR: ConfigProblem.NOT_REGULAR,
    FileProblem.TOO_LARGE: ConfigProblem.TOO_LARGE,
}

_REFUSAL_FIXES = {
    FileProblem.NOT_REGULAR: (
        "Replace it with a regular file (`resilient-runpod login` writes one), or remove it."
    ),
    FileProblem.TOO_LARGE: (
        "RunPod's config file is a few lines: move this one away and run "
        "`resilient-runpod login` to write a new one."
    ),
}


def config_path() -> Path:
    """Where RunPod's tools keep their config: ``~/.runpod/config.toml``."""
    return Path.home() / ".runpod" / "config.toml"


@dataclass(frozen=True, slots=True)
class ConfigKey:
    """A key found in the config file, and which entry held it (``[default].api_key``)."""

    key: str
    entry: str

    def __repr__(self) -> str:
        return f"ConfigKey({fingerprint(self.key)}, entry={self.entry!r})"


def load_config(path: Path | None = None) -> dict[str, Any] | None:
    """Parse the config file into plain values; ``None`` if it does not exist.

    Raises:
        ConfigError: The file exists but cannot be read or is not TOML. The message
            names the file and the line, never the file's content.
    """
    document = parse_config(path)
    return None if document is None else document.unwrap()


def parse_config(path: Path | None = None) -> tomlkit.TOMLDocument | None:
    """Parse the config file keeping its layout and comments, to edit it; ``None`` if absent.

    Raises:
        ConfigError: as `load_config`.
    """
    import tomlkit  # noqa: PLC0415 -- only where a config file is read: it costs 8 ms
    import tomlkit.exceptions  # noqa: PLC0415

    path = path or config_path()
    try:
        text = read_small_file(path, CONFIG_LIMIT)
    except FileNotFoundError:
        return None
    except FileRefusedError as exc:
        raise ConfigError(
            f"refusing to read {path}: {exc.reason}. {_REFUSAL_FIXES[exc.problem]}",
            path=str(path),
            problem=_REFUSED[exc.problem],
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded). Save it as "
            "UTF-8, or move it away and run `resilient-runpod login` to write a new one.",
            path=str(path),
            problem=ConfigProblem.NOT_UTF8,
        ) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {type(exc).__name__}: {exc.strerror or exc}. "
            "Fix its permissions (chmod 600) or remove it.",
            path=str(path),
            problem=ConfigProblem.UNREADABLE,
        ) from None
    try:
        return tomlkit.parse(text)
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(
            f"{path} is not valid TOML (line {exc.line}, column {exc.col}). "
            "Fix it, or move it away and run `resilient-runpod login` to write a new one.",
            path=str(path),
            problem=ConfigProblem.NOT_TOML,
        ) from None


def keys_in_config(
    profile: str = "default", path: Path | None = None
) -> tuple[ConfigKey | None, ConfigKey | None]:
    """The SDK's ``[profile].api_key`` and runpodctl's top-level ``apiKey``, if present.

    Raises:
        ConfigError: The file is not TOML, or an entry is not a string.
    """
    path = path or config_path()
    data = load_config(path)
    if data is None:
        return None, None
    sdk_entry, ctl_entry = None, None
    table = data.get(profile)
    if isinstance(table, dict) and "api_key" in table:
        sdk_entry = ConfigKey(
            _as_str(table["api_key"], f"[{profile}].api_key", path), f"[{profile}].api_key"
        )
    if "apiKey" in data:
        ctl_entry = ConfigKey(_as_str(data["apiKey"], "apiKey", path), "apiKey")
    return sdk_entry, ctl_entry


def _as_str(value: Any, entry: str, path: Path) -> str:
    if not isinstance(value, str):
        raise ConfigError(
            f"{path}: {entry} must be a string, not {type(value).__name__}",
            path=str(path),
            problem=ConfigProblem.WRONG_TYPE,
        )
    return value
