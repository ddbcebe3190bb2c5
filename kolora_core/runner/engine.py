"""What an engine is: one resolved container in (`StepRun`), an exit code and log lines out.

Why an interface: the executor owns Argo semantics (order, parameters, artifacts through S3, retries);
an engine only turns one resolved container (image, command, env, a host directory mounted at /kolora)
into an exit code and log lines. The engines themselves: `engines.py` (the `process` engine and the
registry) and `containers.py` (podman, docker). The helpers below start a step in a session of its own under the
step guard (`start_step`; `kolora_core/step_guard.py` stops the step if the runner dies without stopping it), follow
its output and stop its whole process group, which is how Ctrl-C and SIGTERM leave no process behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from kolora_core import parent_death
from kolora_core.step_guard import guarded

LineSink = Callable[[str, str], None]
"""Called with (stream, line) for every line a step prints; stream is "stdout" or "stderr"."""

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT_NAME = ".script"  # under the scratch dir, i.e. /kolora/.script in the container's view
Network = Literal["none", "default", "host"]
STOP_GRACE_S = 10  # SIGTERM first, SIGKILL after this: a train step checkpoints within it
EXIT_AT_STOP = "kolora_step_exit_code"  # set on the interrupt that `follow` stopped a step for: see `exit_at_stop`


@dataclass(frozen=True)
class StepRun:
    """One resolved container, in the container's own view: paths are still under /kolora."""

    node: str
    image: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    scratch: Path = Path()  # the host directory that is /kolora for this step
    script: str | None = None  # script templates: the source, run as the command's last argument
    gpu: bool = False  # a GPU step: container engines pass it the GPUs of KOLORA_GPUS
    # what a container may reach: nothing (stages that read inputs), the engine's default network (stages
    # that download), or this machine's network (steps that talk to the run's store, e.g. promote)
    network: Network = "none"
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # env from secretKeyRef; never on a command line
    run_lock_fd: int | None = None  # the run's .lock, held open: the step's guard keeps a copy until the step is gone


class Engine(ABC):
    """Runs resolved steps. Subclasses set `name` and are listed in `engines.ENGINES`."""

    name: ClassVar[str]
    description: ClassVar[str]
    # workflow parameters this engine needs by default, applied where the run gives none (`-p` wins)
    default_parameters: ClassVar[dict[str, str]] = {}

    def __init__(self, repo_root: Path = REPO_ROOT) -> None:
        self.repo_root = repo_root

    def check(self) -> None:  # noqa: B027 - optional hook, most engines need no check
        """Raise KoloraError if this engine cannot run here (missing binary, no daemon); called once per run."""

    def cuda_visible(self) -> bool | None:
        """Whether the steps will see a CUDA GPU; None when this engine cannot tell (then nothing is refused)."""
        return None

    @abstractmethod
    def run(self, step: StepRun, sink: LineSink) -> int:
        """Run the step to completion, feeding every output line to `sink`; return its exit code."""


@dataclass(frozen=True)
class StopCommand:
    """An engine's own command that stops a step, run before the step's process group is stopped: the container
    engines' `stop --time <grace> NAME` (the container is not in the client's group); `timeout` bounds a hung client."""

    argv: tuple[str, ...]
    timeout: float


def start_step(step: StepRun, argv: Sequence[str], stop: StopCommand | None = None, **popen: Any) -> subprocess.Popen[bytes]:
    """`argv` started for `step` in a session of its own (Ctrl-C and hangups reach only the runner, which then stops
    the whole step), its output piped for `follow`; raises OSError as Popen does for a command that cannot start.

    Under the step guard where the kernel can signal a parent's death: if the runner dies without stopping the step,
    the guard stops it as `stop_step(proc, stop)` would have. The guard is the group's leader: `proc.pid` is its pid,
    its exit status the command's."""
    streams: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    if not parent_death.AVAILABLE:
        return subprocess.Popen(argv, start_new_session=True, **streams, **popen)
    report, report_w = os.pipe()
    try:
        engine_stop = {"stop": stop.argv, "stop_timeout": stop.timeout} if stop is not None else {}
        command = guarded(argv, grace=STOP_GRACE_S, report_fd=report_w, **engine_stop)
        held = () if step.run_lock_fd is None else (step.run_lock_fd,)
        try:
            proc = subprocess.Popen(command, start_new_session=True, pass_fds=(report_w, *held), **streams, **popen)
        finally:
            os.close(report_w)
        try:
            failed = os.read(report, 32)  # until the guard has started the command (EOF) or reports why it could not
        except BaseException:  # Ctrl-C or a stop signal while the guard starts: the step is stopped all the same
            stop_step(proc, stop)
            raise
    finally:
        os.close(report)
    if failed:
        proc.communicate()  # the guard has exited: reap it, close its pipes
        number = int(failed)
        raise OSError(number, os.strerror(number), argv[0])
    return proc


def follow(proc: subprocess.Popen[bytes], sink: LineSink, stop: Callable[[], None]) -> int:
    """Feed both output streams of `proc` to `sink` until it exits; on Ctrl-C, SIGTERM (or any exception) `stop` it first.

    Whatever the step left running in its process group dies with it, as a container's processes do.
    """
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", sink), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", sink), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        _wait_unreaped(proc.pid)
        kill_group(proc)
    except BaseException as exc:
        stop()
        if not isinstance(exc, Exception):  # Ctrl-C or a stop signal: how the step ended goes on with it
            setattr(exc, EXIT_AT_STOP, proc.returncode)
        raise
    finally:
        for reader in readers:
            reader.join(timeout=5)
    return proc.returncode


def exit_at_stop(exc: BaseException) -> int | None:
    """The exit code of the step that Ctrl-C or a stop signal (`exc`) stopped, once `follow` has stopped it; None where
    it is not known (a second Ctrl-C cut the stop short, or the interrupt came before the step started).

    0 means the step finished its work before it was stopped, or within the grace that SIGTERM gives it."""
    code = getattr(exc, EXIT_AT_STOP, None)
    return code if isinstance(code, int) else None


def _pump(stream: object, name: str, sink: LineSink) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sink(name, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    stream.close()  # type: ignore[attr-defined]


def stop_step(proc: subprocess.Popen[bytes], command: StopCommand | None = None) -> None:
    """How a step is stopped: the engine's stop command if it has one, then the step's process group (`stop_group`)."""
    if command is not None:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(command.argv, capture_output=True, timeout=command.timeout)
    stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's whole process group (it runs in its own session), then SIGKILL what is left.

    A second Ctrl-C during the grace cuts it short: the SIGKILL still comes (a bare sequence left the group running).
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        _wait_unreaped(proc.pid, STOP_GRACE_S)
    finally:
        kill_group(proc)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the step's process group, then reap its leader.

    The leader is still unreaped here (`_wait_unreaped`), so its pid, the group's id, cannot have been reused.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_unreaped(pid: int, timeout: float | None = None) -> None:
    """Wait until `pid` exits (at most `timeout` s), leaving it a zombie: its process group id stays reserved."""
    deadline = None if timeout is None else time.monotonic() + timeout
    flags = os.WEXITED | os.WNOWAIT | (os.WNOHANG if timeout is not None else 0)
    while True:
        try:
            if os.waitid(os.P_PID, pid, flags) is not None:
                return
        except ChildProcessError:
            return  # already reaped
        if deadline is None or time.monotonic() >= deadline:
            return
        time.sleep(0.05)
