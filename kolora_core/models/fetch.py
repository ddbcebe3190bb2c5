"""Materialise the weight directories: the base model (Kolors from ModelScope, tiny, or random full-size) and the
evaluation scorers.

Run once per model version by the fetch-models stage, never inside training. Every attempt downloads into the
stage's fresh staging directory (on Argo a retry is a new pod); `kolora_core.models.hub` sorts download
failures into config errors (exit 2) and retryable ones (exit 75).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from kolora_core.config import EvaluateConfig, ModelsConfig, RunConfig
from kolora_core.errors import KoloraError
from kolora_core.models.hub import HubRepo, snapshot
from kolora_core.models.layout import TEXT_ENCODER_DIR, ModelDir
from kolora_core.models.random_scorers import FULL, TINY, write_random_aesthetic, write_random_chinese_clip
from kolora_core.models.scorers import (
    AESTHETIC,
    CLIP,
    HUB_KIND,
    RANDOM_KIND,
    TINY_KIND,
    ScorersDir,
    check_aesthetic,
    check_clip,
    scorer_repos,
)
from kolora_core.models.tiny import TINY_ARCHITECTURE, build_tiny_models

# What the seed downloads with diffsynth's download_models(["Kolors", "SDXL-vae-fp16-fix"]), minus the
# Kolors VAE, which kolora does not use (the fp16-fix VAE encodes for training and decodes without NaNs).
KOLORS_PATTERNS = ["text_encoder/*", "unet/diffusion_pytorch_model.safetensors"]
VAE_PATTERNS = ["diffusion_pytorch_model.safetensors", "config.json"]
# Scorers: the configs and processor files transformers loads, and ONE copy of the weights: safetensors where the
# repo has it, else the PyTorch file (read with weights_only, never unpickled as code). Repos carry more (the
# predictor's CLIP text tokenizer, Chinese-CLIP's original clip_cn_vit-b-16.pt, a second 0.75-1.2 GB weight file).
SCORER_FILES = {
    AESTHETIC: ["config.json", "preprocessor_config.json"],
    CLIP: [
        "config.json",
        "preprocessor_config.json",
        "vocab.txt",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ],
}
WEIGHT_CHOICES = (["model.safetensors"], ["pytorch_model.bin"])


def write_tiny_models(model_dir: ModelDir, seed: int) -> None:
    models = build_tiny_models(seed)
    models["kolors_text_encoder"].save_pretrained(model_dir.text_encoder, safe_serialization=True)
    model_dir.unet.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in models["sdxl_unet"].state_dict().items()}, str(model_dir.unet))
    vae = {f"encoder.{k}": v for k, v in models["sdxl_vae_encoder"].state_dict().items()}
    vae |= {f"decoder.{k}": v for k, v in models["sdxl_vae_decoder"].state_dict().items()}
    model_dir.vae.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in vae.items()}, str(model_dir.vae))
    model_dir.write_manifest("tiny", {"architecture": TINY_ARCHITECTURE, "seed": seed, "torch": torch.__version__})


def download_kolors(model_dir: ModelDir, config: ModelsConfig) -> None:
    """ModelScope snapshots of Kolors (text encoder, UNet) and the fp16-fix VAE into the layout."""
    kolors = HubRepo("modelscope", config.kolors_repo, config.revision, "models.kolors_repo")
    snapshot(kolors, KOLORS_PATTERNS, model_dir.root / Path(TEXT_ENCODER_DIR).parent)
    snapshot(HubRepo("modelscope", config.vae_repo, None, "models.vae_repo"), VAE_PATTERNS, model_dir.vae.parent)
    model_dir.write_manifest(
        "kolors", {"kolors_repo": config.kolors_repo, "vae_repo": config.vae_repo, "revision": config.revision}
    )


def fetch_models(config: ModelsConfig, out: Path) -> ModelDir:
    """Fill `out` with the configured base model and verify it against the manifest just written."""
    model_dir = ModelDir(out)
    if config.source == "tiny":
        write_tiny_models(model_dir, config.tiny_seed)
    elif config.source == "random":
        from kolora_core.models.random_kolors import write_random_kolors

        write_random_kolors(model_dir, config.random_seed)
    else:
        download_kolors(model_dir, config)
    model_dir.read_manifest()
    return model_dir


def download_scorer(repo: HubRepo, part: str, out: Path) -> None:
    """The configs, then the weights: model.safetensors where the repo has it, pytorch_model.bin otherwise."""
    snapshot(repo, SCORER_FILES[part] + WEIGHT_CHOICES[0], out)
    if not (out / WEIGHT_CHOICES[0][0]).is_file():
        # into an EMPTY directory: when the hub cannot be reached, huggingface_hub returns a non-empty local_dir as
        # it is, which would read as "the repo has no weights" (exit 2) instead of a network failure (exit 75)
        fallback = out.parent / f".{part}-weights"
        snapshot(repo, WEIGHT_CHOICES[1], fallback)
        for path in fallback.iterdir():
            path.rename(out / path.name)
        fallback.rmdir()
    if not (out / "config.json").is_file():
        raise KoloraError(f"{repo} has no config.json: not a transformers-format {part} model; point {repo.field} at one")
    if not any((out / choice[0]).is_file() for choice in WEIGHT_CHOICES):
        names = " or ".join(choice[0] for choice in WEIGHT_CHOICES)
        raise KoloraError(f"{repo} has no {names}: not a transformers-format {part} model; point {repo.field} at one")


def fetch_scorers(evaluate: EvaluateConfig, models: ModelsConfig, out: Path) -> ScorersDir:
    """Fill `out` with the scorers the config names: random ones of the real classes with `models.source` tiny
    (tiny sizes) or random (full sizes), else from their hubs.

    Every check evaluate runs on a folder before loading it runs here too (`check_aesthetic`, `check_clip`: the head
    against its CLIP, the CLIP's model_type against the families evaluate loads, shard indexes and processor files),
    so a head of the wrong size, a CLIP of another family (a SigLIP) or a preprocessor_config.json transformers would
    misread fails before any GPU time is spent, with the line evaluate would give, telling to point the config field
    at another repo (a rerun downloads the same file). The tiny and random stand-ins are always Chinese-CLIP,
    whatever `evaluate.clip_repo` names (nothing is downloaded to tell its family). The manifest's sha256 values are
    checked where the directory is read (evaluate), after its trip through the artifact store.
    """
    scorers, repos = ScorersDir(out), scorer_repos(evaluate)
    sources: dict[str, Any] = {part: None for part in (AESTHETIC, CLIP)}
    if models.source in ("tiny", "random"):
        tiny = models.source == "tiny"
        kind, sizes, seed = (TINY_KIND, TINY, models.tiny_seed) if tiny else (RANDOM_KIND, FULL, models.random_seed)
        writers = {AESTHETIC: write_random_aesthetic, CLIP: write_random_chinese_clip}
        for part, repo in repos.items():
            writers[part](scorers.part(part), seed, sizes)
            sources[part] = {"repo": kind, "revision": None, "stands_in_for": repo.reference}
        sources |= {"architecture": sizes.architecture, "seed": seed, "torch": torch.__version__}
        scorers.write_manifest(kind, sources)
    else:
        for part, repo in repos.items():
            download_scorer(repo, part, scorers.part(part))
            sources[part] = {"repo": repo.reference, "revision": repo.revision}
        scorers.write_manifest(HUB_KIND, sources)
    scorers.read_manifest()
    checks = {AESTHETIC: check_aesthetic, CLIP: check_clip}
    for part in repos:
        checks[part](scorers.part(part), scorers.source(part), scorers.fix(part))
    return scorers


def run_fetch_models(config: RunConfig, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """The fetch-models stage: the base model directory, then the scorers the evaluate section names."""
    fetch_models(config.models, outputs["models"])
    fetch_scorers(config.evaluate, config.models, outputs["scorers"])
