"""The container templates of the pipeline: one per stage (from `kolora_core.stages`) and one per step of `workflows.steps`.

Every stage's template is built from its `Stage` (command, `--<artifact> <path>` arguments, artifact names and
container paths, image, GPU need, output parameters, resumable outputs), so the workflow, the stage CLIs and the
images cannot drift. Every stage receives the whole run config: the `config` workflow parameter as a raw
artifact at `CONFIG_PATH`, `--profile`, and one `--section.field` flag per user parameter ('' keeps the
profile's value), so all stages resolve the same config.

Outputs are key-only S3 artifacts (`{{workflow.name}}/<artifact>`) in the namespace's default artifact
repository, stored file by file (`archive: none`) so MinIO/S3 and the Argo UI can browse them. The generate
shards write `{{workflow.name}}/images/shard-<n>`; evaluate and publish read the whole `{{workflow.name}}/images`
prefix. Output parameters have a default (a skipped or failed step must still resolve them: Argo v4.0.7+/v3.7.16+
fail the node otherwise); those of `GLOBAL_OUTPUTS` are also workflow outputs (globalName) for the exit handler.

Resumable outputs (`Stage.resumable`: train's checkpoints, generate's finished images) are an optional input AND
an optional output artifact at the same path, key `{{workflow.name}}/<stage>-<artifact>` (generate:
`.../generate-progress/shard-<n>`): Argo uploads outputs after a failed main container too, so a retried pod
starts from what the previous attempt kept. A pod killed before its wait container uploads loses that attempt's
part (the earlier attempts' stay in the store).

Model weights (`RenderOptions.models_from`, docs/argo.md "Model weights"): `fetch` passes fetch-models' `models`
and `scorers` outputs; `s3` reads them as key-only artifacts at the `models-key` / `scorers-key` parameters; `pvc`
mounts the claim read-only at the input paths, `subPath: models` / `subPath: scorers`. With s3/pvc the stages that
compile (train, generate) keep torch.compile's cache beside the models (`RenderOptions.compile_cache`): s3 as an
optional input + output artifact at the `compile-cache-key` parameter, pvc as the claim's `compile-cache` subPath
mounted read-write, in both cases at `COMPILE_CACHE_PATH` with `$KOLORA_COMPILE_CACHE` pointing there. In kolora-fetch-models
(the writer) the pvc claim's root is mounted read-write at /kolora/outputs, so the commit's staging
(`/kolora/outputs/.staging/`) is on the same filesystem and the 18 GB commit is a rename.
"""

from __future__ import annotations

import json

from hera.workflows import Artifact, Container, RawArtifact, S3Artifact
from hera.workflows import Parameter as HeraParameter
from hera.workflows.archive import NoneArchiveStrategy
from hera.workflows.models import (
    Backoff,
    EmptyDirVolumeSource,
    EnvVar,
    EnvVarSource,
    PersistentVolumeClaimVolumeSource,
    RetryStrategy,
    SecretKeySelector,
    Toleration,
    ValueFrom,
    Volume,
    VolumeMount,
)

from kolora_core.errors import KoloraError
from kolora_core.stages import (
    COMPILE_CACHE_ENV,
    COMPILE_CACHE_PATH,
    CONFIG_ARTIFACT,
    CONFIG_PATH,
    CONTAINER_ROOT,
    STAGES,
    Stage,
)
from workflows import metrics, pods
from workflows.options import (
    COMPILE_CACHE_KEY_PARAM,
    COMPILE_CACHE_SUBPATH,
    MODELS_KEY_PARAM,
    MODELS_VOLUME,
    SCORERS_KEY_PARAM,
    SHM_VOLUME,
    UPLOAD_KEY_PARAMS,
    RenderOptions,
    run_parameters,
)
from workflows.steps import GLOBAL_OUTPUTS, STORE_ENV, Step

FANOUT_STAGE = "generate"  # one task per prompt shard (`generate.shards` / `generate.shard` config fields)
SHARD_PARAM = "shard"
SHARDS_PARAM = "generate-shards"
MODELS_STAGE = "fetch-models"
# fetch-models' outputs that models_from="s3"|"pvc" keep outside the run: artifact -> (key parameter, pvc subPath)
MODEL_STORES = {"models": (MODELS_KEY_PARAM, "models"), "scorers": (SCORERS_KEY_PARAM, "scorers")}
# Output parameter defaults (a skipped or failed step): an unknown training decision trains, an unknown gate is skipped.
PARAMETER_DEFAULTS = {"training": "changed", "gate": "skipped"}

