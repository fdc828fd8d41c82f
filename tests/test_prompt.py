"""The prompt hook through prompt_toolkit's pipe input: what a person types, and what is refused."""

from __future__ import annotations

import asyncio
import io
import ssl
import sys
import threading
from typing import TYPE_CHECKING

import httpx
import pytest
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.plain_text import PlainTextOutput

from resilient_runpod import (
    AsyncResilientTransport,
    AuthenticationError,
    Credentials,
    HookTimeoutError,
    NonInteractiveError,
    RecoveredKey,
    RecoveryContext,
    RecoveryError,
    ResilientTransport,
    recovery,
)
from resilient_runpod.recovery._prompt import Prompt, _one_at_a_time, where_to_ask

from .helpers import Counting, make_key, wait_for
from .test_transport import async_client_for

if TYPE_CHECKING:
    from collections.abc import Iterator


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# How many threads and tasks ask at once in the prompt storm.
THREADS = 64
TASKS = 50

CONTEXT = RecoveryContext("rpa_…OLD1", 1, 401, "POST", "https://api.runpod.ai/v2/ep/run")


@pytest.fixture
def pipe() -> Iterator[PipeInput]:
    with create_pipe_input() as pipe_input:
        yield pipe_input


@pytest.fixture
def screen() -> io.StringIO:
    return io.StringIO()


def shown(screen: io.StringIO) -> str:
    """What was drawn, without the line breaks and padding the 80-column output adds."""
    return "".join(screen.getvalue().split())


def asking(pipe: PipeInput, screen: io.StringIO, **options: object) -> Prompt:
    return recovery.prompt(input=pipe, output=PlainTextOutput(screen), **options)  # type: ignore[arg-type]


def test_typed_key_is_returned_with_its_source(pipe, screen, key):
    """A typed key comes back as a RecoveredKey whose source says a person typed it."""
    pipe.send_text(key + "\r")
    found = asking(pipe, screen)(CONTEXT)
    assert RecoveredKey(key, "prompt:terminal") == found


def test_prompt_says_which_key_by_what_and_where_to_create_one(pipe, screen, key):
    """The person is told the rejected key's fingerprint, the request, and the keys page."""
    pipe.send_text(key + "\r")
    asking(pipe, screen)(CONTEXT)
    shown = "".join(screen.getvalue().split())  # the output wraps long lines at 80 columns
    assert "rpa_…OLD1" in shown
    assert "POSThttps://api.runpod.ai/v2/ep/run" in shown
    assert "https://www.runpod.io/console/user/settings" in shown


def test_typed_key_is_not_echoed(pipe, screen, key):
    """Input is hidden: the key never reaches the output."""
    pipe.send_text(key + "\r")
    asking(pipe, screen)(CONTEXT)
    assert key not in shown(screen)
    assert key[-4:] not in shown(screen).replace("OLD1", "")


@pytest.mark.parametrize(("keys", "name"), [("\x03", "Ctrl-C"), ("\x04", "Ctrl-D")])
def test_ctrl_c_and_ctrl_d_cancel(pipe, screen, keys, name):
    """Ctrl-C and Ctrl-D end the prompt with KeyboardInterrupt, which stops a chain."""
    pipe.send_text(keys)
    with pytest.raises(KeyboardInterrupt) as caught:
        asking(pipe, screen)(CONTEXT)
    assert "cancelled" == str(caught.value).split()[-1]


def test_ctrl_c_stops_a_chain(pipe, screen):
    """A cancelled prompt in a chain is not treated as 'no key, try the next hook'."""
    pipe.send_text("\x03")
    later: list[object] = []
    hook = recovery.chain(asking(pipe, screen), lambda ctx: later.append(ctx) or "unused")
    with pytest.raises(KeyboardInterrupt):
        hook(CONTEXT)
    assert [] == later


@pytest.mark.anyio
async def test_ctrl_c_in_an_async_chain_fails_the_request_not_the_loop(
    pipe, screen, runpod_emulator
):
    """A chain made async by an async hook: Ctrl-C at its prompt still stops the chain.

    The request fails with AuthenticationError saying so; no KeyboardInterrupt reaches
    the application's event loop (it would stop the loop, and this test with it).
    """
    old = runpod_emulator.api_key
    runpod_emulator.revoke(old)
    pipe.send_text("\x03")
    later: list[object] = []

    async def store(context: RecoveryContext) -> str:
        later.append(context)
        return "unused"

    hook = recovery.chain(asking(pipe, screen), store)
    credentials = Credentials(old, recovery=hook, hosts=[runpod_emulator.host])
    async with async_client_for(runpod_emulator, credentials) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get("/health")

    assert "the person cancelled the prompt" in str(caught.value)
    assert [] == later


def test_empty_answer_is_refused_and_asked_again(pipe, screen, key):
    """An empty answer is refused with a reason; the next answer is taken."""
    pipe.send_text("\r   \r" + key + "\r")
    found = asking(pipe, screen)(CONTEXT)
    assert key == found.key
    assert 2 == shown(screen).count("Thekeyisempty")


