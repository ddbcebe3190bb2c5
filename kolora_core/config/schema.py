"""The typed run configuration: one pydantic section per stage, shared by every stage, the runner and the workflows.

Defaults reproduce the seed notebook (dataset, Data-Juicer recipe, training command, story prompts),
so the `full` profile is the seed run. Unknown keys and wrong types are rejected with the field's
dotted path, so a typo in a YAML file never silently falls back to a default. The models only
validate: reading files (profiles, `--config`, `generate.prompts_file`) is `loader.py`'s job.
"""

from __future__ import annotations

import functools
import re
import types
from datetime import date
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import ErrorDetails

from kolora_core.config.datajuicer_ops import check_op
from kolora_core.config.seed import SEED_STORY
from kolora_core.relative_names import is_relative_name

# Scorer repos: `<scheme>://<owner>/<name>`; hf = the Hugging Face hub, modelscope = ModelScope (kolora_core.models.hub).
HUB_SCHEMES = ("hf", "modelscope")
HUB_REFERENCE = re.compile(rf"(?:{'|'.join(HUB_SCHEMES)})://[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")


# Image sizes the models accept, measured on diffsynth 1.1.9's SDXLUNet(is_kolors=True) (tests/models/test_size_steps.py):
# the VAE downsamples by 8 and the UNet twice more by 2 (two DownSamplers), so a side must be a multiple of 32; at
# 1000 or 1008 px a skip connection's concat fails (63 vs 64 latent rows) after the models have loaded.
UNET_SIZE_STEP = 32
# diffsynth's SDXLImagePipeline (the seed engine) rounds height and width UP to a multiple of its division factor, 64,
# and renders another size than asked without an error; both engines read the same fields, so generate sizes take 64.
PIPELINE_SIZE_STEP = 64

# A seed reaches torch.manual_seed / torch.Generator(device).manual_seed (diffsynth's pipeline, the sampler, the tiny
# models), which take an unsigned 64-bit integer: a larger one raised "Overflow when unpacking long long" only when it
# was used (generate, after training). A negative one is taken modulo 2**64 (-1 draws as 2**64 - 1, two seeds naming
# one image; A1111's infotext reads Seed: -1 as "random"), so seeds are 0..2**64 - 1, checked when the config loads.
MAX_SEED = 2**64 - 1
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
# train.seed also seeds Lightning's seed_everything (numpy and Python's random too), which raises "not in bounds,
# numpy accepts from 0 to 4294967295" past 2**32 - 1: a traceback in the train stage, after ingest and filter ran.
MAX_TRAIN_SEED = 2**32 - 1


# Kolors' sampler (kolora's and diffsynth's pipeline alike) is EnhancedDDIMScheduler(num_train_timesteps=1100), whose
# set_timesteps caps the steps at its 1100 timesteps without a word: `steps: 3000` rendered the 1100-step image, ran
# the same 1100 UNet steps, and its records and A1111 infotext said Steps: 3000.
MAX_SAMPLER_STEPS = 1100


def _within_sampler_steps(value: int) -> int:
    """`value` if the sampler runs that many steps."""
    if value > MAX_SAMPLER_STEPS:
        raise ValueError(
            f"must be at most {MAX_SAMPLER_STEPS} (Kolors' scheduler has {MAX_SAMPLER_STEPS} timesteps and would run "
            f"{MAX_SAMPLER_STEPS} steps while the image records say {value}), got {value}"
        )
    return value


SamplerSteps = Annotated[int, Field(ge=1), AfterValidator(_within_sampler_steps)]


def _guidance_at_least_one(value: float) -> float:
    """`value` if the image follows its prompt. Both engines compute uncond + cfg x (cond - uncond), uncond being the
    negative prompt's: below 1 the negative prompt outweighs the prompt, and 0 rendered the negative prompt (or, with
    none, an empty one) alone, while the records said the prompt. Diffusers and A1111 read 1 and below as "no
    guidance"; here 1 is exactly that (one pass, the negative prompt not encoded)."""
    if value < 1:
        raise ValueError(
            f"must be at least 1 (below 1 the image follows the negative prompt more than the prompt; 0 renders the "
            f"negative prompt alone): 1 = no guidance and no negative-prompt pass, the seed uses 4; got {value}"
        )
    return value


CfgScale = Annotated[float, AfterValidator(_guidance_at_least_one)]


