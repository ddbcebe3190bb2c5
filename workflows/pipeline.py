"""WorkflowTemplate `kolora-pipeline`: the production graph of one kolora run on Argo Workflows.

    champion -------------+--------------------------------------------+
    ingest -> filter -> check-changes -> train -> generate (shards) -> evaluate -> publish -> promote
    fetch-models (models, scorers) ------^-----------^-------------------^      (onExit: notify)
    (evaluate also reads filter's filter-report and champion; check-changes reads trainset and champion)

The stages' container templates come from `workflows.templates` (built from `kolora_core.stages`), the other
steps' (champion, promote, notify) from `workflows.steps`. Each task depends on the producers of its input
artifacts and on the task whose output parameter its `when` reads.

Unchanged data: check-changes compares the trainset fingerprint and the training identity with the champion's
release. train runs when they differ or when `on-unchanged` is `train` (the default: a manual run always
trains); the nightly sets `skip`, so an unchanged night skips train. Every task after train depends on
`train.Succeeded` (Argo's bare `train` also accepts Skipped), so a skipped train Omits generate, evaluate,
publish and promote, and the run Succeeds "unchanged" (notify says so).

Promotion: `publish` runs only when the gate is `passed` (`when`; otherwise it is Skipped and the run still
succeeds) and assembles the release; `promote` then uploads it to the release store of the `s3-*` parameters.

Cluster habits: train holds the mutex `kolora-train-<name parameter>`, so a manual run and the nightly never train
one model at once (the second waits); the DAG's `parallelism` bounds the pods running at once, which while
generate runs are its shards alone (`RenderOptions.generate_parallelism`); the pods run with a read-only root
filesystem and no ServiceAccount token (`automountServiceAccountToken: false`; Argo's executor gets its own
through `executor.serviceAccountName`); metrics per `workflows.metrics`.

Render with `python -m workflows.render` (or `kolora render`); the YAML is in `workflows/dist/`.
"""

from __future__ import annotations

from hera.workflows import DAG, Artifact, Task, WorkflowTemplate
from hera.workflows import Parameter as HeraParameter
from hera.workflows.models import (
    ArtifactRepositoryRef,
    ExecutorConfig,
    LabelValueFrom,
    Metadata,
    Mutex,
    PodGC,
    Sequence,
    Synchronization,
    TTLStrategy,
    WorkflowMetadata,
)

from kolora_core.stages import STAGES, Stage
from workflows import metrics, pods
from workflows.options import TEMPLATE_NAME, RenderOptions, workflow_parameters
from workflows.steps import EXIT_HANDLER, STEPS, STORE_SECRET_ANNOTATION, Step
from workflows.templates import (
    FANOUT_STAGE,
    MODELS_STAGE,
    SHARD_PARAM,
    SHARDS_PARAM,
    container_template,
    external,
    models_volume,
    producers,
    step_template,
)

ENTRYPOINT = "pipeline"
TRAIN_STAGE = "train"
GATE_STAGE, GATE_PARAM = "evaluate", "gate"
PUBLISH_STAGE, PROMOTE = "publish", "promote"
# `when` of the tasks that may be Skipped; their dependents depend on `<task>.Succeeded`.
WHEN = {
    TRAIN_STAGE: "{{tasks.check-changes.outputs.parameters.training}} == changed"
    " || {{workflow.parameters.on-unchanged}} == train",
    PUBLISH_STAGE: f"{{{{tasks.{GATE_STAGE}.outputs.parameters.{GATE_PARAM}}}}} == passed",
}
# Tasks a `when` reads an output parameter of (besides the producers of the task's inputs).
WHEN_READS = {TRAIN_STAGE: ("check-changes",), PUBLISH_STAGE: (GATE_STAGE,)}
GATE_PASSED = WHEN[PUBLISH_STAGE]
TRAIN_MUTEX = "kolora-train-{{workflow.parameters.name}}"
# The local runner copies these `<task>/<artifact>` outputs into runs/<id>/.
SUMMARY_ARTIFACTS = "evaluate/report,filter/filter-report,train/lora"


def pipeline_stages(options: RenderOptions) -> dict[str, Stage | Step]:
    """Task name -> its Stage or Step, in the DAG's order: fetch-models only when the models are fetched per run."""
    nodes: dict[str, Stage | Step] = {}
    for name, stage in STAGES.items():
        if name == MODELS_STAGE and options.models_from != "fetch":
            continue
        if name == "check-changes":
            nodes[STEPS["champion"].name] = STEPS["champion"]
        nodes[name] = stage
    nodes[PROMOTE] = STEPS[PROMOTE]
    return nodes


