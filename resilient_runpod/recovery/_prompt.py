"""Ask a person for a new key: at a terminal, in a notebook, or fail fast when nobody is there.

Where to ask is decided *before* asking, because neither prompt_toolkit nor ``getpass``
notices a silent stdin: they wait on it forever.

- **Nobody there**: ``RESILIENT_RUNPOD_NO_PROMPT`` or a CI variable is set, or stdin or
  stderr is not a terminal (and this is not a notebook). `NonInteractiveError`, at once.
- **Notebook** (a Jupyter-protocol kernel: Jupyter, JupyterLab, VS Code, Colab): the
  kernel's ``getpass``, which shows a password box. The kernel provides it only while a
  cell runs, so a background thread whose cell has ended cannot ask; nor can a front end
  that allows no input (nbclient, papermill).
- **Terminal**: prompt_toolkit with hidden input, drawn on stderr so that a redirected
  stdout does not swallow it. Works from sync code, from a worker thread and from inside a
  running event loop.

One prompt at a time per process: prompts from different `Credentials` wait their turn
(within their timeout); prompts for the same `Credentials` are already one per rejected key.
The timeout bounds the whole exchange (the wait for that turn, every answer and its check
with RunPod), so the engine, which waits the prompt's timeout and a little more, does not
abandon a terminal prompt that is still on the screen. A notebook's password box cannot be
timed out: once the deadline has passed no new question is asked, but an answer typed into
a box left open after the engine gave up is not used.
"""

from __future__ import annotations

import asyncio
import contextvars
import getpass
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .._errors import (
    KEYS_PAGE,
    HookTimeoutError,
    InvalidKeyError,
    NonInteractiveError,
    RecoveryError,
)
from .._keys import S3_KEY_PREFIX, KeyProblem, clean, fingerprint, key_problems, unquote
from .._validate import KeyStatus, Validation, validate
from ..typing import RecoveredKey, RecoveryContext

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

__all__ = [
    "CI_VARIABLES",
    "KEYS_PAGE",
    "NO_PROMPT_VARIABLE",
    "Prompt",
    "is_tty",
    "prompt",
    "where_to_ask",
]

NO_PROMPT_VARIABLE = "RESILIENT_RUNPOD_NO_PROMPT"
"""Set this variable (to anything but ``0``/``false``/``no``) to never prompt."""

CI_VARIABLES = ("CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "JENKINS_URL", "TF_BUILD")
"""Variables CI services set: where one is set, nobody is there to answer."""

_FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})
_WHAT_TO_SET = (
    "Set RUNPOD_API_KEY, save a key with `resilient-runpod login` (it writes "
    "~/.runpod/config.toml), or recover from a secret with recovery.from_file(...) "
    "or recovery.from_command([...])."
)
_CANCELLED = object()
# Only one person-facing prompt at a time in this process, whoever asks.
_one_at_a_time = threading.Lock()

Where = Literal["terminal", "notebook"]
_T = TypeVar("_T")


def _is_set(name: str) -> bool:
    value = os.environ.get(name)
    return value is not None and value.strip().lower() not in _FALSE_WORDS


def is_tty(stream: Any) -> bool:
    """Whether *stream* is an open terminal; odd, closed or detached streams are not."""
    try:
        return stream is not None and not stream.closed and bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # detached, closed or odd stream objects
        return False


def _kernel_shell() -> Any:
    """The running Jupyter-protocol shell, or None. Never imports IPython itself."""
    if "ipykernel" not in sys.modules:
        return None
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    # Colab's shell subclasses ZMQInteractiveShell: match by name anywhere in the MRO.
    if shell is None or not any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__):
        return None
    return shell


def _nobody(reason: str) -> NonInteractiveError:
    """Nobody can answer, for *reason*: the error, its message saying what to set instead."""
    return NonInteractiveError(f"{reason}. {_WHAT_TO_SET}", reason=reason)


