"""Keep programs talking to RunPod when their API key is rejected."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_getattr as _lazy_getattr

if TYPE_CHECKING:
    from . import instrumentation, recovery
    from ._breaker import Breaker
    from ._credentials import Credentials
    from ._errors import (
        AuthenticationError,
        AuthFailure,
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
        StaleSourceError,
        TransientError,
    )
    from ._keys import fingerprint
    from ._ledger import KeyState
    from ._logging import scrub_secrets
    from ._policy import RetryPolicy
    from ._validate import KeyStatus, Validation
    from ._version import __version__
    from .adapters._httpx import AsyncResilientTransport, ResilientTransport, RunPodAuth
    from .sdk import wrap
    from .sdk._retry_init import retry_init
    from .typing import RecoveredKey, RecoveryContext, RecoveryHook

__all__ = [
    "AsyncResilientTransport",
    "AuthFailure",
    "AuthenticationError",
    "BodyNotReplayableError",
    "Breaker",
    "ConfigError",
    "CooldownError",
    "Credentials",
    "HookTimeoutError",
    "InvalidKeyError",
    "KeyState",
    "KeyStatus",
    "NonInteractiveError",
    "PermissionDeniedError",
    "RecoveredKey",
    "RecoveryContext",
    "RecoveryError",
    "RecoveryHook",
    "ResilientRunPodError",
    "ResilientTransport",
    "RetryPolicy",
    "RunPodAuth",
    "SourceError",
    "StaleSourceError",
    "TransientError",
    "Validation",
    "__version__",
    "fingerprint",
    "instrumentation",
    "recovery",
    "retry_init",
    "scrub_secrets",
    "wrap",
]

# Where each public name is defined: imported on first use (see `_lazy`).
_HOMES = {
    "__version__": "._version",
    "AsyncResilientTransport": ".adapters._httpx",
    "AuthFailure": "._errors",
    "AuthenticationError": "._errors",
    "BodyNotReplayableError": "._errors",
    "Breaker": "._breaker",
    "ConfigError": "._errors",
    "CooldownError": "._errors",
    "Credentials": "._credentials",
    "HookTimeoutError": "._errors",
    "InvalidKeyError": "._errors",
    "KeyState": "._ledger",
    "KeyStatus": "._validate",
    "NonInteractiveError": "._errors",
    "PermissionDeniedError": "._errors",
    "RecoveredKey": ".typing",
    "RecoveryContext": ".typing",
    "RecoveryError": "._errors",
    "RecoveryHook": ".typing",
    "ResilientRunPodError": "._errors",
    "ResilientTransport": ".adapters._httpx",
    "RetryPolicy": "._policy",
    "RunPodAuth": ".adapters._httpx",
    "SourceError": "._errors",
    "StaleSourceError": "._errors",
    "TransientError": "._errors",
    "Validation": "._validate",
    "fingerprint": "._keys",
    "instrumentation": ".instrumentation",
    "recovery": ".recovery",
    "retry_init": ".sdk._retry_init",
    "scrub_secrets": "._logging",
    "wrap": ".sdk",
}

__getattr__ = _lazy_getattr(__name__, _HOMES)
