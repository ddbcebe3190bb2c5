"""CronWorkflow `kolora-nightly`: retrain every night on the latest data with the `full` profile.

    argo cron create -n argo workflows/dist/kolora-nightly.yaml

Each night it submits the `kolora-pipeline` WorkflowTemplate. The dataset parameter is left to the
profile, whose `ingest.revision` is null, so ingest reads the newest revision of the dataset. It sets
`on-unchanged=skip`: a night whose trainset and training config equal the champion's ends "unchanged" without
training (no GPU spent). `dataset-key` is '' (the profile's dataset); set to a prefix of your own images in the
artifact repository (the chart's `cron.datasetKey`), each night reads what is there, so images synced into it
since the last release make a changed trainset and a retrain.
`Forbid` skips a night while the previous run still trains; a run the controller could not start
within `startingDeadlineSeconds` of 02:00 UTC (controller down) is skipped rather than started late.
"""

from __future__ import annotations

from hera.workflows import CronWorkflow, Parameter
from hera.workflows.models import WorkflowMetadata, WorkflowTemplateRef

from workflows.options import DATASET_KEY_PARAM, NIGHTLY_NAME, TEMPLATE_NAME, RenderOptions

SCHEDULES = ["0 2 * * *"]
TIMEZONE = "UTC"


def build(options: RenderOptions | None = None) -> CronWorkflow:
    options = options or RenderOptions()
    labels = {"app.kubernetes.io/name": "kolora", "app.kubernetes.io/version": options.version}
    return CronWorkflow(
        name=NIGHTLY_NAME,
        labels={**labels, "app.kubernetes.io/component": "nightly"},
        schedules=SCHEDULES,
        timezone=TIMEZONE,
        concurrency_policy="Forbid",
        starting_deadline_seconds=3600,
        successful_jobs_history_limit=7,
        failed_jobs_history_limit=7,
        workflow_template_ref=WorkflowTemplateRef(name=TEMPLATE_NAME),
        workflow_metadata=WorkflowMetadata(labels={**labels, "kolora.dev/trigger": "nightly"}),
        arguments=[
            Parameter(name="profile", value="full"),
            Parameter(name="on-unchanged", value="skip"),
            Parameter(name=DATASET_KEY_PARAM, value=""),
        ],
    )
