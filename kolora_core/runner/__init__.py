"""The local runner: executes a rendered Argo WorkflowTemplate on one machine with Argo's semantics.

template.py parses and validates the YAML, expressions.py substitutes `{{...}}` and evaluates `when` /
`depends`, engines.py runs one container's command, local.py walks the DAG and moves artifacts through S3,
summary.py writes what a developer reads at the end. Clusters use Argo itself; this is the developer loop.
"""

from kolora_core.runner.local import RunOptions, RunResult, run_workflow

__all__ = ["RunOptions", "RunResult", "run_workflow"]