def where_to_ask() -> Where:
    """Where a prompt would be shown now: ``"terminal"`` or ``"notebook"``.

    Raises:
        NonInteractiveError: nobody can answer here; the message says why and what to
            set instead.

    """
    if _is_set(NO_PROMPT_VARIABLE):
        raise _nobody(f"prompting is turned off by ${NO_PROMPT_VARIABLE}")
    ci = next((name for name in CI_VARIABLES if _is_set(name)), None)
    if ci is not None:
        raise _nobody(f"nobody can answer a prompt in CI (${ci} is set)")
    shell = _kernel_shell()
    if shell is not None:
        # ipykernel installs its getpass only while a cell runs; afterwards the module's
        # own getpass would read the kernel's closed stdin (or the launching terminal).
        if getattr(getpass.getpass, "__self__", None) is not getattr(shell, "kernel", object()):
            raise _nobody(
                "the notebook cell that needed the key has finished, so nobody can be asked "
                "from this background thread"
            )
        return "notebook"
    if sys.stdin is None:
        raise _nobody("there is no stdin to read an answer from")
    if not is_tty(sys.stdin):
        raise _nobody("stdin is not a terminal")
    if not is_tty(sys.stderr):
        raise _nobody("stderr is not a terminal to show a prompt on")
    return "terminal"


