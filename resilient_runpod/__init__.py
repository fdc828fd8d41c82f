"""Keep programs talking to RunPod when their API key is rejected."""

from __future__ import annotations

from importlib.metadata import version

from . import recovery
from ._credentials import Breaker, Credentials, KeyState
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
    TransientError,
)
from ._keys import fingerprint
from ._logging import scrub_secrets
from ._policy import RetryPolicy
from ._validate import KeyStatus, Validation
from .adapters._httpx import AsyncResilientTransport, ResilientTransport, RunPodAuth
from .sdk import wrap  # imports runpod only when called
from .sdk._retry_init import retry_init
from .typing import RecoveredKey, RecoveryContext, RecoveryHook

__all__ = [
    "AsyncResilientTransport",
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
    "TransientError",
    "Validation",
    "__version__",
    "fingerprint",
    "recovery",
    "retry_init",
    "scrub_secrets",
    "wrap",
]

__version__ = version("resilient-runpod")
