"""Recovery hooks: where to find a new key when RunPod rejects the current one.

A hook is any callable taking a `RecoveryContext` and returning a key (or ``None``).
These cover the usual places; `chain` combines them; `default` is what `Credentials`
uses when given no hook.
"""

from __future__ import annotations

from ..typing import RecoveryHook
from ._sources import (
    callback,
    chain,
    from_env,
    from_file,
    from_runpod_config,
)

__all__ = ["callback", "chain", "default", "from_env", "from_file", "from_runpod_config"]


def default(*, profile: str = "default") -> RecoveryHook:
    """The hook used when none is given: the environment, then RunPod's config file.

    That is where RunPod's tools look for a key, re-read at the moment of the 401, so
    a key fixed there while the program runs is picked up without a restart.
    """
    return chain(from_env(), from_runpod_config(profile))
