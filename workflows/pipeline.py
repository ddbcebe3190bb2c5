"""WorkflowTemplate `kolora-pipeline`: the production graph of one kolora run on Argo Workflows.

    ingest -> filter -+-> train -+-> generate (one pod per prompt shard) -> evaluate -> publish -> promote
    fetch-models -----+----------+
    (evaluate also reads filter's filter-report and train's lora; publish reads train's lora and evaluate's report)

Every stage's container template is built from `kolora_core.stages.STAGES` (command, `--<artifact> <path>`
arguments, artifact names and container paths, image, GPU need), so the workflow, the stage CLIs
and the images cannot drift. Every step receives the whole run config: the `config` workflow
parameter as a raw artifact at `CONFIG_PATH`, `--profile`, and one `--section.field` flag per
user parameter ('' keeps the profile's value), so all stages resolve the same config.

Outputs are key-only S3 artifacts (`{{workflow.name}}/<artifact>`) in the namespace's default
artifact repository, stored file by file (`archive: none`) so MinIO/S3 and the Argo UI can browse
them. The generate shards write `{{workflow.name}}/images/shard-<n>`; evaluate reads the whole
`{{workflow.name}}/images` prefix. Its `gate` output parameter is `passed`/`failed` (`skipped`
when evaluate did not run).

Promotion: `publish` runs only when the gate is `passed` (`when`; otherwise it is Skipped and the run still
succeeds) and assembles the release directory; `promote` (not a stage: no stage may read the store) then runs
`kolora publish`, which uploads it to `<publish-prefix>/<name>/<version>/` + `latest.json` in the bucket of
the `s3-endpoint`/`s3-bucket` parameters, never overwriting a published version. Its S3 keys come only from
the Secret `RenderOptions.s3_secret`. The local runner does not execute `promote`: it promotes itself after a
Succeeded run (kolora_core/runner/local.py, docs/argo.md).

Train resume: the train step has an optional input and output artifact `checkpoints`
(`{{workflow.name}}/train-checkpoints`, at `<lora output>/checkpoints`). Argo uploads outputs even when the
main container failed, so a retried train pod starts from the previous attempt's newest checkpoint.

Model weights (`RenderOptions.models_from`, docs/argo.md "Model weights"): `fetch` (default) runs fetch-models
in every run and passes its `models` output; `s3` drops that task and train/generate read `models` as a key-only
S3 artifact at the `models-key` workflow parameter; `pvc` drops it and mounts the claim `RenderOptions.models_pvc`
read-only at the `models` input path. `workflows.fetch_models` fills the key or the claim once.

Render with `python -m workflows.render` (or `kolora render`); the YAML is in `workflows/dist/`.
"""

from __future__ import annotations

from hera.workflows import DAG, Artifact, Container, RawArtifact, S3Artifact, Task, WorkflowTemplate
from hera.workflows import Parameter as HeraParameter
from hera.workflows.archive import NoneArchiveStrategy
from hera.workflows.models import (
    ArtifactRepositoryRef,
    Backoff,
    Capabilities,
    EmptyDirVolumeSource,
    EnvVar,
    EnvVarSource,
    LabelValueFrom,
    Metadata,
    PersistentVolumeClaimVolumeSource,
    PodGC,
    PodSecurityContext,
    ResourceRequirements,
    RetryStrategy,
    SeccompProfile,
    SecretKeySelector,
    SecurityContext,
    Sequence,
    Toleration,
    TTLStrategy,
    ValueFrom,
    Volume,
    VolumeMount,
    WorkflowMetadata,
)

from kolora_core.errors import KoloraError
from kolora_core.stages import CONFIG_ARTIFACT, CONFIG_PATH, CONTAINER_ROOT, STAGES, Stage
from workflows.options import (
    MODELS_KEY_PARAM,
    MODELS_VOLUME,
    SHM_VOLUME,
    TEMPLATE_NAME,
    WORK_VOLUME,
    RenderOptions,
    run_parameters,
    workflow_parameters,
)

