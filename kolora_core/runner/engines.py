"""How one step's container runs: a small pluggable interface, the `process` engine and the container engines.

Why an interface: the executor (local.py) owns Argo semantics (order, parameters, artifacts through S3);
an engine only turns one resolved container (image, command, env, a host directory mounted at /kolora)
into an exit code and log lines. The `process` engine runs the command as a local subprocess and rewrites
/kolora paths; the `podman` and `docker` engines run the step's image with the scratch directory mounted at
/kolora, as the image's non-root user, the template's command replacing the image's ENTRYPOINT (as Kubernetes
does). Only the runner talks to S3: a container sees its scratch directory and nothing else (see docs/containers.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
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
    gpu: bool = False  # a GPU step: container engines pass it the GPUs of KOLORA_GPUS
    network: bool = False  # may reach the network (a download); container engines give other steps none


class Engine(ABC):
    """Runs resolved steps. Subclasses set `name` and are listed in `ENGINES`."""

    name: ClassVar[str]
    description: ClassVar[str]
    # workflow parameters this engine needs by default, applied where the run gives none (`-p` wins)
    default_parameters: ClassVar[dict[str, str]] = {}

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
        return _follow(proc, sink, lambda: _stop(proc))


@dataclass(frozen=True)
class ImageUser:
    """The user an image runs as (its Dockerfile USER): numeric ids where the image gives them."""

    uid: int | None  # None: a user name, which the host cannot map to an id
    gid: int | None
    text: str = ""

    @classmethod
    def parse(cls, user: str) -> ImageUser:
        name, _, group = user.strip().partition(":")
        if name in ("", "root", "0"):
            return cls(0, 0, user)
        uid = int(name) if name.isdigit() else None
        gid = int(group) if group.isdigit() else (uid if not group else None)
        return cls(uid, gid, user)

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def image_registry(image: str) -> str:
    """The registry host of an image reference (`docker.io` when the reference names none)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