def _on_pipeline_step(value: int | None, name: str = "") -> int | None:
    """`value` if diffsynth's pipeline renders that size as asked; the refusal starts with `name` where the field's own
    name would mislead (a prompt's `size: 1000x768` is checked as its width and height)."""
    if value is not None and value % PIPELINE_SIZE_STEP:
        raise ValueError(
            f"{name}must be a multiple of {PIPELINE_SIZE_STEP} (diffsynth's pipeline would round it up to another size), "
            f"got {value}"
        )
    return value


def error_text(error: ErrorDetails) -> str:
    """One pydantic error as kolora shows it after the field's name. A check of kolora's (a ValueError raised in a
    validator) reads as written, without pydantic's 'Value error, ': it says what it got itself. pydantic's own
    messages do not, so they get the value, unless it is a whole section or list."""
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or error["type"] == "missing" else f" (got {got!r})"
    return f"{error['msg']}{shown}{_as_text_hint(error)}"


def _as_text_hint(error: ErrorDetails) -> str:
    """How to give a text field the text the user meant, for a text field that got a number, boolean or date: YAML
    (every config file, every flag and -p value) types an unquoted 2026, no or 2026-01-01, so only quoting keeps it text."""
    got = error.get("input")
    if error["type"] != "string_type" or not isinstance(got, bool | int | float | date):
        return ""
    if isinstance(got, bool):
        read, text, how = "yes/no, on/off, true/false as a boolean", "yes" if got else "no", "the word as text, quote it, e.g."
    else:
        read, text, how = f"{got} as {'a date' if isinstance(got, date) else 'a number'}", str(got), "it as text, quote it:"
    return f'; YAML reads an unquoted {read}: to pass {how} "{text}" in a file, "\'{text}\'" in a flag or -p value'