ENTRYPOINT = "pipeline"
FANOUT_STAGE = "generate"  # one task per prompt shard (`generate.shards` / `generate.shard` config fields)
SHARD_PARAM = "shard"
SHARDS_PARAM = "generate-shards"
GATE_STAGE, GATE_PARAM = "evaluate", "gate"
GATE_SKIPPED = "skipped"
# The `when` of the publish task: release the LoRA only when evaluate's gate passed.
GATE_PASSED = f"{{{{tasks.{GATE_STAGE}.outputs.parameters.{GATE_PARAM}}}}} == passed"
PUBLISH_STAGE, RELEASE_ARTIFACT = "publish", "release"
PROMOTE = "promote"  # the step after publish that uploads the release; run by the local runner itself
PROMOTE_IMAGE = "evaluate"  # publish's own image; the one kolora image that ships boto3 for `kolora publish`
CHECKPOINT_STAGE, CHECKPOINT_ARTIFACT, CHECKPOINT_OF = "train", "checkpoints", "lora"
# The local runner copies these `<task>/<artifact>` outputs into runs/<id>/.
SUMMARY_ARTIFACTS = "evaluate/report,filter/filter-report,train/lora"
RUN_UID = 10001
MODELS_STAGE, MODELS_ARTIFACT = "fetch-models", "models"
MODELS_KEY = f"{{{{workflow.parameters.{MODELS_KEY_PARAM}}}}}"

# Retries. limit 2 with 30 s, 60 s back-off. No maxDuration: Argo measures it from the FIRST attempt's
# start, so a 3-hour train that fails would never be retried.
# - GPU steps (spot/preemptible nodes) and steps without inputs (they download from ModelScope) retry
#   on any failure: a preempted or evicted pod shows as Failed (SIGTERM, exit 143/137) as often as Error,
#   and network downloads fail transiently. The expression skips KoloraError's exit code: that is a
#   user-fixable error (bad config, missing input) that a rerun repeats, and a GPU retry re-downloads
#   the 18 GB model folder first.
# - the other CPU steps compute deterministically on stored inputs: a non-zero exit would repeat, so
#   they retry only Argo/infrastructure errors (pod deleted, node lost, artifact upload failed).
RETRY_LIMIT = 2
BACKOFF = Backoff(duration="30s", factor=2)
NOT_A_USER_ERROR = f"lastRetry.status == 'Error' || lastRetry.exitCode != '{KoloraError.exit_code}'"


def image(stage: Stage) -> str:
    return f"{{{{workflow.parameters.image-registry}}}}/kolora-{stage.image}:{{{{workflow.parameters.image-tag}}}}"


def output_key(name: str) -> str:
    return f"{{{{workflow.name}}}}/{name}"


def shard_key(artifact: str) -> str:
    return output_key(f"{artifact}/shard-{{{{inputs.parameters.{SHARD_PARAM}}}}}")


def pipeline_stages(options: RenderOptions) -> dict[str, Stage]:
    """The stages that are tasks of the DAG: all but fetch-models when the models come from S3 or a PVC."""
    if options.models_from == "fetch":
        return dict(STAGES)
    return {name: stage for name, stage in STAGES.items() if name != MODELS_STAGE}


def external_models(stage: Stage, options: RenderOptions) -> bool:
    """The stage reads `models` from the S3 key or the PVC instead of the fetch-models task."""
    return options.models_from != "fetch" and MODELS_ARTIFACT in stage.inputs


def producers() -> dict[str, str]:
    """Artifact name -> the stage that writes it."""
    made: dict[str, str] = {}
    for stage in STAGES.values():
        for name in stage.outputs:
            if name in made:
                raise ValueError(f"artifact {name} is written by both {made[name]} and {stage.name}")
            made[name] = stage.name
    return made


def stage_args(stage: Stage, version: str) -> list[str]:
    """Arguments after `stage.command`: profile, config file, directories, the per-run flags."""
    args = ["--profile", "{{workflow.parameters.profile}}", "--config", CONFIG_PATH, *stage.io_args()]
    for param in run_parameters(version):
        if param.flag:
            args += [f"--{param.flag}", f"{{{{workflow.parameters.{param.name}}}}}"]
    if stage.name == FANOUT_STAGE:
        args += [
            "--generate.shards",
            f"{{{{workflow.parameters.{SHARDS_PARAM}}}}}",
            "--generate.shard",
            f"{{{{inputs.parameters.{SHARD_PARAM}}}}}",
        ]
    return args


def retry_strategy(stage: Stage) -> RetryStrategy:
    if stage.gpu or not stage.inputs:
        return RetryStrategy(limit=RETRY_LIMIT, retry_policy="Always", expression=NOT_A_USER_ERROR, backoff=BACKOFF)
    return RetryStrategy(limit=RETRY_LIMIT, retry_policy="OnError", backoff=BACKOFF)


def resources(stage: Stage, options: RenderOptions) -> ResourceRequirements:
    size = options.size(stage.name)
    requests = {"cpu": size.cpu, "memory": size.memory}
    if size.ephemeral:
        requests["ephemeral-storage"] = size.ephemeral
    limits = {"memory": size.memory_limit}
    if stage.gpu and options.gpu:
        limits["nvidia.com/gpu"] = str(options.gpus)
    return ResourceRequirements(requests=requests, limits=limits)