# Retries. limit 2 with 30 s, 60 s back-off. No maxDuration: Argo measures it from the FIRST attempt's
# start, so a 3-hour train that fails would never be retried.
# - GPU steps (spot/preemptible nodes) and steps without inputs (they download from the hub) retry on any
#   failure: a preempted or evicted pod shows as Failed (SIGTERM, exit 143/137) as often as Error, and network
#   downloads fail transiently. The expression skips KoloraError's exit code: that is a user-fixable error (bad
#   config, missing input) that a rerun repeats, and a GPU retry re-downloads the 18 GB model folder first.
# - the other CPU stages compute deterministically on stored inputs: a non-zero exit would repeat, so they
#   retry only Argo/infrastructure errors (pod deleted, node lost, artifact upload failed).
# - champion and promote (workflows.steps) talk to the release store: they retry any failure except exit 2 too
#   (a store blip exits 75; a damaged champion release or a version published with another LoRA exits 2).
RETRY_LIMIT = 2
BACKOFF = Backoff(duration="30s", factor=2)
NOT_A_USER_ERROR = f"lastRetry.status == 'Error' || lastRetry.exitCode != '{KoloraError.exit_code}'"


def output_key(name: str) -> str:
    return f"{{{{workflow.name}}}}/{name}"


def shard_key(artifact: str) -> str:
    return output_key(f"{artifact}/shard-{{{{inputs.parameters.{SHARD_PARAM}}}}}")


def parameter_ref(name: str) -> str:
    """Argo's reference to the workflow parameter `name`, substituted when a pod is made."""
    return f"{{{{workflow.parameters.{name}}}}}"


def store_key(artifact: str) -> str:
    """The key parameter of a models_from="s3" store directory."""
    return parameter_ref(MODEL_STORES[artifact][0])


def upload_key(upload: str) -> str:
    """The key parameter of a stage upload (`Stage.uploads`): `dataset-key` for ingest's `source`."""
    return parameter_ref(UPLOAD_KEY_PARAMS[upload])


def producers() -> dict[str, str]:
    """Artifact name -> the stage or step (workflows.steps) that writes it."""
    from workflows.steps import STEPS

    made: dict[str, str] = {}
    for node in (*STAGES.values(), *STEPS.values()):
        for name in node.outputs:
            if name in made:
                raise ValueError(f"artifact {name} is written by both {made[name]} and {node.name}")
            made[name] = node.name
    return made


def external(artifact: str, options: RenderOptions) -> bool:
    """The artifact comes from the models store of models_from s3/pvc, not from a task of the run."""
    return options.models_from != "fetch" and artifact in MODEL_STORES


def stage_args(stage: Stage, version: str) -> list[str]:
    """Arguments after `stage.command`: profile, config file, directories, the per-run flags."""
    args = ["--profile", parameter_ref("profile"), "--config", CONFIG_PATH, *stage.io_args()]
    for name in stage.uploads:  # set, the files must arrive: Argo skips an optional artifact it does not find
        args += [f"--{name}-from", upload_key(name)]
    for param in run_parameters(version):
        if param.flag:
            args += [f"--{param.flag}", parameter_ref(param.name)]
    if stage.name == FANOUT_STAGE:
        args += [
            "--generate.shards",
            parameter_ref(SHARDS_PARAM),
            "--generate.shard",
            f"{{{{inputs.parameters.{SHARD_PARAM}}}}}",
        ]
    return args


def retry_strategy(any_failure: bool) -> RetryStrategy:
    """Always-retry templates still skip exit 2: a user error (bad config, a damaged release) that a rerun repeats."""
    if not any_failure:
        return RetryStrategy(limit=RETRY_LIMIT, retry_policy="OnError", backoff=BACKOFF)
    return RetryStrategy(limit=RETRY_LIMIT, retry_policy="Always", expression=NOT_A_USER_ERROR, backoff=BACKOFF)


def config_artifact() -> RawArtifact:
    return RawArtifact(name=CONFIG_ARTIFACT, path=CONFIG_PATH, data=parameter_ref("config"))