@pytest.mark.parametrize("wrap", ["  {}  ", '"{}"', "'{}'", ' "{}" ', "\t{}"])
def test_padded_and_quoted_answers_are_cleaned(pipe, screen, key, wrap):
    """Whitespace and one pair of quotes pasted around the key are removed."""
    pipe.send_text(wrap.format(key) + "\r")
    assert key == asking(pipe, screen)(CONTEXT).key


def test_s3_key_is_refused_with_the_reason(pipe, screen, key):
    """An rps_ key (an S3 credential) is refused, saying so, and the person asked again."""
    pipe.send_text("rps_" + "A" * 40 + "\r" + key + "\r")
    found = asking(pipe, screen)(CONTEXT)
    assert key == found.key
    assert "S3credentials" in shown(screen)


def test_gives_up_after_three_unusable_answers(pipe, screen):
    """Three unusable answers end in RecoveryError, not an endless loop."""
    pipe.send_text("\r" + "rps_" + "B" * 40 + "\r" + "\r")
    with pytest.raises(RecoveryError) as caught:
        asking(pipe, screen)(CONTEXT)
    assert "no usable key after 3 answers" in str(caught.value)


def test_truncated_rpa_key_is_refused_once_then_taken_if_repeated(pipe, screen, key):
    """A wrong-length rpa_ key is questioned; the same answer twice is taken."""
    short = key[:-1]
    pipe.send_text(short + "\r" + short + "\r")
    found = asking(pipe, screen)(CONTEXT)
    assert short == found.key
    assert 1 == shown(screen).count("Pasteitagaintouseitanyway")


def test_the_rejected_key_is_refused(pipe, screen, key):
    """Typing the key RunPod just rejected is refused; a new one is asked for."""
    rejected = make_key()
    context = RecoveryContext(f"rpa_…{rejected[-4:]}", 1, 401, "GET", "https://x/")
    pipe.send_text(rejected + "\r" + key + "\r")
    assert key == asking(pipe, screen)(context).key
    assert "ThatisthekeyRunPodjustrejected" in shown(screen)


def test_validate_asks_again_when_runpod_rejects_the_answer(pipe, screen, runpod_emulator):
    """With validate=True a key RunPod rejects is refused and a working one accepted."""
    dead = runpod_emulator.add_key()
    runpod_emulator.revoke(dead)
    good = runpod_emulator.api_key
    pipe.send_text(dead + "\r" + good + "\r")
    found = asking(pipe, screen, validate=True, api_url=runpod_emulator.api_url)(CONTEXT)
    assert good == found.key
    assert "RunPodrejectedthatkeytoo" in shown(screen)


def test_timeout_without_answer(pipe, screen):
    """Nobody answering within timeout= ends in HookTimeoutError."""
    with pytest.raises(HookTimeoutError) as caught:
        asking(pipe, screen, timeout=0.2)(CONTEXT)
    assert "within 0.2 seconds" in str(caught.value)


def test_waiting_for_another_prompt_counts_against_the_timeout(pipe, screen, key):
    """The wait for another prompt to close comes out of timeout=, not on top of it.

    Another prompt holds the screen for 0.8 s of timeout=1; the key typed at 1.4 s is
    after the deadline: HookTimeoutError, the key not taken.
    """
    _one_at_a_time.acquire()
    threading.Timer(0.8, _one_at_a_time.release).start()
    typing = threading.Timer(1.4, pipe.send_text, [key + "\r"])
    typing.start()
    with pytest.raises(HookTimeoutError) as caught:
        asking(pipe, screen, timeout=1)(CONTEXT)
    typing.join()  # the pipe must still be open when the key is typed
    assert "within 1 seconds" in str(caught.value)


@pytest.mark.anyio
async def test_works_when_called_inside_a_running_event_loop(pipe, screen, key):
    """Called from sync code running on an event loop, the prompt still works."""
    pipe.send_text(key + "\r")
    assert key == asking(pipe, screen)(CONTEXT).key


def test_works_from_a_worker_thread(pipe, screen, key):
    """Called from a thread that is not the main thread, the prompt works."""
    pipe.send_text(key + "\r")
    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(asking(pipe, screen)(CONTEXT).key))
    thread.start()
    thread.join(30)
    assert [key] == results


def test_bad_arguments_are_refused():
    """attempts and timeout must be positive."""
    with pytest.raises(ValueError, match="attempts"):
        recovery.prompt(attempts=0)
    with pytest.raises(ValueError, match="timeout"):
        recovery.prompt(timeout=0)


# -- where to ask ------------------------------------------------------------------------


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_opt_out_variable_names_itself(monkeypatch):
    """RESILIENT_RUNPOD_NO_PROMPT turns prompting off, and the error names it."""
    monkeypatch.setenv("RESILIENT_RUNPOD_NO_PROMPT", "1")
    monkeypatch.setattr(sys, "stdin", FakeTTY())
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    with pytest.raises(NonInteractiveError) as caught:
        where_to_ask()
    assert "$RESILIENT_RUNPOD_NO_PROMPT" in str(caught.value)
    assert "RUNPOD_API_KEY" in str(caught.value)