def input_artifacts(stage: Stage, options: RenderOptions) -> list[Artifact]:
    config = RawArtifact(name=CONFIG_ARTIFACT, path=CONFIG_PATH, data="{{workflow.parameters.config}}")
    made_by = producers()
    inputs: list[Artifact] = [config]
    for name in stage.inputs:
        if name == MODELS_ARTIFACT and options.models_from == "pvc":
            continue  # a read-only volume mount at the same path (container_template)
        if name == MODELS_ARTIFACT and options.models_from == "s3":  # filled once by kolora-fetch-models
            inputs.append(S3Artifact(name=name, path=stage.input_path(name), key=MODELS_KEY))
        elif made_by[name] == FANOUT_STAGE:  # every shard, read as one directory of shard-<n>/ subdirectories
            inputs.append(S3Artifact(name=name, path=stage.input_path(name), key=output_key(name)))
        else:  # passed by the DAG task (`from`)
            inputs.append(Artifact(name=name, path=stage.input_path(name)))
    return inputs


def output_artifacts(stage: Stage, options: RenderOptions) -> list[Artifact | HeraParameter]:
    """Outputs; fetch-models outside `models_from="fetch"` (kolora-fetch-models) writes the S3 key or the PVC."""

    def key(name: str) -> str:
        if stage.name == MODELS_STAGE and options.models_from == "s3":
            return MODELS_KEY
        return shard_key(name) if stage.name == FANOUT_STAGE else output_key(name)

    outputs: list[Artifact | HeraParameter] = [
        S3Artifact(name=name, path=stage.output_path(name), key=key(name), archive=NoneArchiveStrategy())
        for name in stage.outputs
        if not (stage.name == MODELS_STAGE and options.models_from == "pvc")
    ]
    for param, (artifact, file) in stage.parameters.items():
        # default: a skipped or failed step must still resolve (Argo v4.0.7+/v3.7.16+ fail the node otherwise)
        outputs.append(
            HeraParameter(name=param, value_from=ValueFrom(path=f"{stage.output_path(artifact)}/{file}", default=GATE_SKIPPED))
        )
    return outputs


def checkpoints_artifact(stage: Stage, output: bool) -> S3Artifact:
    """Train's resumable states across pod retries: `<lora output>/checkpoints`, where the train stage keeps them.

    Output: uploaded after every attempt, also a failed one (Argo saves outputs when the main container
    fails). Input: downloaded by the next attempt, absent on the first (optional). Both optional: a run
    without `train.checkpoint_every` writes none. A pod killed before its wait container uploads loses
    that attempt's states (the previous attempt's stay in the store).
    """
    path = f"{stage.output_path(CHECKPOINT_OF)}/{CHECKPOINT_ARTIFACT}"
    key = output_key(f"{stage.name}-{CHECKPOINT_ARTIFACT}")
    if output:
        return S3Artifact(name=CHECKPOINT_ARTIFACT, path=path, key=key, optional=True, archive=NoneArchiveStrategy())
    return S3Artifact(name=CHECKPOINT_ARTIFACT, path=path, key=key, optional=True)


def promote_template(options: RenderOptions) -> Container:
    """`kolora publish` of publish's release into the run's bucket; S3 keys only from the Secret."""
    size = options.size(PROMOTE)
    release_path = f"{CONTAINER_ROOT}/inputs/{RELEASE_ARTIFACT}"
    requests = {"cpu": size.cpu, "memory": size.memory}
    if size.ephemeral:
        requests["ephemeral-storage"] = size.ephemeral

    def secret(env: str, key: str) -> EnvVar:
        # optional: with IRSA/workload identity (chart `s3.useSDKCreds`) there is no Secret and boto3 finds the keys
        ref = SecretKeySelector(name=options.s3_secret, key=key, optional=True)
        return EnvVar(name=env, value_from=EnvVarSource(secret_key_ref=ref))

    return Container(
        name=PROMOTE,
        image=f"{{{{workflow.parameters.image-registry}}}}/kolora-{PROMOTE_IMAGE}:{{{{workflow.parameters.image-tag}}}}",
        image_pull_policy="IfNotPresent",
        command=["python", "-m", "kolora_core.cli", "publish"],
        args=[
            "--release",
            release_path,
            "--s3-endpoint",
            "{{workflow.parameters.s3-endpoint}}",
            "--bucket",
            "{{workflow.parameters.s3-bucket}}",
            "--prefix",
            "{{workflow.parameters.publish-prefix}}",
        ],
        env=[
            EnvVar(name="PYTHONUNBUFFERED", value="1"),
            secret("AWS_ACCESS_KEY_ID", options.s3_secret_access_key),
            secret("AWS_SECRET_ACCESS_KEY", options.s3_secret_secret_key),
        ],
        inputs=[Artifact(name=RELEASE_ARTIFACT, path=release_path)],
        resources=ResourceRequirements(requests=requests, limits={"memory": size.memory_limit}),
        volume_mounts=[VolumeMount(name=WORK_VOLUME, mount_path=CONTAINER_ROOT)],
        security_context=SecurityContext(
            run_as_non_root=True,
            allow_privilege_escalation=False,
            capabilities=Capabilities(drop=["ALL"]),
        ),
        # publishing is idempotent (a published version is only accepted again), so any failure may retry
        retry_strategy=RetryStrategy(limit=RETRY_LIMIT, retry_policy="Always", backoff=BACKOFF),
        active_deadline_seconds=size.deadline_s,
        labels={"kolora.dev/stage": PROMOTE},
    )


