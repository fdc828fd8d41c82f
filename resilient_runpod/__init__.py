"""Keep programs talking to RunPod when their API key is rejected."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import recovery
    from ._credentials import Credentials
    from ._errors import (
        AuthenticationError,
        BodyNotReplayableError,
        ConfigError,
        CooldownError,
        HookTimeoutError,
        InvalidKeyError,
        NonInteractiveError,
        PermissionDeniedError,
        RecoveryError,
        ResilientRunPodError,
        SourceError,
    )
    from ._keys import fingerprint
    from ._logging import scrub_secrets
    from ._validate import KeyStatus, Validation
    from .adapters._httpx import AsyncResilientTransport, ResilientTransport, RunPodAuth
    from .sdk import wrap
    from .sdk._retry_init import retry_init
    from .typing import RecoveredKey, RecoveryContext, RecoveryHook

    __version__: str

__all__ = [
    "AsyncResilientTransport",
    "AuthenticationError",
    "BodyNotReplayableError",
    "ConfigError",
    "CooldownError",
    "Credentials",
    "HookTimeoutError",
    "InvalidKeyError",
    "KeyStatus",
    "NonInteractiveError",
    "PermissionDeniedError",
    "RecoveredKey",
    "RecoveryContext",
    "RecoveryError",
    "RecoveryHook",
    "ResilientRunPodError",
    "ResilientTransport",
    "RunPodAuth",
    "SourceError",
    "Validation",
    "__version__",
    "fingerprint",
    "recovery",
    "retry_init",
    "scrub_secrets",
    "wrap",
]

# Where each public name is defined. They are imported on first use (PEP 562): the pytest
# plugin loads this package in every test run of every project that installs it, and
# must not bring httpx, structlog, tenacity and tomlkit along.
_HOMES = {
    "AsyncResilientTransport": ".adapters._httpx",
    "AuthenticationError": "._errors",
    "BodyNotReplayableError": "._errors",
    "ConfigError": "._errors",
    "CooldownError": "._errors",
    "Credentials": "._credentials",
    "HookTimeoutError": "._errors",
    "InvalidKeyError": "._errors",
    "KeyStatus": "._validate",
    "NonInteractiveError": "._errors",
    "PermissionDeniedError": "._errors",
    "RecoveredKey": ".typing",
    "RecoveryContext": ".typing",
    "RecoveryError": "._errors",
    "RecoveryHook": ".typing",
    "ResilientRunPodError": "._errors",
    "ResilientTransport": ".adapters._httpx",
    "RunPodAuth": ".adapters._httpx",
    "SourceError": "._errors",
    "Validation": "._validate",
    "fingerprint": "._keys",
    "recovery": ".recovery",
    "retry_init": ".sdk._retry_init",
    "scrub_secrets": "._logging",
    "wrap": ".sdk",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module the first time it is used."""
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415 -- on first use, as the rest

        value: Any = version("resilient-runpod")
    elif name in _HOMES:
        module = importlib.import_module(_HOMES[name], __name__)
        value = module if name == "recovery" else getattr(module, name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's names, the ones not imported yet included."""
    return sorted({*globals(), *__all__})
