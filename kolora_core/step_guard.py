"""The step guard: a step's process-group leader that stops the step when `kolora run` dies without stopping it.

Why: `kolora run` starts each step in a session of its own, so that Ctrl-C and hangups reach only the runner, which
then stops the whole step (`runner/engine.py`: `follow`, `stop_group`). A runner killed outright (SIGKILL, the OOM
killer) stops nothing: the step ran on, holding the GPU and writing into the run's directory, and `kolora run
--retry` started a second copy beside it. Under the guard such a step gets what Kubernetes gives a deleted pod.

How: the runner starts `python -m kolora_core.step_guard --parent <runner pid> --grace <s> ... -- <command>` as the
step's session and group leader (`guarded`). The guard asks the kernel for a signal at the runner's death
(PR_SET_PDEATHSIG, `parent_death.py`: SIGUSR1, `PARENT_DEATH`, so that it is never taken for the runner's SIGTERM),
starts the command in its own group (stdin, stdout and stderr inherited) and waits for it. The kernel sends that
signal when the runner's thread that started the guard ends (it waits in `follow` until the step has ended), and
again for each of the runner's threads that the guard passes to as they end: only a changed getppid means that
the runner is gone.

* The command ends: the guard ends as it did, with its exit code or killed by the same signal, so the runner reads
  the exit status it read when the command was the leader (`-N` from Popen for a signal, a core dump not repeated).
* SIGTERM (or SIGINT, SIGHUP) while the runner lives: a signal to the step's group, which reached the command too
  (the runner's own stop: SIGTERM, the grace, SIGKILL of the group); what the command does decides, the guard
  waits on.
* The runner dies: the guard does what the runner's stop would have done. First the engine's stop command, if it
  gave one: the container engines give `podman|docker stop --time <grace> NAME`, because the container is not in
  the client's process group, and stopping the client alone would leave it running. Then SIGTERM to the group
  (unless the runner had sent it already: the grace counts from there), up to the grace for the command to end,
  and SIGKILL to what is left of the group, the guard included. After the runner's death nothing reads the step's
  output any more (a write fails, EPIPE) and nothing uploads what it saves: the point is that it ends.
* The runner gives the guard the run's `.lock` (an inherited descriptor; flock locks belong to the open file, so
  the copy holds the runner's lock): `kolora run --retry` of the run is refused until the guard, and with it the
  stopped step, is gone, instead of starting the step again beside the one being stopped.

A command that cannot start (not found, not executable) is reported to the runner on `--report-fd` as its errno,
and closing that descriptor says the command started: `runner/engine.py` `start_step` raises the same OSError
that Popen raises without the guard. The guard is a top-level module that imports nothing but the standard library
and `parent_death` (the runner package takes a second to import, at every step's start). Where the kernel has no
parent-death signal (`parent_death.AVAILABLE`), the runner starts the command itself, as before the guard.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import NoReturn

from kolora_core.parent_death import signal_at_parent_death

MODULE = "kolora_core.step_guard"
# Not SIGTERM: SIGTERM while the runner lives is its stop, which the guard must tell from the runner's death. The
# kernel sends it each time one of the runner's threads that holds the guard ends (the guard passes to another
# thread of the runner): only a changed getppid says the runner is gone.
PARENT_DEATH = signal.SIGUSR1
PASSED_ON = (signal.SIGINT, signal.SIGHUP)  # signals to the step's group that the command handles, the guard waits on
NOT_STARTED = 127  # the guard's exit code when the command could not start (the runner raises, it never reads it)


def guarded(
    command: Sequence[str], *, grace: float, report_fd: int, stop: Sequence[str] = (), stop_timeout: float = 0
) -> list[str]:
    """The command line that runs `command` under the guard, with this process as the runner it watches.

    `stop`: the engine's command that stops the step (with `stop_timeout` s for it), run first if the runner dies."""
    line = [sys.executable, "-m", MODULE, "--parent", str(os.getpid()), "--grace", str(grace), "--report-fd", str(report_fd)]
    if stop:
        line += ["--stop", shlex.join(stop), "--stop-timeout", str(stop_timeout)]
    return [*line, "--", *command]


class _Orphaned(BaseException):
    """The runner died (the parent-death signal, or it was gone before the guard asked for one)."""


