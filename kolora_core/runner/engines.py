"""The engines the local runner can use: the `process` engine here, podman and docker in `containers.py`.

The `process` engine runs the command as a local subprocess and rewrites /kolora paths; the `podman` and
`docker` engines run the step's image with the scratch directory mounted at /kolora, as the image's non-root
user, the template's command replacing the image's ENTRYPOINT (as Kubernetes does). Only the runner talks to
S3: a container sees its scratch directory and nothing else (see docs/containers.md). The interface they
share (`Engine`, `StepRun`) is `engine.py`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from kolora_core.errors import KoloraError
from kolora_core.runner.containers import DockerEngine, PodmanEngine
from kolora_core.runner.engine import REPO_ROOT, SCRIPT_NAME, Engine, LineSink, StepRun, follow, start_step, stop_group
from kolora_core.stages import CONTAINER_ROOT

CUDA_PROBE_TIMEOUT_S = 120  # importing torch takes 3-10 s; a wedged driver must not hang the run's start


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
        env.update(step.secrets)
        extra = step.env.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([str(self.repo_root), *([self.map_path(extra, step.scratch)] if extra else [])])
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def cuda_visible(self) -> bool | None:
        """Asked of torch in this interpreter, the one the steps run in (a child process: the runner itself stays
        free of torch and of a CUDA context); None where torch is missing or the probe fails."""
        probe = [sys.executable, "-c", "import torch; print(int(torch.cuda.is_available()))"]
        try:
            done = subprocess.run(probe, capture_output=True, text=True, timeout=CUDA_PROBE_TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        answer = done.stdout.strip()
        return answer == "1" if done.returncode == 0 and answer in {"0", "1"} else None

    def run(self, step: StepRun, sink: LineSink) -> int:
        argv = self.command(step)
        try:
            proc = start_step(step, argv, cwd=self.repo_root, env=self.environment(step))
        except FileNotFoundError:
            raise KoloraError(f"step {step.node}: command '{argv[0]}' not found on this machine (engine process)") from None
        except PermissionError:
            raise KoloraError(f"step {step.node}: command '{argv[0]}' is not executable (engine process)") from None
        return follow(proc, sink, lambda: stop_group(proc))


ENGINES: dict[str, type[Engine]] = {engine.name: engine for engine in (ProcessEngine, PodmanEngine, DockerEngine)}


def get_engine(name: str, repo_root: Path = REPO_ROOT) -> Engine:
    """The engine registered as `name`, checked for use on this machine."""
    if name not in ENGINES:
        raise KoloraError(f"unknown engine '{name}': choose one of {', '.join(ENGINES)}")
    engine = ENGINES[name](repo_root)
    engine.check()
    return engine
