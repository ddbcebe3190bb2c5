"""What the Argo objects are rendered with: cluster options, run parameters, step sizes.

Everything a stage *is* (module, image, inputs, outputs, paths, GPU need) comes from
`kolora_core.stages`; this module only holds what depends on the cluster (`RenderOptions`), the
knobs a user turns per run (`run_parameters`: a `--section.field` flag of every stage, or a parameter the
workflow itself reads) and how big each step's pod is (`SIZES`, by step name: every stage and every step of
`workflows.steps`; a test makes sure each has one).
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from kolora_core.config import TrainConfig, available_profiles

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_NAME = "kolora-pipeline"
ONEOFF_GENERATE_NAME = "kolora-run-"
NIGHTLY_NAME = "kolora-nightly"
WORK_VOLUME = "kolora-work"  # emptyDir at /kolora: inputs are loaded into it, outputs are uploaded from it
SHM_VOLUME = "dshm"  # emptyDir medium Memory at /dev/shm for PyTorch data loader workers
FETCH_MODELS_GENERATE_NAME = "kolora-fetch-models-"
# Where train and generate read the base model weights (`RenderOptions.models_from`, docs/argo.md "Model weights"):
# fetch: a fetch-models step in every run; s3: a key-only S3 artifact at the `models-key` parameter;
# pvc: a PersistentVolumeClaim mounted read-only. The s3/pvc store is filled once by `kolora-fetch-models`.
ModelsFrom = Literal["fetch", "s3", "pvc"]
MODELS_FROM: tuple[str, ...] = get_args(ModelsFrom)
MODELS_VOLUME = "kolora-models"  # the PVC volume of `models_from="pvc"`
MODELS_KEY_PARAM = "models-key"
MODELS_KEY_DEFAULT = "base-models/kolors"
SCORERS_KEY_PARAM = "scorers-key"  # the scorers directory of models_from="s3", beside the base models
SCORERS_KEY_DEFAULT = "base-models/scorers"
# torch.compile's cache of train and generate, kept beside the models (`RenderOptions.compile_cache`)
COMPILE_CACHE_KEY_PARAM = "compile-cache-key"
COMPILE_CACHE_KEY_DEFAULT = "base-models/compile-cache"
COMPILE_CACHE_SUBPATH = "compile-cache"  # on the models claim of models_from="pvc"
# The store promote publishes into and champion reads from, when the chart does not say otherwise: Argo's
# quick-start (its MinIO Service, bucket and credentials Secret), so the dist files run there as they are.
QUICK_START_ENDPOINT = "http://minio:9000"
QUICK_START_BUCKET = "my-bucket"
QUICK_START_SECRET = "my-minio-cred"
# The parameter that names each stage upload's key (`Stage.uploads`): an optional key-only input artifact
DATASET_KEY_PARAM = "dataset-key"
UPLOAD_KEY_PARAMS = {"source": DATASET_KEY_PARAM}
ON_UNCHANGED = ("train", "skip")  # the `on-unchanged` parameter: manual runs train anyway, the nightly skips


def project_version() -> str:
    """The kolora version: pyproject.toml in a checkout, the installed metadata otherwise."""
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.exists():
        return tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"]
    return importlib.metadata.version("kolora")


@dataclass(frozen=True)
class Param:
    """One workflow parameter a user sets per run."""

    name: str
    default: str
    description: str
    flag: str | None = None  # the stage flag it feeds; None: used by the workflow itself
    enum: tuple[str, ...] | None = None


def run_parameters(version: str | None = None) -> tuple[Param, ...]:
    """Workflow parameters, in the order the Argo UI shows them. '' means "the profile's value"."""
    return (
        Param("profile", "full", "config profile (kolora_core/profiles)", enum=tuple(available_profiles())),
        Param("config", "{}", "YAML run config overlaid on the profile (same format as `kolora config`)"),
        Param(
            "dataset",
            "",
            "training images: modelscope://<id>, smoke://, or (kolora run only) a local folder or .parquet ('' = profile)",
            "ingest.source",
        ),
        Param(
            DATASET_KEY_PARAM,
            "",
            "your own images instead: the key prefix in the artifact repository of a folder of images (captions in "
            "metadata.csv/.jsonl or .txt files) or of .parquet files ('' = none: dataset is read)",
        ),
        Param("caption", "", "caption for every image; null keeps the source captions ('' = profile)", "ingest.caption"),
        Param("steps", "", "LoRA optimizer steps ('' = profile)", "train.steps"),
        Param("rank", "", "LoRA rank ('' = profile)", "train.lora_rank"),
        Param("alpha", "", "LoRA alpha; the trained scale is alpha/rank ('' = profile)", "train.lora_alpha"),
        Param("learning-rate", "", "AdamW learning rate ('' = profile)", "train.learning_rate"),
        Param("prompts", "", "YAML list of {prompt, negative_prompt, seed} to render ('' = the seed story)", "generate.prompts"),
        Param("lora-strength", "", "1.0 = the trained scale ('' = profile)", "generate.lora_strength"),
        Param(
            "model-source",
            "",
            "modelscope (download Kolors), tiny (random test models) or random (random full-size Kolors, offline) ('' = profile)",
            "models.source",
        ),
        Param("image-registry", "ghcr.io/kolora", "registry of the kolora-<stage> images"),
        Param("image-tag", version or project_version(), "tag of the kolora-<stage> images (pinned, never latest)"),
        Param("generate-shards", "1", "how many pods render the prompts in parallel (one GPU each)"),
        Param(
            "s3-endpoint",
            QUICK_START_ENDPOINT,
            "S3 API URL of the release store (promote publishes, champion reads); '' = AWS S3 of s3-region",
        ),
        Param("s3-bucket", QUICK_START_BUCKET, "bucket of the release store"),
        Param("s3-region", "", "region of the release store ('' = AWS_REGION or us-east-1)"),
        Param("publish-prefix", "models", "key prefix of published releases: <prefix>/<name>/<version>/ and latest.json"),
        Param("name", "", "model name: releases go to <publish-prefix>/<name>/ ('' = profile)", "name"),
        Param(
            "on-unchanged",
            ON_UNCHANGED[0],
            "trainset and training config equal the champion's: train anyway (train) or end 'unchanged' (skip)",
            enum=ON_UNCHANGED,
        ),
        Param(
            "champion-margin",
            "",
            "the candidate may score this much below the champion's mean aesthetic ('' = profile)",
            "evaluate.champion_margin",
        ),
        Param("notify-url", "", "webhook the exit handler POSTs the run's status, gate and mean aesthetic to ('' = none)"),
    )


MODELS_KEY = Param(
    MODELS_KEY_PARAM, MODELS_KEY_DEFAULT, "S3 key of the base model directory in the artifact repository (kolora-fetch-models)"
)


SCORERS_KEY = Param(
    SCORERS_KEY_PARAM,
    SCORERS_KEY_DEFAULT,
    "S3 key of the evaluation scorers directory in the artifact repository (kolora-fetch-models)",
)


COMPILE_CACHE_KEY = Param(
    COMPILE_CACHE_KEY_PARAM,
    COMPILE_CACHE_KEY_DEFAULT,
    "S3 key where train and generate keep torch.compile's cache (generated code: a key only the workflows write)",
)


def workflow_parameters(options: RenderOptions) -> tuple[Param, ...]:
    """`run_parameters` plus the parameters of `options`: `models-key` and `scorers-key` only with `models_from="s3"`
    (and `compile-cache-key` when the compile cache is kept)."""
    params = run_parameters(options.version)
    if options.models_from != "s3":
        return params
    return (*params, MODELS_KEY, SCORERS_KEY, *([COMPILE_CACHE_KEY] if options.compile_cache else []))


@dataclass(frozen=True)
class StepSize:
    """Pod requests/limits and deadline of one stage's step."""

    cpu: str
    memory: str
    memory_limit: str
    ephemeral: str | None  # node disk for the kolora-work emptyDir (inputs + outputs)
    deadline_s: int  # per attempt; Argo starts the clock again on each retry


