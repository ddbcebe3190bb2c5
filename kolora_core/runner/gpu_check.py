"""Before any step of a local run: a GPU step this machine cannot run is refused in one line.

Why: `kolora run --profile full` on a machine without CUDA would ingest, filter and fetch the models (an 18 GB
download) before the train stage refuses the CPU (train.precision 16-mixed, the seed's). The rule is the stage's
own (`TrainConfig.gpu_only_setting`, `device: cuda`), applied to the config each GPU step will resolve; whether a
GPU is there is asked of the engine, which knows where its steps run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from kolora_core.errors import KoloraError
from kolora_core.runner.engine import Engine
from kolora_core.runner.flags import template_config
from kolora_core.runner.spec import WorkflowSpec
from kolora_core.stages import stage_of


def _gpu_step_settings(workflow: WorkflowSpec, parameters: Mapping[str, str]) -> Iterator[tuple[str, str, str | None]]:
    """(step template, its resolved device, the train setting that cannot run on a CPU or None) per GPU step."""
    for name, template in workflow.templates.items():
        if template.container is None:
            continue
        stage = stage_of((*template.container.command, *template.container.args))
        if stage is None or not stage.gpu:
            continue
        config = template_config(template, parameters)
        yield name, config.device, config.train.gpu_only_setting() if stage.name == "train" else None


def _needs(settings: list[tuple[str, str, str | None]]) -> list[tuple[str, str]]:
    needs = []
    for name, device, cpu_refused in settings:
        if device == "cuda":
            needs.append((name, "device cuda"))
        elif device != "cpu" and cpu_refused is not None:
            needs.append((name, cpu_refused))
    return needs


def gpu_requirements(workflow: WorkflowSpec, parameters: Mapping[str, str]) -> list[tuple[str, str]]:
    """(step template, the setting that needs a CUDA GPU) for every GPU stage whose config cannot run on a CPU."""
    return _needs(list(_gpu_step_settings(workflow, parameters)))


def check_gpu_steps(workflow: WorkflowSpec, parameters: Mapping[str, str], engine: Engine) -> None:
    """Raise a one-line `KoloraError` when a step needs a CUDA GPU and the engine sees none, or when its config
    asks for the CPU together with a setting the CPU cannot train with (on any machine)."""
    settings = list(_gpu_step_settings(workflow, parameters))  # each GPU step's config resolved once
    for name, device, cpu_refused in settings:
        if device == "cpu" and cpu_refused is not None:
            raise KoloraError(
                f"step {name}: {cpu_refused} needs a CUDA GPU but the config sets device cpu: set train.precision "
                "32-true or bf16-mixed, or device auto"
            )
    needs = _needs(settings)
    if not needs or engine.cuda_visible() is not False:
        return
    step, setting = needs[0]
    profile = parameters.get("profile", "")
    raise KoloraError(
        f"step {step} needs a CUDA GPU ({setting}{f', profile {profile}' if profile else ''}) and engine "
        f"{engine.name} sees none on this machine: run --profile smoke here, or this profile on a GPU machine or "
        "the cluster (kolora submit)"
    )
