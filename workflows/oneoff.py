"""Workflow `kolora-run-*`: one run of the `kolora-pipeline` WorkflowTemplate, for `argo submit`.

    argo submit -n argo workflows/dist/kolora-run.yaml -p steps=1000 -p rank=32 --watch

It only references the template and lists the per-run parameters with their defaults so the file
shows what can be changed; `-p name=value` overrides any of them. The image registry and tag are
left to the template, so a run always uses the images the template was rendered for.
"""

from __future__ import annotations

from hera.workflows import Parameter, Workflow
from hera.workflows.models import WorkflowTemplateRef

from workflows.options import ONEOFF_GENERATE_NAME, TEMPLATE_NAME, RenderOptions, workflow_parameters

TEMPLATE_OWNED = ("image-registry", "image-tag")


def build(options: RenderOptions | None = None) -> Workflow:
    options = options or RenderOptions()
    return Workflow(
        generate_name=ONEOFF_GENERATE_NAME,
        labels={"app.kubernetes.io/name": "kolora", "kolora.dev/trigger": "manual"},
        workflow_template_ref=WorkflowTemplateRef(name=TEMPLATE_NAME),
        arguments=[Parameter(name=p.name, value=p.default) for p in workflow_parameters(options) if p.name not in TEMPLATE_OWNED],
    )
