"""How one step's container runs: a small pluggable interface and the `process` engine.

Why an interface: the executor (local.py) owns Argo semantics (order, parameters, artifacts through S3);
an engine only turns one resolved container (image, command, env, a host directory mounted at /kolora)
into an exit code and log lines. The `process` engine runs the command as a local subprocess; a container
engine (podman/docker) registers next to it and mounts the same directory at /kolora instead of rewriting paths.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from kolora_core.errors import KoloraError
from kolora_core.stages import CONTAINER_ROOT

LineSink = Callable[[str, str], None]
"""Called with (stream, line) for every line a step prints; stream is "stdout" or "stderr"."""

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT_NAME = ".script"  # under the scratch dir, i.e. /kolora/.script in the container's view


@dataclass(frozen=True)
class StepRun:
    """One resolved container, in the container's own view: paths are still under /kolora."""

    node: str
    image: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    scratch: Path = Path()  # the host directory that is /kolora for this step
    script: str | None = None  # script templates: the source, run as the command's last argument


class Engine(ABC):
    """Runs resolved steps. Subclasses set `name` and are listed in `ENGINES`."""

    name: ClassVar[str]
    description: ClassVar[str]

    def __init__(self, repo_root: Path = REPO_ROOT) -> None:
        self.repo_root = repo_root

    def check(self) -> None:  # noqa: B027 - optional hook, most engines need no check
        """Raise KoloraError if this engine cannot run here (missing binary, no daemon); called once per run."""

    @abstractmethod
    def run(self, step: StepRun, sink: LineSink) -> int:
        """Run the step to completion, feeding every output line to `sink`; return its exit code."""


class ProcessEngine(Engine):
    """Each container's command as a subprocess of this machine, in this Python environment.

    What a container mount would do is done by rewriting: `/kolora` in arguments and env values becomes the
    step's scratch directory; `python` becomes this interpreter; the working directory is the repo root and
    PYTHONPATH points at it, so `python -m jobs.<stage>` finds the checkout's code as the image would.
    """

    name = "process"
    description = "run each step's command as a local subprocess (no containers; images are ignored)"
    _ROOT = re.compile(rf"(?<![\w/.-]){re.escape(CONTAINER_ROOT)}(?=/|$|[^\w.-])")
    _PYTHONS = ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}")

    def map_path(self, text: str, scratch: Path) -> str:
        """Rewrite every /kolora path in `text` to the scratch directory (what the container mount does)."""
        return self._ROOT.sub(lambda _: str(scratch), text)

    def command(self, step: StepRun) -> list[str]:
        argv = [self.map_path(a, step.scratch) for a in step.argv]
        if step.script is not None:
            # Argo writes the source to a file and appends its path; /kolora inside it needs the same rewrite
            script = step.scratch / SCRIPT_NAME
            script.write_text(self.map_path(step.script, step.scratch), encoding="utf-8")
            argv.append(str(script))
        if argv and argv[0] in self._PYTHONS:
            argv[0] = sys.executable
        return argv

    def environment(self, step: StepRun) -> dict[str, str]:
        env = dict(os.environ)
        env.update({k: self.map_path(v, step.scratch) for k, v in step.env.items()})
        extra = step.env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([str(self.repo_root), *([self.map_path(extra, step.scratch)] if extra else [])])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(self, step: StepRun, sink: LineSink) -> int:
        argv = self.command(step)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.repo_root,
                env=self.environment(step),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches the runner, which then stops the whole step
            )
        except FileNotFoundError:
            raise KoloraError(f"step {step.node}: command '{argv[0]}' not found on this machine (engine process)") from None
        except PermissionError:
            raise KoloraError(f"step {step.node}: command '{argv[0]}' is not executable (engine process)") from None
        readers = [
            threading.Thread(target=_pump, args=(proc.stdout, "stdout", sink), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, "stderr", sink), daemon=True),
        ]
        for reader in readers:
            reader.start()
        try:
            code = proc.wait()
        except BaseException:
            _stop(proc)
            raise
        finally:
            for reader in readers:
                reader.join(timeout=5)
        return code


def _pump(stream: object, name: str, sink: LineSink) -> None:
    for raw in iter(stream.readline, b""):  # type: ignore[attr-defined]
        sink(name, raw.decode("utf-8", errors="replace").rstrip("\r\n"))
    stream.close()  # type: ignore[attr-defined]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the step's whole process group (it runs in its own session), then kill it if it lingers."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


ENGINES: dict[str, type[Engine]] = {ProcessEngine.name: ProcessEngine}


def get_engine(name: str, repo_root: Path = REPO_ROOT) -> Engine:
    """The engine registered as `name`, checked for use on this machine."""
    if name not in ENGINES:
        raise KoloraError(f"unknown engine '{name}': choose one of {', '.join(ENGINES)}")
    engine = ENGINES[name](repo_root)
    engine.check()
    return engine