def _run(make: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    # A loop runs in this thread (a sync call from async code): give the prompt its own
    # thread and loop, carrying our context (prompt_toolkit keeps its app session there).
    outcome: list[Any] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            outcome.append((True, context.run(asyncio.run, make())))
        except BaseException as exc:  # re-raised in the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=target, name="resilient-runpod-prompt", daemon=True)
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


class Prompt:
    """A recovery hook that asks a person for a new key. See `prompt`."""

    name = "prompt"

    def __init__(
        self,
        *,
        timeout: float | None = 300.0,
        validate: bool = False,
        api_url: str | None = None,
        attempts: int = 3,
        input: Input | None = None,  # noqa: A002 -- prompt_toolkit's own parameter name
        output: Output | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be a positive number of seconds, or None")
        self.timeout = timeout
        # A person: asked once per recovery, never polled, not while the key still works.
        self.interactive = True
        self.validate = validate
        self.api_url = api_url
        self.attempts = attempts
        self._input = input
        self._output = output

    def __repr__(self) -> str:
        return f"prompt(timeout={self.timeout!r}, validate={self.validate!r})"

    def __call__(self, context: RecoveryContext | None = None) -> RecoveredKey | None:
        """Ask for a key until one is usable, or *attempts* answers were not.

        Returns None at once, without asking, when the context says a person may not be
        asked now (`RecoveryContext.may_ask`: recovery is waiting for a secret store, or
        re-reading sources while its breaker is open).

        Raises:
            NonInteractiveError: nobody can answer here (raised at once, without waiting).
            HookTimeoutError: no usable key was given within *timeout* seconds, counted
                from this call: waiting for another prompt and every answer included.
            RecoveryError: *attempts* answers in a row were not usable keys.
            KeyboardInterrupt: the person pressed Ctrl-C or Ctrl-D. Run as a recovery hook,
                this stops a `chain` and the request fails with `AuthenticationError`
                ("the person cancelled the prompt"); the program's main thread is not
                interrupted.

        """
        if context is not None and not context.may_ask:
            return None
        # One deadline for the whole call: the engine grants `timeout` (and a little more)
        # for all of it, so no answer may be waited for past it.
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        where: Where = "terminal" if self._input is not None else where_to_ask()
        if not _one_at_a_time.acquire(timeout=_left(deadline, -1)):
            raise HookTimeoutError(
                f"another prompt for a RunPod API key was open for {self.timeout} seconds"
            )
        try:
            return self._dialogue(where, context, deadline)
        finally:
            _one_at_a_time.release()

    # -- the conversation --------------------------------------------------------------

    def _dialogue(
        self, where: Where, context: RecoveryContext | None, deadline: float | None
    ) -> RecoveredKey:
        rejected = context.fingerprint if context is not None else None
        note = _header(context)
        last_refused: str | None = None
        reason = ""
        for _ in range(self.attempts):
            answer = self._ask(where, f"{note}RunPod API key: ", deadline)
            key, reason = self._judge(answer, rejected, last_refused, deadline)
            if key is not None:
                return RecoveredKey(key, f"prompt:{where}")
            last_refused = answer.strip()
            note = f"{reason}\n"
        raise RecoveryError(
            f"no usable key after {self.attempts} answers at the prompt (last: {reason})"
        )

    def _judge(
        self, answer: str, rejected: str | None, last_refused: str | None, deadline: float | None
    ) -> tuple[str | None, str]:
        """Return (key, "") for a usable answer, else (None, why not)."""
        try:
            key = clean(answer)
        except InvalidKeyError:
            unwrapped = unquote(answer)
            return None, _refusal(key_problems(unwrapped), unwrapped)
        problems = key_problems(key)
        # A wrong length for an rpa_ key is most often a truncated paste, so ask once
        # more; the same answer twice is taken, in case RunPod changed its key format.
        if problems and key != last_refused:
            return None, _refusal(problems, key) + " Paste it again to use it anyway."
        if rejected is not None and fingerprint(key) == rejected:
            return None, f"That is the key RunPod just rejected ({rejected}). Paste a new one."
        if self.validate:
            # Within what the engine waits (the deadline and a little more): a check that
            # takes longer finds RunPod unreachable, and the key typed is taken.
            limit = min(_CHECK_LIMIT, _left(deadline, _CHECK_LIMIT) + _CHECK_GRACE)
            why_not = self._check_with_runpod(validate(key, self.api_url, timeout=limit))
            if why_not:
                return None, why_not
        return key, ""

    def _check_with_runpod(self, validation: Validation) -> str:
        """Why a validated key should not be taken ("" to take it)."""
        if validation.status is KeyStatus.REJECTED:
            return f"RunPod rejected that key too ({validation.fingerprint}). Paste a new one."
        # Forbidden keys are valid (403 is not a recovery matter); an unreachable API
        # cannot say, and the retried request will tell.
        return ""

    def _ask(self, where: Where, message: str, deadline: float | None) -> str:
        left = _left(deadline, None)
        if left is not None and left <= 0:
            raise self._too_late()
        if where == "notebook":
            answer = _ask_notebook(message)  # the kernel's getpass cannot be timed out
        else:
            answer = self._ask_terminal(message, left)
        if answer is _CANCELLED:
            raise KeyboardInterrupt("the prompt for a RunPod API key was cancelled")
        return str(answer)

    def _ask_terminal(self, message: str, left: float | None) -> object:
        # Imported here: prompt_toolkit is heavy and only a person at a terminal needs it.
        from prompt_toolkit import PromptSession  # noqa: PLC0415
        from prompt_toolkit.application.current import get_app_session  # noqa: PLC0415
        from prompt_toolkit.output import create_output  # noqa: PLC0415

        output = self._output
        if output is None and self._input is None:
            output = create_output(stdout=sys.stderr)
        # The explanation is written once, as plain text the terminal wraps itself; only
        # the last line is prompt_toolkit's, which redraws it as the person types.
        *lines, message = message.split("\n")
        if lines:
            screen = output if output is not None else get_app_session().output
            screen.write_raw("\n".join(lines) + "\n")
            screen.flush()
        session: PromptSession[str] = PromptSession(input=self._input, output=output)

        async def answer() -> object:
            # Caught inside the task that reads: a KeyboardInterrupt leaving a task is
            # re-raised by the event loop itself, past any handler around the loop.
            try:
                return await session.prompt_async(message, is_password=True)
            except (KeyboardInterrupt, EOFError):
                return _CANCELLED

        async def ask() -> object:
            return await asyncio.wait_for(answer(), left)

        try:
            return _run(ask)
        except (asyncio.TimeoutError, TimeoutError):
            raise self._too_late() from None

    def _too_late(self) -> HookTimeoutError:
        return HookTimeoutError(
            f"no usable key was typed at the prompt for a RunPod API key within {self.timeout} "
            "seconds"
        )


# The check of a typed key with RunPod: at most this long, and at most this much past the
# prompt's deadline (the engine waits `_hooks._HOOK_GRACE`, 5 s, past it).
_CHECK_LIMIT = 10.0
_CHECK_GRACE = 3.0


def _left(deadline: float | None, forever: _T) -> float | _T:
    """Seconds until *deadline* (none left: 0), or *forever* when there is no deadline."""
    return forever if deadline is None else max(0.0, deadline - time.monotonic())


def _ask_notebook(message: str) -> object:
    try:
        # Looked up now, not imported: the kernel swaps it in for the running cell only.
        return getpass.getpass(message)
    except NotImplementedError:  # IPython's StdinNotImplementedError
        raise _nobody(
            "this notebook front end does not accept input (nbclient and papermill run without it)"
        ) from None
    except EOFError:
        return _CANCELLED


def _header(context: RecoveryContext | None) -> str:
    if context is None:
        return f"Paste a RunPod API key (create one at {KEYS_PAGE}); the input is hidden.\n"
    return (
        f"RunPod rejected API key {context.fingerprint} "
        f"(HTTP {context.status_code} on {context.method} {context.url}).\n"
        f"Create a new key at {KEYS_PAGE} and paste it below; the input is hidden.\n"
    )


def _refusal(problems: list[KeyProblem], key: str) -> str:
    if problems and problems[0] is KeyProblem.S3_KEY:
        return (
            f"That is not an API key: keys starting with {S3_KEY_PREFIX!r} are RunPod S3 "
            "credentials. Paste an API key."
        )
    text = "; ".join(p.message(key) for p in problems) or "that answer is not a key"
    return text[0].upper() + text[1:] + "."


def prompt(
    *,
    timeout: float | None = 300.0,
    validate: bool = False,
    api_url: str | None = None,
    attempts: int = 3,
    input: Input | None = None,  # noqa: A002 -- prompt_toolkit's own parameter name
    output: Output | None = None,
) -> Prompt:
    """A hook that asks the person at the terminal or in the notebook for a new key.

    The prompt says which key was rejected (by fingerprint), by what request, and where to
    create a new one; the input is hidden. The answer is stripped of whitespace and quotes;
    an empty answer, an S3 key (``rps_``) or a key of the wrong shape is refused with the
    reason and asked again. Where nobody can answer, it raises `NonInteractiveError` at
    once, naming what to set instead. Ctrl-C or Ctrl-D cancels: the request fails with
    `AuthenticationError` and the terminal is left as it was.

    Args:
        timeout: Seconds for the whole exchange, all attempts included (and the wait
            for another prompt to close); ``None`` waits for ever. `Credentials` waits
            for the prompt that long (and a little more) whatever its ``hook_timeout``,
            so this is the one setting to change.
        validate: Check each answer against RunPod (``myself { id }``) and ask again if
            RunPod rejects it, while the person is still there. This check goes over a
            connection of its own to *api_url*, not through the caller's transport: the
            one exception, so it is off by default. Without it, the request's own resend
            is the check, and a rejected key is asked about again in the next recovery.
        api_url: RunPod's API base for *validate* (an emulator's ``api_url`` in tests).
        attempts: Answers accepted before giving up with `RecoveryError`.
        input: A prompt_toolkit input to read from instead of the terminal (tests).
        output: A prompt_toolkit output to draw on instead of stderr (tests).

    """
    return Prompt(
        timeout=timeout,
        validate=validate,
        api_url=api_url,
        attempts=attempts,
        input=input,
        output=output,
    )