class ContainerEngine(Engine):
    """Each step in a container of its image, the step's scratch directory mounted at /kolora (podman, docker).

    * image: the template's, with image-registry/image-tag resolved by the runner; `make images` tags
      `localhost/kolora-<image>:<version>`, hence `default_parameters` (image-registry=localhost; `-p` wins).
      A missing image from another registry is pulled once; a missing `localhost/` image is an error that says
      how to build it.
    * command: the template's command replaces the image's ENTRYPOINT (`--entrypoint`) and its args follow the
      image name, as Kubernetes does with `command`/`args`; a script template's source is /kolora/.script.
    * user: the image's own (USER 10001:10001 in the kolora images, the workflow's runAsUser). The scratch
      directory is made writable for it before each run: chowned to its uid/gid when the runner is root (rootful
      podman or docker), mapped with `--userns=keep-id:uid=..,gid=..` under rootless podman, else its
      directories are made world-writable (docker driven by a non-root user).
    * network: `none` (the runner, not the container, talks to S3), except for steps marked `network` (the
      stages without inputs: ingest, fetch-models download from ModelScope), which get the engine's default network.
      KOLORA_CONTAINER_NETWORK (e.g. `host`, `none`) overrides it for every step.
    * GPUs: KOLORA_GPUS (`all` or device ids `0,1`) gives the steps marked `gpu` the NVIDIA GPUs (docker
      `--gpus`, podman CDI `--device nvidia.com/gpu=...`); without it they run on the CPU.
    * `--init` (signals reach Python, children are reaped), `--shm-size` (the workflow's /dev/shm emptyDir), and
      extra global flags from the environment variable `flags_env` (KOLORA_PODMAN_FLAGS, KOLORA_DOCKER_FLAGS).
    """

    binary: ClassVar[str]
    flags_env: ClassVar[str]
    volume_options: ClassVar[str] = ""
    default_parameters: ClassVar[dict[str, str]] = {"image-registry": "localhost"}  # where `make images` tags them
    SHM_SIZE = "2g"
    KILL_TIMEOUT_S = 30

    def __init__(self, repo_root: Path = REPO_ROOT, *, environ: Mapping[str, str] | None = None, euid: int | None = None) -> None:
        super().__init__(repo_root)
        env = os.environ if environ is None else environ
        self.global_flags: tuple[str, ...] = tuple(shlex.split(env.get(self.flags_env, "")))
        self.network = env.get("KOLORA_CONTAINER_NETWORK") or None
        self.gpus = env.get("KOLORA_GPUS") or None
        self.euid = os.geteuid() if euid is None else euid
        self._users: dict[str, ImageUser] = {}

    # --- command lines (pure: the unit tests build them without running anything) -----------------------------

    def base(self) -> list[str]:
        return [self.binary, *self.global_flags]

    def network_for(self, step: StepRun) -> str | None:
        """`--network` of a step: None means the engine's default network."""
        if self.network:
            return self.network
        return None if step.network else "none"

    def gpu_flags(self, devices: str) -> list[str]:
        raise NotImplementedError

    def user_flags(self, user: ImageUser) -> list[str]:
        return []

    def maps_user(self, user: ImageUser) -> bool:
        """True when the engine maps the invoking user to the image's user (no chown/chmod needed)."""
        return False

    def command(self, step: StepRun, name: str, user: ImageUser) -> list[str]:
        """The full `<engine> run ...` argv of one step."""
        if not step.argv:
            raise KoloraError(f"step {step.node}: no command to run (engine {self.name})")
        argv = [*self.base(), "run", "--rm", "--name", name, "--init", "--pull", "never"]
        argv += ["--label", f"dev.kolora.node={step.node}"]
        network = self.network_for(step)
        if network is not None:
            argv += ["--network", network]
        argv += ["--volume", f"{step.scratch.resolve()}:{CONTAINER_ROOT}{self.volume_options}", "--workdir", CONTAINER_ROOT]
        argv += ["--shm-size", self.SHM_SIZE, *self.user_flags(user)]
        if self.gpus and step.gpu:
            argv += self.gpu_flags(self.gpus)
        for key, value in sorted(step.env.items()):
            argv += ["--env", f"{key}={value}"]
        argv += ["--entrypoint", step.argv[0], step.image, *step.argv[1:]]
        if step.script is not None:
            argv.append(f"{CONTAINER_ROOT}/{SCRIPT_NAME}")
        return argv

    # --- running ------------------------------------------------------------------------------------------------

    def check(self) -> None:
        if shutil.which(self.binary) is None:
            raise KoloraError(f"engine {self.name}: '{self.binary}' is not installed (see docs/containers.md)")
        argv = [*self.base(), "info"]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise KoloraError(f"engine {self.name}: `{shlex.join(argv)}` did not answer within 60 s") from None
        if done.returncode != 0:
            raise KoloraError(f"engine {self.name}: `{shlex.join(argv)}` failed: {_last_line(done.stderr or done.stdout)}")

    def inspect(self, image: str) -> dict[str, object] | None:
        """The image's config (User, Entrypoint, Labels, ...), or None when the image is not on this machine."""
        argv = [*self.base(), "image", "inspect", "--format", "{{json .Config}}", image]
        done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            return None
        try:
            config = json.loads(done.stdout.strip().splitlines()[0]) if done.stdout.strip() else {}
        except ValueError:
            return None
        return config if isinstance(config, dict) else {}

    def image_user(self, step: StepRun, sink: LineSink) -> ImageUser:
        """The user of the step's image; the image is pulled first when it is missing and not a local build."""
        image = step.image
        if image in self._users:
            return self._users[image]
        config = self.inspect(image)
        if config is None:
            if image_registry(image) == "localhost":
                raise KoloraError(
                    f"step {step.node}: image {image} is not on this machine ({self.binary}): build the images with "
                    "`make images` (tags localhost/kolora-<image>:<version>; -p image-tag=... picks another tag)"
                )
            sink("stderr", f"--- kolora run: pulling {image}")
            pull = subprocess.run([*self.base(), "pull", image], capture_output=True, text=True, stdin=subprocess.DEVNULL)
            config = self.inspect(image) if pull.returncode == 0 else None
            if config is None:
                raise KoloraError(
                    f"step {step.node}: image {image} is not on this machine and pulling it failed "
                    f"({_last_line(pull.stderr or pull.stdout)}); for images built by `make images` pass "
                    "-p image-registry=localhost"
                )
        user = ImageUser.parse(str(config.get("User") or ""))
        self._users[image] = user
        return user

    def prepare(self, step: StepRun, user: ImageUser) -> None:
        """Write a script template's source and make the scratch directory writable for the image's user."""
        if step.script is not None:
            (step.scratch / SCRIPT_NAME).write_text(step.script, encoding="utf-8")
        if user.is_root or self.maps_user(user):
            return
        if self.euid == 0 and user.uid is not None:
            _chown_tree(step.scratch, user.uid, user.gid if user.gid is not None else user.uid)
        else:
            _open_tree(step.scratch)

    def run(self, step: StepRun, sink: LineSink) -> int:
        if not step.image or "{{" in step.image:
            raise KoloraError(
                f"step {step.node}: image '{step.image}' is not a resolved image reference "
                f"(engine {self.name} needs the runner to substitute the template's image parameters)"
            )
        user = self.image_user(step, sink)
        self.prepare(step, user)
        name = f"kolora-{re.sub(r'[^a-zA-Z0-9_.-]', '-', step.node)}-{secrets.token_hex(3)}"
        argv = self.command(step, name, user)
        try:
            proc = subprocess.Popen(
                argv,
                cwd=self.repo_root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # Ctrl-C reaches the runner, which then removes the container
            )
        except OSError as exc:
            raise KoloraError(f"step {step.node}: could not start {self.binary}: {exc}") from None
        return _follow(proc, sink, lambda: self._stop_container(name, proc))

    def _stop_container(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        """Kill the container (the client alone may leave it running), then the client; `--rm` removes it."""
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run([*self.base(), "kill", name], capture_output=True, timeout=self.KILL_TIMEOUT_S)
        _stop(proc)


class PodmanEngine(ContainerEngine):
    name = "podman"
    description = "run each step's image with podman (rootful or rootless), the step's scratch dir at /kolora"
    binary = "podman"
    flags_env = "KOLORA_PODMAN_FLAGS"
    volume_options = ":Z"  # SELinux hosts: a private label for the step's own directory (ignored elsewhere)

    def maps_user(self, user: ImageUser) -> bool:
        return self.euid != 0 and user.uid is not None and not user.is_root

    def user_flags(self, user: ImageUser) -> list[str]:
        if not self.maps_user(user):
            return []
        # rootless: the invoking user becomes the image's user, so the mounted directory is theirs on both sides
        gid = user.gid if user.gid is not None else user.uid
        return ["--userns", f"keep-id:uid={user.uid},gid={gid}"]

    def gpu_flags(self, devices: str) -> list[str]:
        flags: list[str] = []
        for device in (d.strip() for d in devices.split(",") if d.strip()):
            flags += ["--device", f"nvidia.com/gpu={device}"]
        return flags


class DockerEngine(ContainerEngine):
    name = "docker"
    description = "run each step's image with docker (a running Docker engine), the step's scratch dir at /kolora"
    binary = "docker"
    flags_env = "KOLORA_DOCKER_FLAGS"

    def gpu_flags(self, devices: str) -> list[str]:
        return ["--gpus", "all" if devices == "all" else f'"device={devices}"']


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.lchown(root, uid, gid)
    for parent, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            os.lchown(os.path.join(parent, entry), uid, gid)


def _open_tree(root: Path) -> None:
    """Directories writable and files readable by anyone: for a container user the host cannot chown to."""
    root.chmod(0o777)
    for parent, dirs, files in os.walk(root):
        for entry in dirs:
            os.chmod(os.path.join(parent, entry), 0o777)
        for entry in files:
            path = os.path.join(parent, entry)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode | 0o444)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _follow(proc: subprocess.Popen[bytes], sink: LineSink, stop: Callable[[], None]) -> int:
    """Feed both output streams of `proc` to `sink` until it exits; on Ctrl-C (or any exception) `stop` it first."""
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", sink), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", sink), daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        code = proc.wait()
    except BaseException:
        stop()
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


ENGINES: dict[str, type[Engine]] = {engine.name: engine for engine in (ProcessEngine, PodmanEngine, DockerEngine)}


def get_engine(name: str, repo_root: Path = REPO_ROOT) -> Engine:
    """The engine registered as `name`, checked for use on this machine."""
    if name not in ENGINES:
        raise KoloraError(f"unknown engine '{name}': choose one of {', '.join(ENGINES)}")
    engine = ENGINES[name](repo_root)
    engine.check()
    return engine
