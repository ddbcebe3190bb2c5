"""What every kolora pod is made of, stage or not: image reference, size, security context, writable volumes.

The step containers run as the images' non-root user (uid 10001) on a read-only root filesystem (issue 13.7).
What they write goes to three emptyDirs, the only writable places in the pod:

- `/kolora` (`WORK_VOLUME`): inputs and outputs, and the caches the images point there (HF_HOME,
  MODELSCOPE_CACHE, TORCH_HOME, XDG_CACHE_HOME under /kolora/cache: images/Dockerfile);
- `/tmp`: tempfile, torch.compile's inductor cache (TORCHINDUCTOR_CACHE_DIR defaults to /tmp/torchinductor_<user>),
  Ray's session directory;
- the user's home (`HOME_DIR`, the images' HOME): Triton's kernel cache (~/.triton), kolora's compiled-kernel
  cache (`train/generate.compile_cache_dir` null = ~/.cache/kolora/compile) and whatever a library puts under ~.

The local runner ignores volumes and security contexts (it rewrites /kolora to a scratch directory); the
cache locations are therefore left to the images' ENV rather than set here, so a local run keeps using the
host's caches.
"""

from __future__ import annotations

from hera.workflows.models import (
    Capabilities,
    EmptyDirVolumeSource,
    PodSecurityContext,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    Volume,
    VolumeMount,
)

from kolora_core.stages import CONTAINER_ROOT
from workflows.options import WORK_VOLUME, StepSize

RUN_UID = 10001  # the images' user (images/Dockerfile)
HOME_DIR = "/home/kolora"  # the images' HOME
TMP_VOLUME, HOME_VOLUME = "tmp", "home"
# volume name -> mount path of the writable emptyDirs every step container gets
WRITABLE = {WORK_VOLUME: CONTAINER_ROOT, TMP_VOLUME: "/tmp", HOME_VOLUME: HOME_DIR}


def image(name: str) -> str:
    """`kolora-<name>` from the registry and tag of the workflow parameters."""
    return f"{{{{workflow.parameters.image-registry}}}}/kolora-{name}:{{{{workflow.parameters.image-tag}}}}"


def volumes() -> list[Volume]:
    """The workflow-level emptyDirs behind `WRITABLE`."""
    return [Volume(name=name, empty_dir=EmptyDirVolumeSource()) for name in WRITABLE]


def mounts() -> list[VolumeMount]:
    return [VolumeMount(name=name, mount_path=path) for name, path in WRITABLE.items()]


def container_security() -> SecurityContext:
    return SecurityContext(
        run_as_non_root=True,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=Capabilities(drop=["ALL"]),
    )


def pod_security() -> PodSecurityContext:
    return PodSecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_UID,
        run_as_group=RUN_UID,
        fs_group=RUN_UID,
        seccomp_profile=SeccompProfile(type="RuntimeDefault"),
    )


def resources(size: StepSize, gpus: int = 0) -> ResourceRequirements:
    """Requests (cpu, memory, node disk for the emptyDirs) and limits (memory, `gpus` nvidia.com/gpu)."""
    requests = {"cpu": size.cpu, "memory": size.memory}
    if size.ephemeral:
        requests["ephemeral-storage"] = size.ephemeral
    limits = {"memory": size.memory_limit}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return ResourceRequirements(requests=requests, limits=limits)
