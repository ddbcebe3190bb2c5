"""The container engines: each step in a container of its image, its scratch directory mounted at /kolora."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from kolora_core.errors import KoloraError
from kolora_core.runner.engine import (
    REPO_ROOT,
    SCRIPT_NAME,
    STOP_GRACE_S,
    Engine,
    LineSink,
    StepRun,
    StopCommand,
    follow,
    start_step,
    stop_step,
)
from kolora_core.stages import CONTAINER_ROOT


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
    * network: `none` for stages that read inputs (the runner, not the container, talks to S3); the engine's
      default network for the stages without inputs (ingest, fetch-models download from ModelScope); the host's
      network for steps that are not stages (champion, promote, notify): they talk to the run's store, which
      listens on this machine (the embedded store on 127.0.0.1). KOLORA_CONTAINER_NETWORK overrides all three.
    * secrets (env from secretKeyRef) go to the engine client's own environment and into the container as
      `--env NAME`, so their values never appear on a command line.
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
    STOP_TIMEOUT_S = STOP_GRACE_S + 30  # the engine's own SIGKILL comes after the grace; this bounds a hung client

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
        return {"none": "none", "default": None, "host": "host"}[step.network]

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
        for key in sorted(step.secrets):
            argv += ["--env", key]  # the value comes from the client's environment
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
        # stopped as Kubernetes stops a container (SIGTERM, SIGKILL after the grace; the client alone may leave it
        # running), then the client; `--rm` removes it. The step guard does the same if the runner dies.
        stop = StopCommand((*self.base(), "stop", "--time", str(STOP_GRACE_S), name), self.STOP_TIMEOUT_S)
        try:
            proc = start_step(step, argv, stop, cwd=self.repo_root, env={**os.environ, **step.secrets})
        except OSError as exc:
            raise KoloraError(f"step {step.node}: could not start {self.binary}: {exc}") from None
        return follow(proc, sink, lambda: stop_step(proc, stop))


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
