"""`Settings`: how `Credentials` recovers, checked once, when it is made.

A setting that could only fail later, or silently (a string for a number, ``nan``, a
negative window), is refused at construction with a `ConfigError` that names the
setting and what it may be. Everything that reads a setting reads it from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import ConfigError
from ._policy import DEFAULT_POLICY, RetryPolicy

if TYPE_CHECKING:
    import tenacity

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """The recovery settings of one `Credentials` (see its docstring for each)."""

    max_recoveries: int = 2
    stop: tenacity.stop.stop_base | None = None
    wait: tenacity.wait.wait_base | None = None
    hook_timeout: float | None = 30.0
    recovery_window: float = 150.0
    failure_threshold: int = 3
    cooldown: float = 60.0
    probe_interval: float = 5.0
    retry: RetryPolicy = DEFAULT_POLICY

    def __post_init__(self) -> None:
        _count("max_recoveries", self.max_recoveries)
        _count("failure_threshold", self.failure_threshold)
        if self.hook_timeout is not None:
            _seconds("hook_timeout", self.hook_timeout, positive=True, none_ok=True)
        for name in ("recovery_window", "cooldown", "probe_interval"):
            _seconds(name, getattr(self, name), positive=False, none_ok=False)
        for name in ("stop", "wait"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise _refused(name, value, "a tenacity strategy (such as stop_after_delay(30))")
        if not isinstance(self.retry, RetryPolicy):
            raise _refused("retry", self.retry, "a RetryPolicy, or None for the defaults")


def _refused(name: str, value: object, allowed: str) -> ConfigError:
    shown = repr(value) if isinstance(value, (int, float, type(None))) else type(value).__name__
    return ConfigError(f"Credentials({name}={shown}): {name} must be {allowed}", path="")


def _count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _refused(name, value, "a whole number, at least 1")


def _seconds(name: str, value: object, *, positive: bool, none_ok: bool) -> None:
    bound = "a positive number of seconds" if positive else "a number of seconds, 0 or more"
    allowed = f"{bound}{', or None for no limit' if none_ok else ''}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refused(name, value, allowed)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise _refused(name, value, allowed)