def _number_kind(annotation: Any) -> str | None:
    """What a field that takes a number but no boolean takes ("an integer", "a number"); None for any other field.
    Why: pydantic's lax mode reads True as 1, and YAML reads yes/no/on/off as booleans, so `steps: yes` trained 1 step."""
    members = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    members = tuple(get_args(m)[0] if get_origin(m) is Annotated else m for m in members)
    if bool in members:
        return None
    return "an integer" if int in members else "a number" if float in members else None


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, not silently ignored; so are NaN and infinity in a
    number field (a NaN threshold compares false both ways, so `min_aesthetic: nan` would pass every gate), and a
    boolean in one (`_no_boolean_number`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_boolean_number(cls, value: Any, info: ValidationInfo) -> Any:
        """A boolean in a number field is refused (see `_number_kind`); numeric text such as YAML's '1e-4' (a string:
        YAML 1.1 floats need a dot) still converts, which pydantic's strict mode would refuse."""
        if isinstance(value, bool) and info.field_name and (kind := _number_kind(cls.model_fields[info.field_name].annotation)):
            raise ValueError(
                f"got the boolean {str(value).lower()} (YAML reads an unquoted yes/no, on/off, true/false as a boolean): "
                f"give {kind}"
            )
        return value


class IngestConfig(Section):
    """Where training images come from and what caption they get."""

    source: str = Field(
        "modelscope://AI-ModelScope/lowres_anime",
        description="modelscope://<dataset id>, a local folder of images, a .parquet file/folder, or smoke://",
    )
    subset: str = Field("default", description="ModelScope subset_name")
    split: str = Field("train", description="dataset split")
    revision: str | None = Field(None, description="dataset revision (ModelScope); null = latest")
    caption: str | None = Field(
        "二次元", description="caption for every image (the seed's fixed text); null keeps each source caption"
    )
    trigger_word: str = Field("", description="prefix added to every caption, e.g. a style token")
    max_images: int | None = Field(None, ge=1, description="stop after this many images; null = all")
    smoke_images: int = Field(16, ge=1, description="how many images smoke:// generates")


def reads_local_files(source: str) -> bool:
    """Whether an `ingest.source` names files of the machine ingest runs on (a folder, a .parquet, file://,
    modelscope:// of a local path), which a pod started from a laptop cannot see."""
    uri = source.strip()
    if uri.startswith("modelscope://"):
        return uri.removeprefix("modelscope://").startswith("/")
    return uri.startswith("file://") or "://" not in uri


# One item of Data-Juicer's `process:` list, its op and parameter names checked against the pinned Data-Juicer's
# (`datajuicer_ops`): on each item, so that a refusal names it by its place in the list (filter.ops[2]).
DataJuicerOp = Annotated[dict[str, dict[str, Any]], AfterValidator(check_op)]


class FilterConfig(Section):
    """The Data-Juicer recipe; `ops` is Data-Juicer's own `process:` list."""

    ops: list[DataJuicerOp] = Field(
        default_factory=lambda: [
            {"image_shape_filter": {"min_width": 1024, "min_height": 1024, "any_or_all": "any"}},
            {"image_aspect_ratio_filter": {"min_ratio": 0.5, "max_ratio": 2.0, "any_or_all": "any"}},
        ],
        description="Data-Juicer process list (op name -> arguments); names checked against the pinned Data-Juicer's ops "
        "when the config is read (docs/data.md)",
    )
    np: int = Field(4, ge=1, description="Data-Juicer worker processes (capped at the CPU count)")
    executor_type: Literal["default", "ray"] = Field("default", description="ray: Data-Juicer on a Ray cluster (large datasets)")
    ray_address: str | None = Field(None, description="Ray cluster address for executor_type ray; null = Data-Juicer's 'auto'")


class ModelsConfig(Section):
    """Which base model the run trains on; `tiny` and `random` write random-weight Kolors-architecture models."""

    source: Literal["modelscope", "tiny", "random"] = Field(
        "modelscope",
        description="modelscope: download Kolors; tiny: random tiny models (smoke, CPU); random: random FULL-SIZE "
        "Kolors (and scorers) in the real file formats, written offline (benchmarks, runs without a network)",
    )
    kolors_repo: str = Field("Kwai-Kolors/Kolors", description="ModelScope model id of Kolors")
    vae_repo: str = Field("AI-ModelScope/sdxl-vae-fp16-fix", description="ModelScope model id of the fp16-fix VAE")
    revision: str | None = Field(None, description="model revision; null = latest")
    tiny_seed: Seed = Field(0, description="RNG seed of the tiny random models")
    random_seed: Seed = Field(0, description="RNG seed of the random full-size models (models.source random)")
    verify: Literal["size", "sha256"] = Field(
        "size",
        description="how train and generate check the model directory against its manifest before loading: size "
        "(instant) or sha256 (reads every file, ~18 GB for Kolors; finds a file corrupted without changing its size)",
    )


class StoryPrompt(Section):
    """One image of the story: what to draw, what to avoid, which seed; null settings take the GenerateConfig value."""

    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    seed: Seed = Field(0, description="RNG seed of this image's noise")
    cfg_scale: CfgScale | None = Field(None, description="null = generate.cfg_scale")
    steps: SamplerSteps | None = Field(None, description="null = generate.steps")
    width: int | None = Field(None, ge=64, description="null = generate.width")
    height: int | None = Field(None, ge=64, description="null = generate.height")
    lora_strength: float | None = Field(None, description="null = generate.lora_strength")

    @model_validator(mode="before")
    @classmethod
    def _size_shorthand(cls, data: Any) -> Any:
        """`size: 1024` or `size: 1024x768` (width x height) in a prompts file; same as width + height."""
        if not isinstance(data, dict) or "size" not in data:
            return data
        data = dict(data)
        size = data.pop("size")
        if "width" in data or "height" in data:
            raise ValueError("give either size or width/height, not both")
        parts = str(size).lower().replace(" ", "").split("x")
        if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
            raise ValueError(f"size must be N or WIDTHxHEIGHT, got {size!r}")
        data["width"], data["height"] = int(parts[0]), int(parts[-1])
        for side in ("width", "height"):
            _on_pipeline_step(data[side], f"size {size}: {side} ")
        return data

    @field_validator("width", "height")
    @classmethod
    def _size_step(cls, value: int | None) -> int | None:
        return _on_pipeline_step(value)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        """min_length let "   " (or a newline) through: rendered as an image of no prompt, scored against nothing."""
        if not value.strip():
            raise ValueError(f"is blank ({value!r}): write what the image shows")
        return value


# The Kolors UNet's Linear layers by the last part of their name, as diffsynth 1.1.9's SDXLUNet(is_kolors=True) names
# them (tests/models/test_size_steps.py measures both sets): peft adapts the modules whose name is a target or ends in
# "." + target, and kolora's LoRA files and merges hold Linear layers only. A target that matched none raised peft's
# NoMatchingPeftModuleError after the models loaded, `norm1` (GroupNorm) a ValueError, and `conv1` trained, then failed
# when the LoRA was saved (or, as LoHa, in generate); `to_out.0` (diffusers' name) matches nothing here.
UNET_LINEAR_NAMES = (
    "ff",
    "proj",
    "proj_in",
    "proj_out",
    "text_intermediate_proj",
    "time_emb_proj",
    "to_k",
    "to_out",
    "to_q",
    "to_v",
)
# Where those layers are, so that a dotted target must end a real name ("attn1.to_q", not "to_q.attn1" or
# "blocks.1.to_q", which peft matches with nothing): SDXLUNet.blocks' attention blocks by index with their number of
# transformer blocks, and its ResnetBlocks (a time_emb_proj each). tests/models/test_size_steps.py checks the names
# these make against the model's.
UNET_ATTENTION_BLOCKS = {7: 2, 10: 2, 15: 10, 18: 10, 21: 10, 25: 10, 28: 10, 31: 10, 35: 2, 38: 2, 41: 2}
UNET_RESNET_BLOCKS = (0, 2, 6, 9, 14, 17, 20, 22, 24, 27, 30, 34, 37, 40, 44, 46, 48)
UNET_TRANSFORMER_LINEARS = tuple(f"{attn}.{to}" for attn in ("attn1", "attn2") for to in ("to_q", "to_k", "to_v", "to_out"))
UNET_TRANSFORMER_LINEARS += ("ff", "act_fn.proj")


def unet_linear_modules() -> list[str]:
    """The full names of the UNet's Linear layers that UNET_LINEAR_NAMES end (all but the time embeddings' `0`, `2`)."""
    names = ["text_intermediate_proj", *(f"blocks.{i}.time_emb_proj" for i in UNET_RESNET_BLOCKS)]
    for i, depth in UNET_ATTENTION_BLOCKS.items():
        names += [f"blocks.{i}.proj_in", f"blocks.{i}.proj_out"]
        names += [f"blocks.{i}.transformer_blocks.{j}.{leaf}" for j in range(depth) for leaf in UNET_TRANSFORMER_LINEARS]
    return names


@functools.cache
def _unet_linear_targets() -> frozenset[str]:
    """Every target peft matches with one of those layers: a name's last parts (it takes `key.endswith("." + t)`)."""
    names = [name.split(".") for name in unet_linear_modules()]
    return frozenset(".".join(parts[i:]) for parts in names for i in range(len(parts)))


def _unet_linear_target(target: str) -> str:
    """`target` if it names Linear layers of the Kolors UNet as peft matches names (see UNET_LINEAR_NAMES)."""
    if target not in _unet_linear_targets():
        raise ValueError(
            f"{target!r} names no Linear layer of the Kolors UNet (diffsynth's names): use {', '.join(UNET_LINEAR_NAMES)}, "
            "alone or as the end of a layer's full name (e.g. attn1.to_q, transformer_blocks.0.attn2.to_k, blocks.7.proj_in)"
        )
    return target


# Which export files can carry which adapter (docs/training.md "LoRA variants" says which loaders read them).
VARIANT_EXPORTS: dict[str, tuple[str, ...]] = {
    "lora": ("diffusers", "kohya"),
    "dora": ("diffusers",),
    "loha": ("kohya",),
    "lokr": ("kohya",),
}
# The options kolora added after the seed (all off by default), and those that change step 0's loss or gradients.
TRAINER_OPTIONS = (
    "buckets",
    "lora_variant",
    "exports",
    "optimizer",
    "lr_scheduler",
    "lr_warmup_steps",
    "gradient_accumulation",
    "max_grad_norm",
    "min_snr_gamma",
    "noise_offset",
    "caption_dropout",
    "ema_decay",
    "validation_every",
    "validation_prompts",
    "validation_steps",
    "tensorboard",
)
STEP0_OPTIONS = ("buckets", "lora_variant", "min_snr_gamma", "noise_offset", "caption_dropout")


class TrainConfig(Section):
    """LoRA training; defaults are the seed's `train_kolors_lora.py` command line (see docs/training.md)."""

    lora_rank: int = Field(16, ge=1, description="LoRA rank r (peft's r)")
    lora_alpha: float = Field(4.0, gt=0, description="LoRA alpha: the trained update is scaled by lora_alpha / lora_rank")
    lora_target_modules: list[Annotated[str, AfterValidator(_unet_linear_target)]] = Field(
        default_factory=lambda: ["to_q", "to_k", "to_v", "to_out"],
        min_length=1,
        description="UNet Linear layers that get a LoRA, by name (peft's target_modules; the default: 560 layers)",
    )
    init_lora_weights: Literal["gaussian", "kaiming"] = Field(
        "gaussian", description="peft's LoRA init: gaussian (the seed's) or kaiming (diffsynth 1.1.9's CLI default)"
    )
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate, constant (the seed has no schedule)")
    steps: int = Field(500, ge=1, description="optimizer steps (the seed's one 'epoch' of 500 steps), whatever train.devices is")
    batch_size: int = Field(1, ge=1, description="images per step per device; the global batch is batch_size x devices")
    resolution: int = Field(1024, ge=64, description=f"training square size in pixels (multiple of {UNET_SIZE_STEP})")
    center_crop: bool = Field(True, description="crop the resized image at its centre; false = a random crop")
    random_flip: bool = Field(False, description="flip images horizontally at random")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="recompute activations in backward (same numbers, ~1/3 slower, far less memory); "
        "auto = only when the step would not fit in the free GPU memory without it",
    )
    precision: Literal["16-mixed", "bf16-mixed", "32-true", "32"] = Field(
        "16-mixed", description="Lightning precision: 16-mixed (the seed's), bf16-mixed, or 32-true/32 (fp32, e.g. on a CPU)"
    )
    seed: int = Field(
        0, ge=0, le=MAX_TRAIN_SEED, description="RNG seed of the LoRA init, image sampling, crops, noise and timesteps"
    )
    num_workers: int = Field(2, ge=0, description="data loader worker processes (image decoding)")
    engine: Literal["fast", "seed"] = Field(
        "fast",
        description="fast: captions and latents encoded once and cached, batched UNet steps; "
        "seed: diffsynth's own training_step (ChatGLM + VAE every step), for comparison",
    )
    seed_compat: bool = Field(
        False, description="before training, prove one fast-engine step has diffsynth's training_step loss (seed_compat.json)"
    )
    timestep_sampling: Literal["per_sample", "per_batch"] = Field(
        "per_sample", description="one diffusion timestep per image, or one per step as the seed (the same at batch 1)"
    )
    cached_crops: int = Field(4, ge=1, description="random crops cached per image when center_crop is false (fast engine)")
    devices: int = Field(1, ge=1, description="GPUs of this node (DDP); steps stay optimizer steps")
    compile: bool | Literal["auto", "whole"] = Field(
        "auto",
        description="torch.compile the UNet's transformer layers and ResNet blocks (fast engine; same math); "
        "auto = on a GPU for runs of 2000+ images (steps x batch x devices; below that the warm-up costs more than "
        "it saves); whole = the whole UNet as one graph (~2% faster steps, ~400 s cold warm-up: long runs only). "
        "Compiled kernels are cached in train.compile_cache_dir",
    )
    cuda_graphs: bool | Literal["auto"] = Field(
        "auto",
        description="replay the whole step (forward, backward, AdamW) as one CUDA graph (fast engine, one GPU; same "
        "math); auto = on a single GPU",
    )
    compile_cache_dir: str | None = Field(
        None, description="compiled-kernel cache kept across runs; null = $KOLORA_COMPILE_CACHE or ~/.cache/kolora/compile"
    )
    checkpoint_every: int = Field(100, ge=0, description="save a resumable training state every N steps; 0 = never")
    checkpoint_dir: str | None = Field(
        None,
        description="where resumable states live; null = the train stage's --checkpoints (<--lora>.checkpoints), kept on failure",
    )
    keep_checkpoints: bool = Field(False, description="keep the checkpoints after a successful run; false deletes them")
    log_every: int = Field(10, ge=1, description="log step, loss, images/s and ETA every N steps")
    # --- what other LoRA trainers offer (docs/training.md "Trainer options"); every one off by default ---
    buckets: bool = Field(
        False,
        description="aspect-ratio buckets: each image trains at the bucket (multiples of 64, about resolution^2 pixels, "
        "aspect 1:2 to 2:1) nearest its aspect, each batch from one bucket, SDXL size/crop conditioning from the image",
    )
    lora_variant: Literal["lora", "dora", "loha", "lokr"] = Field(
        "lora", description="peft adapter: lora (the seed), dora (weight-decomposed LoRA), loha or lokr (LyCORIS)"
    )
    exports: list[Literal["diffusers", "kohya"]] | None = Field(
        None,
        description="export files written beside lora.safetensors; null = every format that can carry lora_variant "
        "(lora: both, dora: diffusers, loha/lokr: kohya)",
    )
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw", description="adamw (torch, fused on GPU: the seed) or adamw8bit (bitsandbytes: 8-bit moments)"
    )
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning-rate schedule after the warm-up (linear and cosine decay to 0 at train.steps)"
    )
    lr_warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 over this many optimizer steps")
    gradient_accumulation: int = Field(
        1, ge=1, description="micro-batches per optimizer step: a step sees batch_size x devices x this many images"
    )
    max_grad_norm: float | None = Field(None, gt=0, description="clip the LoRA gradients' total L2 norm; null = no clipping")
    min_snr_gamma: float | None = Field(
        None, gt=0, description="min-SNR loss weighting min(SNR, gamma)/SNR per image (Hang et al. 2023; 5 is usual)"
    )
    noise_offset: float = Field(0.0, ge=0, description="add this x N(0,1) per image and channel to the noise (0 = off)")
    caption_dropout: float = Field(0.0, ge=0, lt=1, description="probability that an image trains with the empty caption")
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="keep an EMA of the LoRA weights with this decay and export it instead of the raw weights"
    )
    validation_every: int = Field(0, ge=0, description="render the validation prompts with the current LoRA every N steps")
    validation_prompts: list[StoryPrompt] | None = Field(
        None, description="prompts (and seeds) rendered during training; null = the first two of generate.prompts"
    )
    validation_steps: SamplerSteps = Field(20, description="sampler steps of each validation image")
    tensorboard: bool = Field(False, description="write TensorBoard event files (loss, lr, images/s, grad norm, samples)")
    sigterm_grace_s: float = Field(
        20.0,
        gt=0,
        description="on SIGTERM, checkpoint after the current step and exit 143 within this many seconds "
        "(Kubernetes kills 30 s after SIGTERM by default; the rest is for uploading the checkpoints)",
    )

    @field_validator("resolution")
    @classmethod
    def _size_step(cls, value: int) -> int:
        if value % UNET_SIZE_STEP:
            raise ValueError(
                f"must be a multiple of {UNET_SIZE_STEP} (the VAE downsamples by 8, the Kolors UNet by 4 more), got {value}"
            )
        return value

    @model_validator(mode="after")
    def _options_combine(self) -> TrainConfig:
        """Combinations that cannot work are refused here, before any model loads (one line each)."""
        carries = VARIANT_EXPORTS[self.lora_variant]
        for export in self.exports or []:
            if export not in carries:
                raise ValueError(
                    f"train.exports {export} cannot carry train.lora_variant {self.lora_variant} "
                    f"(it carries {', '.join(v for v, f in VARIANT_EXPORTS.items() if export in f)}): drop it from "
                    "train.exports or set train.exports null"
                )
        if "kohya" in self.export_formats and any(t.endswith("text_intermediate_proj") for t in self.lora_target_modules):
            raise ValueError(  # SGM's UNet has no such layer: the export refused it after training
                "train.lora_target_modules text_intermediate_proj is outside the UNet blocks, which the kohya export "
                "cannot name: drop it, or set train.exports [diffusers]"
            )
        if self.cuda_graphs is True and self.optimizer == "adamw8bit":
            raise ValueError("train.cuda_graphs true cannot replay train.optimizer adamw8bit (host-side step count): set it auto")
        new_options = self.non_default_options()
        if self.engine == "seed" and new_options:
            raise ValueError(
                f"train.engine seed is the seed's recipe and takes none of train.{', train.'.join(new_options)}: "
                "use train.engine fast"
            )
        changes_step0 = [o for o in new_options if o in STEP0_OPTIONS]
        if self.seed_compat and changes_step0:
            raise ValueError(
                f"train.seed_compat proves the seed's objective, which train.{', train.'.join(changes_step0)} changes: "
                "turn one of them off"
            )
        return self

    def gpu_only_setting(self) -> str | None:
        """The setting that cannot train on a CPU (Lightning has no fp16 autocast there), or None: one rule for the
        train stage's own check and for `kolora run`'s check before any step."""
        return "train.precision 16-mixed" if self.precision == "16-mixed" else None

    def non_default_options(self) -> list[str]:
        """The trainer options (buckets .. tensorboard) set to something other than their default."""
        return [
            name
            for name in TRAINER_OPTIONS
            if getattr(self, name) != type(self).model_fields[name].get_default(call_default_factory=True)
        ]

    @property
    def export_formats(self) -> list[str]:
        """`exports`, or every format that can carry the variant."""
        return list(self.exports) if self.exports is not None else list(VARIANT_EXPORTS[self.lora_variant])

    @property
    def lora_scale(self) -> float:
        """peft's effective scale; inference must apply the same or the style is weakened."""
        return self.lora_alpha / self.lora_rank


