"""Prometheus metrics the Argo controller emits for kolora runs (docs/argo.md "Metrics").

Argo exports custom metrics on the controller's metrics endpoint (`workflow-controller-metrics:9090/metrics`),
prefixed with `argo_workflows_` and without unit or `_total` suffixes (v3.6+, its OpenTelemetry exporter).

- `kolora_run_duration_seconds` (gauge, workflow level, at the end): the run's duration, labels `profile`, `status`.
- `kolora_gate` (counter, evaluate): one per finished evaluation, labels `profile`, `gate` (passed/failed/skipped).
- `kolora_mean_aesthetic` (gauge, evaluate): the candidate's mean aesthetic score, label `profile`; only when the
  gate was decided (a skipped gate has no score).

One label set per metric (Argo refuses a metric whose labels change). A value that does not resolve to a number
(an evaluation whose pod was lost before it reported) is a `MetricsError` condition on the workflow, never a
failed run.
"""

from __future__ import annotations

from hera.workflows.models import Counter, Gauge, Metrics, Prometheus
from hera.workflows.models import MetricLabel as Label

from kolora_core.stages import Stage

PROFILE = Label(key="profile", value="{{workflow.parameters.profile}}")
GATE_STAGE = "evaluate"


def workflow_metrics() -> Metrics:
    duration = Prometheus(
        name="kolora_run_duration_seconds",
        help="Duration of a kolora run, seconds, by profile and final status",
        labels=[PROFILE, Label(key="status", value="{{workflow.status}}")],
        gauge=Gauge(value="{{workflow.duration}}", realtime=False),
    )
    return Metrics(prometheus=[duration])


def stage_metrics(stage: Stage) -> Metrics | None:
    """evaluate's gate and score; no other stage has metrics of its own."""
    if stage.name != GATE_STAGE:
        return None
    succeeded = "{{status}} == Succeeded"
    gate = Prometheus(
        name="kolora_gate",
        help="Finished kolora evaluations by gate result (passed, failed, skipped)",
        labels=[PROFILE, Label(key="gate", value="{{outputs.parameters.gate}}")],
        when=succeeded,
        counter=Counter(value="1"),
    )
    mean = Prometheus(
        name="kolora_mean_aesthetic",
        help="Mean aesthetic score (LAION scale) of the last evaluated kolora candidate",
        labels=[PROFILE],
        when=f"{succeeded} && {{{{outputs.parameters.gate}}}} != skipped",
        gauge=Gauge(value="{{outputs.parameters.mean-aesthetic}}", realtime=False),
    )
    return Metrics(prometheus=[gate, mean])