def models_volume(options: RenderOptions, read_only: bool) -> Volume:
    claim = PersistentVolumeClaimVolumeSource(claim_name=options.models_pvc, read_only=read_only or None)
    return Volume(name=MODELS_VOLUME, persistent_volume_claim=claim)


def container_template(stage: Stage, options: RenderOptions) -> Container:
    """The stage's container template. With `models_from="pvc"` train/generate mount the models claim read-only at
    their `models` input path, and fetch-models (only in kolora-fetch-models) mounts it read-write at its output path."""
    size = options.size(stage.name)
    gpu = stage.gpu and options.gpu
    mounts = [VolumeMount(name=WORK_VOLUME, mount_path=CONTAINER_ROOT)]
    if options.models_from == "pvc" and MODELS_ARTIFACT in stage.inputs:
        mounts.append(VolumeMount(name=MODELS_VOLUME, mount_path=stage.input_path(MODELS_ARTIFACT), read_only=True))
    if options.models_from == "pvc" and stage.name == MODELS_STAGE:
        mounts.append(VolumeMount(name=MODELS_VOLUME, mount_path=stage.output_path(MODELS_ARTIFACT)))
    volumes = None
    if stage.gpu:
        mounts.append(VolumeMount(name=SHM_VOLUME, mount_path="/dev/shm"))
        shm = options.shm_size if options.gpu else "1Gi"
        volumes = [Volume(name=SHM_VOLUME, empty_dir=EmptyDirVolumeSource(medium="Memory", size_limit=shm))]
    env = [EnvVar(name="PYTHONUNBUFFERED", value="1")]
    if not stage.inputs:  # it downloads from the hub; the token is optional (public repos need none)
        secret = SecretKeySelector(name=options.hub_secret, key=options.hub_secret_key, optional=True)
        env.append(EnvVar(name="MODELSCOPE_API_TOKEN", value_from=EnvVarSource(secret_key_ref=secret)))
    inputs: list = input_artifacts(stage, options)
    outputs = output_artifacts(stage, options)
    if stage.name == FANOUT_STAGE:
        inputs.insert(0, HeraParameter(name=SHARD_PARAM))
    if stage.name == CHECKPOINT_STAGE:
        inputs.append(checkpoints_artifact(stage, output=False))
        outputs.append(checkpoints_artifact(stage, output=True))
    return Container(
        name=stage.name,
        image=image(stage),
        image_pull_policy="IfNotPresent",
        command=stage.command,
        args=stage_args(stage, options.version),
        env=env,
        inputs=inputs,
        outputs=outputs or None,
        resources=resources(stage, options),
        volume_mounts=mounts,
        volumes=volumes,
        security_context=SecurityContext(
            run_as_non_root=True,
            allow_privilege_escalation=False,
            capabilities=Capabilities(drop=["ALL"]),
        ),
        retry_strategy=retry_strategy(stage),
        active_deadline_seconds=size.deadline_s,
        tolerations=[Toleration(key=t.key, operator=t.operator, value=t.value, effect=t.effect) for t in options.tolerations]
        if gpu
        else None,
        node_selector=dict(options.node_selector) or None if gpu else None,
        labels={"kolora.dev/stage": stage.name},
    )