def input_artifacts(stage: Stage, options: RenderOptions) -> list[Artifact]:
    made_by = producers()
    inputs: list[Artifact] = [config_artifact()]
    for name in stage.inputs:
        if external(name, options) and options.models_from == "pvc":
            continue  # a read-only volume mount at the same path (container_template)
        if external(name, options):  # filled once by kolora-fetch-models
            inputs.append(S3Artifact(name=name, path=stage.input_path(name), key=store_key(name)))
        elif made_by[name] == FANOUT_STAGE:  # every shard, read as one directory of shard-<n>/ subdirectories
            inputs.append(S3Artifact(name=name, path=stage.input_path(name), key=output_key(name)))
        else:  # passed by the DAG task (`from`)
            inputs.append(Artifact(name=name, path=stage.input_path(name), optional=name in stage.optional or None))
    for name in stage.uploads:  # the user's own files at a parameter's key; '' = not supplied (Argo then skips it)
        inputs.append(S3Artifact(name=name, path=stage.input_path(name), key=upload_key(name), optional=True))
    return inputs


def output_parameters(stage: Stage) -> list[HeraParameter]:
    return [
        HeraParameter(
            name=param,
            value_from=ValueFrom(path=f"{stage.output_path(artifact)}/{file}", default=PARAMETER_DEFAULTS.get(param, "")),
            global_name=param if param in GLOBAL_OUTPUTS else None,
        )
        for param, (artifact, file) in stage.parameters.items()
    ]


def output_artifacts(stage: Stage, options: RenderOptions) -> list[Artifact]:
    """Outputs; fetch-models outside `models_from="fetch"` (kolora-fetch-models) writes the S3 keys or the PVC."""
    if stage.name == MODELS_STAGE and options.models_from == "pvc":
        return []

    def key(name: str) -> str:
        if stage.name == MODELS_STAGE and options.models_from == "s3":
            return store_key(name)
        return shard_key(name) if stage.name == FANOUT_STAGE else output_key(name)

    return [
        S3Artifact(name=name, path=stage.output_path(name), key=key(name), archive=NoneArchiveStrategy())
        for name in stage.outputs
    ]


def resumable_artifacts(stage: Stage, output: bool) -> list[S3Artifact]:
    """The stage's resumable outputs, as the optional output of every attempt and the optional input of the next."""
    found = []
    for name in stage.resumable:
        key = output_key(f"{stage.name}-{name}") + (
            f"/shard-{{{{inputs.parameters.{SHARD_PARAM}}}}}" if stage.name == FANOUT_STAGE else ""
        )
        archive = NoneArchiveStrategy() if output else None
        found.append(S3Artifact(name=name, path=stage.output_path(name), key=key, optional=True, archive=archive))
    return found


COMPILE_CACHE_ARTIFACT = "compile-cache"


def compile_cache_artifacts(stage: Stage, options: RenderOptions, output: bool) -> list[S3Artifact]:
    """models_from="s3": the kept compile cache as an optional input and an optional output at its key, so a step
    starts from what the last one compiled (inductor's cache files are content-addressed: shards writing the
    same key at once write the same bytes)."""
    if not (stage.compiles and options.keeps_compile_cache and options.models_from == "s3"):
        return []
    key = parameter_ref(COMPILE_CACHE_KEY_PARAM)
    archive = NoneArchiveStrategy() if output else None
    return [S3Artifact(name=COMPILE_CACHE_ARTIFACT, path=COMPILE_CACHE_PATH, key=key, optional=True, archive=archive)]


def models_volume(options: RenderOptions, read_only: bool) -> Volume:
    """The models claim; read-write for the readers too when it keeps the compile cache (their models and scorers
    mounts stay read-only)."""
    read_only = read_only and not options.keeps_compile_cache
    claim = PersistentVolumeClaimVolumeSource(claim_name=options.models_pvc, read_only=read_only or None)
    return Volume(name=MODELS_VOLUME, persistent_volume_claim=claim)


def _store_mounts(stage: Stage, options: RenderOptions) -> list[VolumeMount]:
    """models_from="pvc": the readers' read-only subPath mounts; the writer (fetch-models) mounts the claim's root."""
    if options.models_from != "pvc":
        return []
    if stage.name == MODELS_STAGE:
        return [VolumeMount(name=MODELS_VOLUME, mount_path=f"{CONTAINER_ROOT}/outputs")]
    mounts = [
        VolumeMount(name=MODELS_VOLUME, mount_path=stage.input_path(name), sub_path=MODEL_STORES[name][1], read_only=True)
        for name in stage.inputs
        if name in MODEL_STORES
    ]
    if stage.compiles and options.keeps_compile_cache:
        mounts.append(VolumeMount(name=MODELS_VOLUME, mount_path=COMPILE_CACHE_PATH, sub_path=COMPILE_CACHE_SUBPATH))
    return mounts