# Sized for the real Kolors run: the ChatGLM3 text encoder alone is 12.5 GB fp16 and is loaded in CPU
# memory before it moves to the GPU; the model folder is ~18 GB on disk, in every pod that reads it.
SIZES: dict[str, StepSize] = {
    "ingest": StepSize("2", "4Gi", "8Gi", "20Gi", 2 * 3600),
    "filter": StepSize("4", "8Gi", "16Gi", "20Gi", 2 * 3600),
    "fetch-models": StepSize("2", "4Gi", "8Gi", "40Gi", 3 * 3600),
    "train": StepSize("8", "48Gi", "64Gi", "60Gi", 12 * 3600),
    "generate": StepSize("8", "48Gi", "64Gi", "40Gi", 6 * 3600),
    "evaluate": StepSize("2", "8Gi", "16Gi", "10Gi", 2 * 3600),
    "check-changes": StepSize("1", "1Gi", "2Gi", "5Gi", 1800),  # hashes the trainset, reads the champion's release.json
    "publish": StepSize("1", "2Gi", "4Gi", "5Gi", 3600),  # copies the LoRA + report into the release dir
    # the steps of workflows.steps (not stages)
    "champion": StepSize("1", "1Gi", "2Gi", "5Gi", 1800),  # downloads the champion's report, grid and story images
    "promote": StepSize("1", "1Gi", "2Gi", "5Gi", 3600),  # uploads the release
    "notify": StepSize("100m", "128Mi", "256Mi", None, 300),  # one webhook POST
}
# GPU-less clusters (kind in CI) run the smoke profile: tiny models, a few MB of data.
CPU_SIZE = StepSize("250m", "1Gi", "4Gi", None, 3600)


# What Kubernetes accepts for the names and fields `kolora render` writes (and the chart's values.schema.json checks;
# a test keeps the two equal): a ServiceAccount, Secret, ConfigMap or claim name is a DNS-1123 subdomain; the key of an
# artifact repository is a ConfigMap data key ([-._a-zA-Z0-9]+, not '.', '..' nor starting with '..'), as long at
# most; a toleration's effect one of these.
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")  # no lookahead: Helm's Go regexp
DNS_SUBDOMAIN_MAX = 253
CONFIG_MAP_KEY = re.compile(r"\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*")  # at most one leading '.': no '.', '..', '..x'
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


