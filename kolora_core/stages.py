"""What each stage reads and writes: the single source of truth for CLIs, images and workflows.

A stage is a container that reads input directories and writes output directories. The stage CLIs
(`jobs/`) build their flags from these specs, the hera workflow builds its container templates and
artifact paths from them, and the Dockerfiles are tested against them, so the three cannot drift.
The local runner's executor reads them too (`stage_of`: which steps get GPUs or a network), so its
engines stay generic. Container paths live under `/kolora`; the process engine maps that root to a scratch dir.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

CONTAINER_ROOT = "/kolora"
CONFIG_ARTIFACT = "config"
CONFIG_PATH = f"{CONTAINER_ROOT}/inputs/config/run.yaml"
COMPLETE_MARKER = "_SUCCESS"
# The compile cache of the stages that compile the UNet (`Stage.compiles`): where the workflow mounts or downloads
# the kept cache, and the variable that points `kolora_core.models.unet_compile` at it.
COMPILE_CACHE_ENV = "KOLORA_COMPILE_CACHE"
COMPILE_CACHE_PATH = f"{CONTAINER_ROOT}/compile-cache"


@dataclass(frozen=True)
class Stage:
    """One pipeline stage as a container sees it."""

    name: str
    module: str
    image: str
    summary: str
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    # output parameter name -> file (relative to the named output dir) holding its value
    parameters: dict[str, tuple[str, str]] = field(default_factory=dict)
    gpu: bool = False
    # Outputs that deliberately survive a failed attempt (train's checkpoints, generate's finished images):
    # plain directories the stage manages itself, never staged or marked, uploaded after a failure too and
    # given back to the retry (on Argo: an optional input and output artifact at the same path).
    resumable: tuple[str, ...] = ()
    # Inputs/outputs the stage runs without: a CLI run may leave their flag out (train then writes no prompt
    # embeddings, generate encodes its prompts itself); on Argo the input artifact is `optional`, and an optional
    # input directory that does not exist (an artifact not supplied) counts as not given.
    optional: tuple[str, ...] = ()
    # What the stage does without each optional input or upload, for the line that says it runs without one (stage_cli).
    without: dict[str, str] = field(default_factory=dict)
    # The user's own files handed in as they are (ingest's `source`: a folder of images or .parquet files): never a
    # stage's commit, so read as untrusted data, not pruned by a `_SUCCESS`; optional. `--<name>-from NAME` says
    # what the user named them by (the workflow passes its `dataset-key`): with a NAME the directory must be there
    # (on Argo an optional artifact that was not found leaves no path, so a mistyped key would otherwise pass);
    # without one, a directory that does not exist counts as not given.
    uploads: tuple[str, ...] = ()
    # torch.compile's cache (generated code, as trusted as the weights): the workflow keeps it beside the models
    compiles: bool = False
    # The config sections this stage reads, listed first in its --help (all flags are accepted by every stage).
    config_sections: tuple[str, ...] = ()

    def input_path(self, artifact: str) -> str:
        return f"{CONTAINER_ROOT}/inputs/{artifact}"

    def output_path(self, artifact: str) -> str:
        return f"{CONTAINER_ROOT}/outputs/{artifact}"

    @property
    def downloads(self) -> bool:
        """Stages without inputs fetch from outside (ingest, fetch-models: ModelScope); the others need no network."""
        return not self.inputs

    @property
    def command(self) -> list[str]:
        return ["python", "-m", self.module]

    def io_args(self) -> list[str]:
        """The `--<artifact> <path>` arguments every run of this stage gets."""
        args: list[str] = []
        for name in (*self.inputs, *self.uploads):
            args += [f"--{name}", self.input_path(name)]
        for name in (*self.outputs, *self.resumable):  # resumable ones too: their default is for runs by hand
            args += [f"--{name}", self.output_path(name)]
        return args


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage(
            "ingest",
            "jobs.ingest",
            "ingest",
            "download/read images, normalise, caption",
            outputs=("dataset",),
            uploads=("source",),
            without={"source": "reads the source its config names"},
            config_sections=("ingest",),
        ),
        Stage(
            "filter",
            "jobs.filter",
            "filter",
            "Data-Juicer recipe -> DiffSynth training set + report",
            inputs=("dataset",),
            outputs=("trainset", "filter-report"),
            config_sections=("filter",),
        ),
        Stage(
            "check-changes",
            "jobs.check_changes",
            "evaluate",
            "does the trainset or training config differ from the champion's release? (changed/unchanged)",
            inputs=("trainset", "champion"),
            outputs=("changes",),
            parameters={"training": ("changes", "training.txt")},
            config_sections=("train", "models"),  # what the training identity is made of (with filter.ops)
        ),
        Stage(
            "fetch-models",
            "jobs.fetch_models",
            "ingest",
            "base model weights in the ModelScope layout, and the evaluation scorers",
            outputs=("models", "scorers"),
            config_sections=("models", "evaluate"),  # evaluate names the scorer repos
        ),
        Stage(
            "train",
            "jobs.train",
            "train",
            "LoRA training (and the story prompts' embeddings, made with the text encoder it has loaded anyway)",
            inputs=("trainset", "models"),
            outputs=("lora", "prompt-embeddings"),
            gpu=True,
            resumable=("checkpoints",),
            optional=("prompt-embeddings",),
            compiles=True,
            config_sections=("train",),
        ),
        Stage(
            "generate",
            "jobs.generate",
            "generate",
            "render the story prompts (ChatGLM loaded only for texts train's prompt-embeddings lack)",
            inputs=("models", "lora", "prompt-embeddings"),
            outputs=("images",),
            gpu=True,
            resumable=("progress",),
            optional=("prompt-embeddings",),
            without={"prompt-embeddings": "encodes the prompts itself (loads ChatGLM3)"},
            compiles=True,
            config_sections=("generate",),
        ),
        Stage(
            "evaluate",
            "jobs.evaluate",
            "evaluate",
            "grid, scores, report and the promotion gate",
            inputs=("images", "lora", "filter-report", "scorers", "champion"),
            outputs=("report",),
            parameters={"gate": ("report", "gate.txt"), "mean-aesthetic": ("report", "mean_aesthetic.txt")},
            config_sections=("evaluate",),
        ),
        Stage(
            "publish",
            "jobs.publish",
            "evaluate",
            "release directory of a LoRA whose evaluation gate passed",
            inputs=("lora", "report", "images"),
            outputs=("release",),
            config_sections=("publish",),
        ),
    )
}


def stage_of(argv: Sequence[str]) -> Stage | None:
    """The kolora stage a command runs (`python -m jobs.<stage> ...`); None for any other command."""
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m":
            return next((s for s in STAGES.values() if s.module == argv[i + 1]), None)
    return None