def main(argv: Sequence[str]) -> int:
    """`argv`: the guard's options, `--`, the command (kept whole: it may hold a `--` of its own)."""
    split = list(argv).index("--") if "--" in argv else len(argv)
    parser = _parser()
    args = parser.parse_args(argv[:split])
    args.command = list(argv[split + 1 :])
    if not args.command:
        parser.error("no command after --")
    group_stopped: list[float] = []  # when SIGTERM reached the group while the runner lived: its stop began

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if not group_stopped:
            group_stopped.append(time.monotonic())

    def on_parent_death(signum: int, frame: FrameType | None) -> None:
        if os.getppid() != args.parent:  # else one of the runner's threads ended, and another one took the guard
            raise _Orphaned

    # handlers, unlike an ignored signal, are reset to the default when the command starts
    signal.signal(PARENT_DEATH, on_parent_death)
    signal.signal(signal.SIGTERM, on_sigterm)
    for signum in PASSED_ON:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _keep_going)
    try:
        if not signal_at_parent_death(PARENT_DEATH, args.parent):
            raise _Orphaned
        return _exit_as(_run(args.command, args.report_fd))
    except _Orphaned:  # also after the command ended: what it left in the group is killed, as the runner would have
        _stop_orphaned(args, group_stopped[0] if group_stopped else None)


def _parser() -> argparse.ArgumentParser:
    usage = f"python -m {MODULE} --parent PID --grace S --report-fd FD [--stop LINE --stop-timeout S] -- COMMAND..."
    parser = argparse.ArgumentParser(usage=usage, description="runs a step's command; stops the step if the runner dies")
    parser.add_argument("--parent", type=int, required=True, help="the runner's pid")
    parser.add_argument("--grace", type=float, required=True, help="seconds from SIGTERM to SIGKILL")
    parser.add_argument("--report-fd", type=int, required=True, help="gets the errno of a command that cannot start")
    parser.add_argument("--stop", type=shlex.split, default=[], help="the engine's stop command (one shell-quoted line)")
    parser.add_argument("--stop-timeout", type=float, default=0, help="seconds the stop command may take")
    return parser


def _run(command: list[str], report_fd: int) -> int:
    """The command's exit status as Popen gives it; one that cannot start is reported on `report_fd`."""
    try:
        child = subprocess.Popen(command)
    except OSError as exc:
        os.write(report_fd, str(exc.errno).encode())
        return NOT_STARTED
    finally:
        os.close(report_fd)
    return child.wait()


def _stop_orphaned(args: argparse.Namespace, group_stopped: float | None) -> NoReturn:
    """The runner's stop, done for it: the engine's stop command, SIGTERM, the grace, SIGKILL of the whole group."""
    for signum in (PARENT_DEATH, signal.SIGTERM, *PASSED_ON):
        signal.signal(signum, _keep_going)  # the guard's own SIGTERM to the group comes back to it
    if args.stop:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            quiet = subprocess.DEVNULL  # the runner's end of the output pipes is gone
            subprocess.run(args.stop, stdin=quiet, stdout=quiet, stderr=quiet, timeout=args.stop_timeout, check=False)
    if group_stopped is None:
        os.killpg(0, signal.SIGTERM)
        group_stopped = time.monotonic()
    _wait_for_children(group_stopped + args.grace)
    os.killpg(0, signal.SIGKILL)
    os._exit(128 + signal.SIGKILL)  # not reached: the guard is in the group


def _keep_going(signum: int, frame: FrameType | None) -> None:
    """A handler that does nothing: the signal interrupts no wait, and the command still gets the default at exec."""


def _wait_for_children(deadline: float) -> None:
    """Until the command has ended (the guard's only child) or `deadline` (time.monotonic) has passed."""
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.05)


def _exit_as(code: int) -> int:
    """The exit code to end with, after dying of the command's signal where a signal killed it (Popen's -N)."""
    if code >= 0:
        return code
    signum = -code
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the command dumped its core already, if it was to
    with contextlib.suppress(OSError, ValueError):  # SIGKILL keeps its default action; nothing to set
        signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    return 128 + signum  # not reached for a signal that kills, and no other ends a process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