class GenerateConfig(Section):
    """Rendering the story with the trained LoRA."""

    prompts: list[StoryPrompt] = Field(
        default_factory=lambda: [StoryPrompt(prompt=p, negative_prompt=n, seed=s) for p, n, s in SEED_STORY],
        min_length=1,
        description="the story: a list of {prompt, negative_prompt, seed} with optional per-prompt cfg_scale, steps, "
        "width, height, lora_strength (default: the seed's 8 prompts; or generate.prompts_file)",
    )
    prompts_file: str | None = Field(
        None,
        description="YAML, JSON or JSONL file of story prompts, read when the config is loaded and inlined into "
        "generate.prompts (null = generate.prompts as configured)",
    )
    prompts_from: str | None = Field(None, description="set by kolora: the prompts file generate.prompts was read from")
    cfg_scale: CfgScale = Field(4.0, description="classifier-free guidance scale, at least 1; 1 = no negative-prompt pass")
    steps: SamplerSteps = Field(
        50, description=f"DDIM sampling steps (diffsynth's EnhancedDDIMScheduler; at most {MAX_SAMPLER_STEPS})"
    )
    height: int = Field(1024, ge=64, description="image height in pixels (multiple of 64)")
    width: int = Field(1024, ge=64, description="image width in pixels (multiple of 64)")
    lora_strength: float = Field(1.0, description="1.0 = the trained scale alpha/rank (the seed used 0.5 by mistake)")
    engine: Literal["fast", "seed"] = Field(
        "fast", description="fast: kolora's batched sampler; seed: diffsynth's SDXLImagePipeline, one image per call"
    )
    batch_size: int = Field(8, ge=1, description="prompts the fast engine renders together (cond+uncond in one UNet call)")
    compile: bool | Literal["auto", "whole"] = Field(
        "auto",
        description="torch.compile the UNet's layers and the VAE decoder (fast engine); auto = on a GPU for shards "
        "of 32+ images (below that the warm-up costs more than it saves); whole = the whole UNet as one graph (~3% "
        "faster, ~100 s cold warm-up). Compiled kernels are cached in generate.compile_cache_dir",
    )
    compile_cache_dir: str | None = Field(
        None, description="compiled-kernel cache kept across runs; null = $KOLORA_COMPILE_CACHE or ~/.cache/kolora/compile"
    )
    vae_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="VAE decode dtype; auto = bfloat16 on GPU (fp32's range: never overflows to NaN), float32 on CPU; "
        "float16 only with the fp16-fix VAE",
    )
    fp8: bool = Field(
        False,
        description="the transformer layers' feed-forward products in FP8 (e4m3, one scale per tensor; fast engine, "
        "compiled; GPUs with FP8 tensor cores: L4, L40S, H100, H200). Changes the math: images differ slightly "
        "from fp16's (docs/benchmarks.md); generate.compile auto then compiles every shard",
    )
    shards: int = Field(1, ge=1, description="split the prompts into this many shards (one pod each)")
    shard: int = Field(0, ge=0, description="which shard this process renders (0-based)")

    @field_validator("height", "width")
    @classmethod
    def _size_step(cls, value: int) -> int:
        return _on_pipeline_step(value)

    @model_validator(mode="after")
    def _fp8_compiled(self) -> GenerateConfig:
        """FP8 runs only where it pays: eager, its quantization passes make it slower than fp16."""
        if self.fp8 and self.engine != "fast":
            raise ValueError("generate.fp8 needs generate.engine fast (the seed engine is diffsynth's own pipeline)")
        if self.fp8 and self.compile is False:
            raise ValueError("generate.fp8 needs generate.compile auto, true or whole: uncompiled, FP8 runs slower than fp16")
        return self