@pytest.mark.parametrize("variable", ["CI", "GITHUB_ACTIONS", "JENKINS_URL"])
def test_ci_variables_mean_nobody_is_there(monkeypatch, variable):
    """A CI variable means nobody can answer, even with terminals attached."""
    monkeypatch.setenv(variable, "true")
    monkeypatch.setattr(sys, "stdin", FakeTTY())
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    with pytest.raises(NonInteractiveError) as caught:
        where_to_ask()
    assert f"${variable} is set" in str(caught.value)


def test_ci_false_is_not_ci(monkeypatch):
    """CI=false (as some tools set it) does not count as CI."""
    monkeypatch.setenv("CI", "false")
    monkeypatch.setattr(sys, "stdin", FakeTTY())
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    assert "terminal" == where_to_ask()


@pytest.mark.parametrize(
    ("stdin", "stderr", "reason"),
    [
        (None, FakeTTY(), "no stdin"),
        (io.StringIO(), FakeTTY(), "stdin is not a terminal"),
        (FakeTTY(), io.StringIO(), "stderr is not a terminal"),
    ],
)
def test_no_terminal_means_nobody_is_there(monkeypatch, stdin, stderr, reason):
    """Without a terminal on stdin and stderr, the prompt refuses at once."""
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stderr", stderr)
    with pytest.raises(NonInteractiveError) as caught:
        recovery.prompt()(CONTEXT)
    assert reason in str(caught.value)


def test_closed_stdin_means_nobody_is_there(monkeypatch):
    """A closed stdin is not a terminal (no ValueError from isatty)."""
    closed = FakeTTY()
    closed.close()
    monkeypatch.setattr(sys, "stdin", closed)
    monkeypatch.setattr(sys, "stderr", FakeTTY())
    with pytest.raises(NonInteractiveError):
        where_to_ask()


# -- with the engine ---------------------------------------------------------------------


def test_one_prompt_for_many_threads_and_tasks(pipe, screen, emulator_process):
    """THREADS + TASKS requests rejected at once share one prompt; all succeed with the
    typed key. (The full 256 + 200 runs in benchmarks/.)
    """
    # The emulator runs in its own process: hundreds of clients and the server in one interpreter
    # would starve the server of the GIL on a loaded machine.
    emulator = emulator_process
    old = emulator.key
    new = emulator.rotate(old)
    hook = Counting(asking(pipe, screen), name="prompt")
    credentials = Credentials(old, recovery=hook, hosts=[emulator.host], hook_timeout=None)
    url = f"{emulator.url}/v2/prompt-storm/health"
    statuses: list[int | str] = []
    lock = threading.Lock()
    tls = ssl.create_default_context()  # made once: each client would otherwise build its own

    def in_thread() -> None:
        # A client per thread, not one shared by all: httpcore's sync pool can close a
        # connection it has just handed to one thread, because another thread's pass still
        # sees it idle (expired or surplus), under the request (encode/httpcore#1110); the
        # thread then fails with ReadError('[Errno 9] Bad file descriptor'). Plain httpx
        # with 64 threads on one client does it too. The long wait on the prompt, then
        # 256 threads at once on connections idle since their 401, made it likely here.
        transport = ResilientTransport(credentials, httpx.HTTPTransport(verify=tls))
        try:
            with httpx.Client(transport=transport, timeout=120) as client:
                status: int | str = client.get(url).status_code
        except Exception as exc:  # recorded so the assertion shows it
            status = repr(exc)
        with lock:
            statuses.append(status)

    async def in_task() -> int:
        # A client per task: one pool queueing its requests spends its time in bookkeeping.
        transport = AsyncResilientTransport(credentials, httpx.AsyncHTTPTransport(verify=tls))
        async with httpx.AsyncClient(transport=transport, timeout=120) as aclient:
            return (await aclient.get(url)).status_code

    async def in_tasks() -> list[int]:
        return list(await asyncio.gather(*(in_task() for _ in range(TASKS))))

    task_statuses: list[int] = []
    threads = [threading.Thread(target=in_thread) for _ in range(THREADS)]
    threads.append(threading.Thread(target=lambda: task_statuses.extend(asyncio.run(in_tasks()))))
    for thread in threads:
        thread.start()
    try:
        # Answer only once every request has been rejected: all are waiting on the prompt.
        assert wait_for(lambda: emulator.status_counts().get(401, 0) >= THREADS + TASKS)
        rejected_before_answer = emulator.status_counts().get(401, 0)
        pipe.send_text(new + "\r")
    finally:
        for thread in threads:
            thread.join(120)
    # Each request's send was rejected, and some probed once more first (no request probes
    # twice): the prompt was up while they waited, and it was asked once.
    assert THREADS + TASKS <= rejected_before_answer <= 2 * (THREADS + TASKS)
    assert 1 == hook.calls
    assert [200] * (THREADS + TASKS) == statuses + task_statuses
    assert "prompt:terminal" == credentials.source