def task_arguments(stage: Stage, options: RenderOptions) -> list:
    made_by = producers()
    args: list = [
        Artifact(name=name, from_=f"{{{{tasks.{made_by[name]}.outputs.artifacts.{name}}}}}")
        for name in stage.inputs
        if made_by[name] != FANOUT_STAGE and not (name == MODELS_ARTIFACT and external_models(stage, options))
    ]
    if stage.name == FANOUT_STAGE:
        args.insert(0, HeraParameter(name=SHARD_PARAM, value="{{item}}"))
    return args


def add_promotion_tasks(tasks: dict[str, Task], promote: Container) -> None:
    """`promote` after a Succeeded publish (a Skipped publish, gate not passed, omits it)."""
    tasks[PROMOTE] = Task(
        name=PROMOTE,
        template=promote,
        depends=f"{PUBLISH_STAGE}.Succeeded",
        arguments=[Artifact(name=RELEASE_ARTIFACT, from_=f"{{{{tasks.{PUBLISH_STAGE}.outputs.artifacts.{RELEASE_ARTIFACT}}}}}")],
    )


def workflow_spec(options: RenderOptions, component: str, params: tuple, models_read_only: bool = True) -> dict:
    """The workflow-level fields (everything but the templates) shared by `kolora-pipeline` and `kolora-fetch-models`."""
    repo_ref = None
    if options.artifact_repository_key or options.artifact_repository_configmap != RenderOptions.artifact_repository_configmap:
        repo_ref = ArtifactRepositoryRef(config_map=options.artifact_repository_configmap, key=options.artifact_repository_key)
    app_labels = {"app.kubernetes.io/name": "kolora", "app.kubernetes.io/version": options.version}
    volumes = [Volume(name=WORK_VOLUME, empty_dir=EmptyDirVolumeSource())]
    if options.models_from == "pvc":
        volumes.append(models_volume(options, read_only=models_read_only))
    return dict(
        labels={**app_labels, "app.kubernetes.io/component": component},
        arguments=[HeraParameter(name=p.name, value=p.default, description=p.description, enum=p.enum) for p in params],
        artifact_repository_ref=repo_ref,
        service_account_name=options.service_account,
        volumes=volumes,
        security_context=PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_UID,
            run_as_group=RUN_UID,
            fs_group=RUN_UID,
            seccomp_profile=SeccompProfile(type="RuntimeDefault"),
        ),
        pod_metadata=Metadata(
            labels={**app_labels, "kolora.dev/profile": "{{workflow.parameters.profile}}", "kolora.dev/run": "{{workflow.name}}"}
        ),
        workflow_metadata=WorkflowMetadata(
            labels=app_labels, labels_from={"kolora.dev/profile": LabelValueFrom(expression="workflow.parameters.profile")}
        ),
        active_deadline_seconds=options.workflow_deadline_s,
        pod_gc=PodGC(strategy="OnPodSuccess"),  # failed pods stay for `kubectl logs`/`describe` until the TTL
        ttl_strategy=TTLStrategy(seconds_after_success=3 * 24 * 3600, seconds_after_failure=7 * 24 * 3600),
    )


def build(options: RenderOptions | None = None) -> WorkflowTemplate:
    options = options or RenderOptions()
    stages = pipeline_stages(options)
    spec = workflow_spec(options, "pipeline", workflow_parameters(options))
    with WorkflowTemplate(
        name=TEMPLATE_NAME,
        labels=spec.pop("labels"),
        annotations={
            "kolora.dev/summary-artifacts": SUMMARY_ARTIFACTS,
            "workflows.argoproj.io/description": f"Kolors LoRA fine-tuning: {', '.join(stages)}",
        },
        entrypoint=ENTRYPOINT,
        **spec,
    ) as template:
        containers = {name: container_template(stage, options) for name, stage in stages.items()}
        promote = promote_template(options)
        made_by = producers()
        with DAG(name=ENTRYPOINT):
            tasks: dict[str, Task] = {}
            for name, stage in stages.items():
                needs = sorted({made_by[i] for i in stage.inputs if made_by[i] in stages}, key=list(stages).index)
                if name == PUBLISH_STAGE and GATE_STAGE not in needs:  # its `when` reads the gate
                    needs.append(GATE_STAGE)
                tasks[name] = Task(
                    name=name,
                    template=containers[name],
                    depends=" && ".join(needs) or None,
                    when=GATE_PASSED if name == PUBLISH_STAGE else None,
                    arguments=task_arguments(stage, options) or None,
                    with_sequence=Sequence(count=f"{{{{workflow.parameters.{SHARDS_PARAM}}}}}") if name == FANOUT_STAGE else None,
                )
            add_promotion_tasks(tasks, promote)
    return template