def dependencies(name: str, node: Stage | Step, order: list[str]) -> list[str]:
    """`depends` terms of a task: the producers of its inputs and what its `when` reads; `X.Succeeded` for a task
    X that may be Skipped."""
    made_by = producers()
    needs = {made_by[i] for i in node.inputs if made_by[i] in order} | set(WHEN_READS.get(name, ()))
    return [f"{n}.Succeeded" if n in WHEN else n for n in sorted(needs, key=order.index)]


def task_arguments(name: str, node: Stage | Step, options: RenderOptions) -> list:
    made_by = producers()
    args: list = [
        Artifact(name=art, from_=f"{{{{tasks.{made_by[art]}.outputs.artifacts.{art}}}}}")
        for art in node.inputs
        if made_by[art] != FANOUT_STAGE and not external(art, options)
    ]
    if name == FANOUT_STAGE:
        args.insert(0, HeraParameter(name=SHARD_PARAM, value="{{item}}"))
    return args


def store_secret_annotation(options: RenderOptions) -> str:
    return f"{options.s3_secret}:{options.s3_secret_access_key}:{options.s3_secret_secret_key}"


def workflow_spec(options: RenderOptions, component: str, params: tuple, models_read_only: bool = True) -> dict:
    """The workflow-level fields (everything but the templates) shared by `kolora-pipeline` and `kolora-fetch-models`."""
    repo_ref = None
    if options.artifact_repository_key or options.artifact_repository_configmap != RenderOptions.artifact_repository_configmap:
        repo_ref = ArtifactRepositoryRef(config_map=options.artifact_repository_configmap, key=options.artifact_repository_key)
    app_labels = {"app.kubernetes.io/name": "kolora", "app.kubernetes.io/version": options.version}
    volumes = pods.volumes()
    if options.models_from == "pvc":
        volumes.append(models_volume(options, read_only=models_read_only))
    return dict(
        labels={**app_labels, "app.kubernetes.io/component": component},
        arguments=[HeraParameter(name=p.name, value=p.default, description=p.description, enum=p.enum) for p in params],
        artifact_repository_ref=repo_ref,
        service_account_name=options.service_account,
        # the step containers get no token; Argo's executor (init/wait containers) gets this ServiceAccount's
        automount_service_account_token=False,
        executor=ExecutorConfig(service_account_name=options.service_account or "default"),
        volumes=volumes,
        security_context=pods.pod_security(),
        pod_metadata=Metadata(
            labels={**app_labels, "kolora.dev/profile": "{{workflow.parameters.profile}}", "kolora.dev/run": "{{workflow.name}}"}
        ),
        workflow_metadata=WorkflowMetadata(
            labels=app_labels, labels_from={"kolora.dev/profile": LabelValueFrom(expression="workflow.parameters.profile")}
        ),
        active_deadline_seconds=options.workflow_deadline_s,
        pod_gc=PodGC(strategy="OnPodSuccess"),  # failed pods stay for `kubectl logs`/`describe` until the TTL
        ttl_strategy=TTLStrategy(seconds_after_success=3 * 24 * 3600, seconds_after_failure=7 * 24 * 3600),
        archive_logs=options.archive_logs or None,
    )


def build(options: RenderOptions | None = None) -> WorkflowTemplate:
    options = options or RenderOptions()
    nodes = pipeline_stages(options)
    order = list(nodes)
    spec = workflow_spec(options, "pipeline", workflow_parameters(options))
    with WorkflowTemplate(
        name=TEMPLATE_NAME,
        labels=spec.pop("labels"),
        annotations={
            "kolora.dev/summary-artifacts": SUMMARY_ARTIFACTS,
            STORE_SECRET_ANNOTATION: store_secret_annotation(options),
            "workflows.argoproj.io/description": f"Kolors LoRA fine-tuning: {', '.join(order)}",
        },
        entrypoint=ENTRYPOINT,
        on_exit=EXIT_HANDLER,
        metrics=metrics.workflow_metrics(),
        **spec,
    ) as template:
        containers = {
            name: container_template(node, options) if isinstance(node, Stage) else step_template(node, options)
            for name, node in nodes.items()
        }
        containers[TRAIN_STAGE].synchronization = Synchronization(mutexes=[Mutex(name=TRAIN_MUTEX)])
        step_template(STEPS[EXIT_HANDLER], options)
        with DAG(name=ENTRYPOINT, parallelism=options.generate_parallelism):
            for name, node in nodes.items():
                Task(
                    name=name,
                    template=containers[name],
                    depends=" && ".join(dependencies(name, node, order)) or None,
                    when=WHEN.get(name),
                    arguments=task_arguments(name, node, options) or None,
                    with_sequence=Sequence(count=f"{{{{workflow.parameters.{SHARDS_PARAM}}}}}") if name == FANOUT_STAGE else None,
                )
    return template