@dataclass(frozen=True)
class Toleration:
    key: str
    effect: str = "NoSchedule"
    operator: str = "Exists"
    value: str | None = None


# The pod's terminationGracePeriodSeconds for stages with resumable outputs (train checkpoints at SIGTERM within
# train.sigterm_grace_s; generate keeps each finished image): that grace plus time for Argo's wait container to
# upload the kept state before Kubernetes' SIGKILL. A config that raises train.sigterm_grace_s needs this raised too.
UPLOAD_GRACE_S = 10
TERMINATION_GRACE_S = int(TrainConfig.model_fields["sigterm_grace_s"].default) + UPLOAD_GRACE_S


@dataclass(frozen=True)
class RenderOptions:
    """Cluster-dependent choices; the defaults fit a GPU cluster with the NVIDIA GPU Operator."""

    gpu: bool = True  # False: no GPU limits/tolerations/nodeSelector, small requests (kind, CPU-only CI)
    gpus: int = 1  # nvidia.com/gpu per GPU step (train, each generate shard); 0 renders as gpu=False (`on_gpus`)
    tolerations: tuple[Toleration, ...] = (Toleration("nvidia.com/gpu"),)
    node_selector: tuple[tuple[str, str], ...] = (("nvidia.com/gpu.present", "true"),)
    shm_size: str = "8Gi"  # /dev/shm of GPU steps (counts against their memory limit)
    # Artifacts go to the namespace's default artifact repository: with no key, the workflow carries no
    # artifactRepositoryRef and Argo uses the ConfigMap `artifact-repositories` of the workflow's namespace
    # (its key annotated workflows.argoproj.io/default-artifact-repository), else the controller's
    # repository. A key (or another ConfigMap) renders an explicit artifactRepositoryRef.
    artifact_repository_key: str | None = None
    artifact_repository_configmap: str = "artifact-repositories"
    # ServiceAccount of the pods and of Argo's executor in them (the step containers get no token): the one
    # workflows/dist/kolora-rbac.yaml creates, = the chart's for release `kolora`. None: the namespace's `default`.
    service_account: str | None = "kolora-workflow"
    hub_secret: str = "kolora-hub"  # Secret with the optional ModelScope token (key below)
    hub_secret_key: str = "modelscope-token"
    # Secret with the S3 keys of the release store (env AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of champion and
    # promote; optional refs, so IRSA works without it): the quick-start's; the chart sets its own (`s3.*` values).
    s3_secret: str = QUICK_START_SECRET
    s3_secret_access_key: str = "accesskey"
    s3_secret_secret_key: str = "secretkey"
    workflow_deadline_s: int = 48 * 3600
    version: str = field(default_factory=project_version)
    models_from: ModelsFrom = "fetch"  # fetch | s3 | pvc (see MODELS_FROM above)
    models_pvc: str = "kolora-models"  # claim of models_from="pvc" (ReadOnlyMany when GPU pods share no node)
    # At most this many pods of the pipeline DAG run at once (its `parallelism`), which while generate runs are
    # its shards alone (docs/argo.md "Generate shards"); None: no bound. Argo wants an integer here, not a parameter.
    generate_parallelism: int | None = 4
    archive_logs: bool = False  # spec.archiveLogs: keep every step's log in the artifact repository
    # models_from s3/pvc: train and generate keep torch.compile's cache beside the models (s3: the compile-cache-key
    # parameter's key, downloaded before and uploaded after each step; pvc: subPath compile-cache of the models
    # claim, mounted read-write, so the claim must allow writes: ReadWriteMany). fetch keeps nothing between runs.
    compile_cache: bool = True
    # terminationGracePeriodSeconds of the steps with resumable outputs (train, generate); see TERMINATION_GRACE_S
    termination_grace_s: int = TERMINATION_GRACE_S

    def __post_init__(self) -> None:
        if self.gpus < 0:
            raise ValueError(f"gpus {self.gpus}: expected 0 (no GPUs) or more")
        if self.models_from not in MODELS_FROM:
            raise ValueError(f"models_from {self.models_from!r}: expected one of {', '.join(MODELS_FROM)}")
        if self.generate_parallelism is not None and self.generate_parallelism < 1:
            raise ValueError(f"generate_parallelism {self.generate_parallelism}: expected a positive integer or None")

    @property
    def on_gpus(self) -> bool:
        """Whether GPU steps request GPUs and go to GPU nodes. `gpus=0` is `gpu=False`: a pod that requests no GPU must
        neither tolerate nor select GPU nodes (it would hold a GPU node's slot for nothing), and the chart has one
        GPU-less shape, `gpu.enabled: false` (every step sized by cpuOnly; its schema refuses `gpu.count: 0`)."""
        return self.gpu and self.gpus > 0

    @property
    def keeps_compile_cache(self) -> bool:
        return self.compile_cache and self.models_from != "fetch"

    def size(self, stage: str) -> StepSize:
        return SIZES[stage] if self.on_gpus else CPU_SIZE
