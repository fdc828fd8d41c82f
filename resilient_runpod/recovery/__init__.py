"""Recovery hooks: where to find a new key when RunPod rejects the current one.

A hook is any callable taking a `RecoveryContext` and returning a key (or ``None``).
These cover the usual places: the environment, a mounted secret file (watched, if
asked), RunPod's config file, a secret manager's command or AWS Secrets Manager, and a
person (`prompt`). `chain` combines them, `persist` saves what one found for the next
run, `shared` runs one recovery for all the processes on a host, and `default` is what
`Credentials` uses when given no hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_getattr as _lazy_getattr

if TYPE_CHECKING:
    from ..typing import RecoveryHook
    from ._aws import from_aws_secrets_manager
    from ._command import from_command
    from ._persist import persist, save_key
    from ._prompt import NO_PROMPT_VARIABLE, prompt, where_to_ask
    from ._shared import shared
    from ._sources import callback, chain, from_env, from_file, from_runpod_config

__all__ = [
    "NO_PROMPT_VARIABLE",
    "callback",
    "chain",
    "default",
    "from_aws_secrets_manager",
    "from_command",
    "from_env",
    "from_file",
    "from_runpod_config",
    "persist",
    "prompt",
    "save_key",
    "shared",
    "where_to_ask",
]


def default(*, profile: str = "default") -> RecoveryHook:
    """The hook used when none is given: the environment, RunPod's config file, then a person.

    The environment and the config file are where RunPod's tools look for a key, re-read
    at the moment of the 401, so a key fixed there while the program runs is picked up
    without a restart. Last, a person at the terminal or in the notebook is asked; where
    nobody can answer (a worker, CI, ``RESILIENT_RUNPOD_NO_PROMPT``), that step fails at
    once with `NonInteractiveError`, named in the error, instead of waiting.
    """
    from ._prompt import prompt  # noqa: PLC0415 -- see `_HOMES`
    from ._sources import chain, from_env, from_runpod_config  # noqa: PLC0415

    return chain(from_env(), from_runpod_config(profile), prompt())


# Each hook's module is imported when the hook is first used: a program that reads a
# file does not load the AWS, prompt or fleet machinery (see `resilient_runpod._lazy`).
_HOMES = {
    "NO_PROMPT_VARIABLE": "._prompt",
    "callback": "._sources",
    "chain": "._sources",
    "from_aws_secrets_manager": "._aws",
    "from_command": "._command",
    "from_env": "._sources",
    "from_file": "._sources",
    "from_runpod_config": "._sources",
    "persist": "._persist",
    "prompt": "._prompt",
    "save_key": "._persist",
    "shared": "._shared",
    "where_to_ask": "._prompt",
}

__getattr__ = _lazy_getattr(__name__, _HOMES)