def _step_template(name: str, options: RenderOptions, image: str, gpu: bool = False, **fields) -> Container:
    """What every container template shares: image, pull policy, size, writable volumes, security context, label."""
    size = options.size(name)
    gpu = gpu and options.on_gpus
    return Container(
        name=name,
        image=pods.image(image),
        image_pull_policy="IfNotPresent",
        resources=pods.resources(size, options.gpus if gpu else 0),
        security_context=pods.container_security(),
        active_deadline_seconds=size.deadline_s,
        tolerations=[Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in options.tolerations]
        if gpu
        else None,
        node_selector=dict(options.node_selector) or None if gpu else None,
        labels={"kolora.dev/stage": name},
        **fields,
    )


def container_template(stage: Stage, options: RenderOptions) -> Container:
    """The stage's container template (module docstring)."""
    mounts = [*pods.mounts(), *_store_mounts(stage, options)]
    volumes = None
    if stage.gpu:
        mounts.append(VolumeMount(name=SHM_VOLUME, mount_path="/dev/shm"))
        shm = options.shm_size if options.on_gpus else "1Gi"
        volumes = [Volume(name=SHM_VOLUME, empty_dir=EmptyDirVolumeSource(medium="Memory", size_limit=shm))]
    env = [EnvVar(name="PYTHONUNBUFFERED", value="1")]
    if stage.compiles and options.keeps_compile_cache:  # train/generate.compile_cache_dir null -> this directory
        env.append(EnvVar(name=COMPILE_CACHE_ENV, value=COMPILE_CACHE_PATH))
    if stage.downloads:  # from the hub; the token is optional (public repos need none)
        secret = SecretKeySelector(name=options.hub_secret, key=options.hub_secret_key, optional=True)
        env.append(EnvVar(name="MODELSCOPE_API_TOKEN", value_from=EnvVarSource(secret_key_ref=secret)))
    inputs: list = [
        *input_artifacts(stage, options),
        *resumable_artifacts(stage, output=False),
        *compile_cache_artifacts(stage, options, output=False),
    ]
    if stage.name == FANOUT_STAGE:
        inputs.insert(0, HeraParameter(name=SHARD_PARAM))
    outputs = [
        *output_artifacts(stage, options),
        *resumable_artifacts(stage, output=True),
        *compile_cache_artifacts(stage, options, output=True),
        *output_parameters(stage),
    ]
    return _step_template(
        stage.name,
        options,
        stage.image,
        gpu=stage.gpu,
        command=stage.command,
        args=stage_args(stage, options.version),
        env=env,
        inputs=inputs,
        outputs=outputs or None,
        volume_mounts=mounts,
        volumes=volumes,
        retry_strategy=retry_strategy(stage.gpu or stage.downloads),
        metrics=metrics.stage_metrics(stage),
        pod_spec_patch=grace_patch(options) if stage.resumable else None,
    )


def grace_patch(options: RenderOptions) -> str:
    """The pod's grace between SIGTERM and SIGKILL, stated rather than left to Kubernetes' default: the stage
    saves its resumable state at SIGTERM and Argo's wait container must still upload it (docs/guarantees.md)."""
    return json.dumps({"terminationGracePeriodSeconds": options.termination_grace_s})


def store_env(options: RenderOptions) -> list[EnvVar]:
    """The release store's keys, only from the Secret; optional, so IRSA / workload identity work without one."""
    keys = {"access": options.s3_secret_access_key, "secret": options.s3_secret_secret_key}
    return [
        EnvVar(
            name=env,
            value_from=EnvVarSource(secret_key_ref=SecretKeySelector(name=options.s3_secret, key=keys[which], optional=True)),
        )
        for env, which in STORE_ENV
    ]


def step_template(step: Step, options: RenderOptions) -> Container:
    """The container template of a step of workflows.steps."""
    env = [EnvVar(name="PYTHONUNBUFFERED", value="1"), *(store_env(options) if step.store else [])]
    inputs = [*([config_artifact()] if step.config else []), *(Artifact(name=n, path=step.input_path(n)) for n in step.inputs)]
    outputs = [
        S3Artifact(name=n, path=step.output_path(n), key=output_key(n), archive=NoneArchiveStrategy()) for n in step.outputs
    ]
    return _step_template(
        step.name,
        options,
        step.image,
        command=step.command,
        args=list(step.args),
        env=env,
        inputs=inputs or None,
        outputs=outputs or None,
        volume_mounts=pods.mounts(),
        retry_strategy=retry_strategy(step.retry_any),
    )