class EvaluateConfig(Section):
    """The seed's 2x4 grid (images left to right, top to bottom, resized to one picture), scores and the gate."""

    grid_columns: int = Field(2, ge=1, description="story grid columns (images left to right, then top to bottom)")
    grid_rows: int = Field(4, ge=1, description="story grid rows; columns x rows must hold every prompt")
    grid_width: int = Field(1024, ge=1, description="final grid width in pixels (the seed resizes to 1024x2048)")
    grid_height: int = Field(2048, ge=1, description="final grid height in pixels")
    aesthetic_repo: str | None = Field(
        "hf://shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE",
        description="hub repo of the LAION aesthetics predictor v2 (CLIP ViT-L/14 + linear head): hf://<id> (Hugging Face) "
        "or modelscope://<id>; fetch-models downloads it into the scorers artifact; null = not scored, gate skipped",
    )
    aesthetic_revision: str | None = Field(None, description="branch, tag or commit of aesthetic_repo; null = the default branch")
    clip_repo: str | None = Field(
        "hf://OFA-Sys/chinese-clip-vit-base-patch16",
        description="hub repo of a CLIP that reads Chinese, for image-prompt similarity: hf://<id> or modelscope://<id>; "
        "null = not scored",
    )
    clip_revision: str | None = Field(None, description="branch, tag or commit of clip_repo; null = the default branch")
    min_aesthetic: float = Field(6.0, description="gate: the mean aesthetic score (LAION scale, 1-10) must reach this")
    min_clip_similarity: float | None = Field(
        None, description="an image whose prompt cosine similarity (-1..1) is below this fails (null = not gated)"
    )
    champion_margin: float = Field(
        0.1,
        ge=0,
        description="gate: with a comparable champion (same story), the mean aesthetic score must reach the "
        "champion's minus this margin (LAION scale)",
    )

    @field_validator("min_clip_similarity")
    @classmethod
    def _a_cosine(cls, value: float | None) -> float | None:
        """Above 1 every image failed the gate, after training and generating (a CLIP score's 25 is 0.25 here)."""
        if value is not None and not -1 <= value <= 1:
            raise ValueError(
                f"is a cosine similarity, -1..1 (above 1 no image passes): e.g. 0.25 for a CLIP score of 25, got {value}"
            )
        return value

    @field_validator("aesthetic_repo", "clip_repo")
    @classmethod
    def _hub_reference(cls, value: str | None) -> str | None:
        if value is not None and not HUB_REFERENCE.fullmatch(value):
            raise ValueError(f"must be hf://<owner>/<name> or modelscope://<owner>/<name> (or null: not scored), got {value!r}")
        return value


