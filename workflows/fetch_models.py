"""Workflow `kolora-fetch-models-*`: download the base model weights and the scorers once into the store the runs read.

    argo submit -n argo workflows/dist/kolora-fetch-models.yaml --watch        # models_from="s3" (committed)
    kolora render --models-from pvc --out pvc/ && argo submit -n argo pvc/kolora-fetch-models.yaml --watch

Only for `RenderOptions.models_from` "s3" or "pvc" (docs/argo.md "Model weights"). It runs the pipeline's own
fetch-models container template (`workflows.templates.container_template`), whose `models` and `scorers` outputs go
- s3: as key-only artifacts (`archive: none`, file by file) to the keys of the `models-key` and `scorers-key`
  parameters, the keys the pipeline's train/generate and evaluate read (same parameters, same defaults);
- pvc: onto the claim `RenderOptions.models_pvc`, whose root is mounted read-write at /kolora/outputs (no
  artifact): the claim holds `models/` and `scorers/`, which the pipeline mounts read-only with those subPaths.
Each directory ends with the `_SUCCESS` marker the stages check. Rerun it with another `model-source`/`profile`
(`-p model-source=tiny` for test models) to replace the contents; no pipeline run may read them meanwhile.
"""

from __future__ import annotations

from hera.workflows import Workflow

from kolora_core.stages import STAGES
from workflows.options import (
    FETCH_MODELS_GENERATE_NAME,
    MODELS_KEY_PARAM,
    SCORERS_KEY_PARAM,
    RenderOptions,
    workflow_parameters,
)
from workflows.pipeline import workflow_spec
from workflows.templates import MODELS_STAGE, container_template

OWN_PARAMETERS = ("profile", "config", "image-registry", "image-tag", MODELS_KEY_PARAM, SCORERS_KEY_PARAM)


def build(options: RenderOptions | None = None) -> Workflow:
    options = options or RenderOptions()
    if options.models_from == "fetch":
        raise ValueError('kolora-fetch-models is for models_from "s3" or "pvc"; with "fetch" every run fetches the models')
    # only the parameters its template reads: the stage flags (all stages resolve the same config) and the workflow's own
    params = tuple(p for p in workflow_parameters(options) if p.flag or p.name in OWN_PARAMETERS)
    spec = workflow_spec(options, "fetch-models", params, models_read_only=False)
    with Workflow(
        generate_name=FETCH_MODELS_GENERATE_NAME,
        labels=spec.pop("labels"),
        annotations={"workflows.argoproj.io/description": f"Kolors base model weights and scorers -> {store(options)}"},
        entrypoint=MODELS_STAGE,
        **spec,
    ) as workflow:
        container_template(STAGES[MODELS_STAGE], options)
    return workflow


def store(options: RenderOptions) -> str:
    if options.models_from == "s3":
        return "the artifact repository keys of the models-key and scorers-key parameters"
    return f"the PersistentVolumeClaim {options.models_pvc}"