class PublishConfig(Section):
    """Promotion of a LoRA whose evaluation passed: the release directory and where it is published."""

    version: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="release version; null = lora-<first 12 hex digits of the LoRA's sha256> (same LoRA, same version)",
    )
    prefix: str = Field("models", pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", description="key prefix: <prefix>/<name>/<version>/")
    modelscope_repo: str | None = Field(
        None, description="also upload the release to this ModelScope model repo (token from env MODELSCOPE_API_TOKEN)"
    )

    @field_validator("version")
    @classmethod
    def _not_latest(cls, value: str | None) -> str | None:
        if value == "latest":
            raise ValueError("'latest' is the pointer to the newest version, not a version name")
        return value

    @field_validator("prefix")
    @classmethod
    def _whole_parts(cls, value: str) -> str:
        """The pattern alone let `models/` and `a/../b` through: keys with an empty or '..' part, which a store
        refuses (or resolves elsewhere) at the champion step, after ingest and filter ran."""
        if not is_relative_name(value):
            raise ValueError("no empty, '.' or '..' parts (e.g. models or team-a/models)")
        return value


class RunConfig(Section):
    """A whole pipeline run."""

    name: str = Field("kolora", pattern=r"^[a-z0-9][a-z0-9-]*$", description="model name used in published keys")
    profile: str = Field("full", description="the profile this config was resolved from")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where training and generation run")
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    publish: PublishConfig = Field(default_factory=PublishConfig)

    @model_validator(mode="after")
    def _shard_in_range(self) -> RunConfig:
        if self.generate.shard >= self.generate.shards:
            raise ValueError(f"generate.shard {self.generate.shard} must be below generate.shards {self.generate.shards}")
        return self

    @model_validator(mode="after")
    def _grid_holds_story(self) -> RunConfig:
        """Refused with the rows that would hold the story: the user who adds a 9th prompt needs to know the field."""
        columns, prompts = self.evaluate.grid_columns, len(self.generate.prompts)
        cells = columns * self.evaluate.grid_rows
        if cells < prompts:
            raise ValueError(
                f"evaluate grid {columns}x{self.evaluate.grid_rows} has {cells} cells but generate.prompts has {prompts}: "
                f"set evaluate.grid_rows {-(-prompts // columns)} (or raise evaluate.grid_columns)"
            )
        return self
