"""Materialise a base-model directory: Kolors from ModelScope, or the tiny random models.

Run once per model version by the fetch-models stage, never inside training. ModelScope's
`snapshot_download` skips files already complete in `local_dir`, so a retried download resumes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from kolora_core.config import ModelsConfig
from kolora_core.errors import KoloraError
from kolora_core.models.layout import TEXT_ENCODER_DIR, ModelDir
from kolora_core.models.tiny import TINY_ARCHITECTURE, build_tiny_models

# What the seed downloads with diffsynth's download_models(["Kolors", "SDXL-vae-fp16-fix"]), minus the
# Kolors VAE, which kolora does not use (the fp16-fix VAE encodes for training and decodes without NaNs).
KOLORS_PATTERNS = ["text_encoder/*", "unet/diffusion_pytorch_model.safetensors"]
VAE_PATTERNS = ["diffusion_pytorch_model.safetensors", "config.json"]


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
    """ModelScope `snapshot_download` into the layout; it skips files already complete on disk."""
    from modelscope.hub.snapshot_download import snapshot_download

    kolors_root = model_dir.root / Path(TEXT_ENCODER_DIR).parent
    try:
        snapshot_download(
            config.kolors_repo, revision=config.revision, allow_patterns=KOLORS_PATTERNS, local_dir=str(kolors_root)
        )
        snapshot_download(config.vae_repo, allow_patterns=VAE_PATTERNS, local_dir=str(model_dir.vae.parent))
    except Exception as exc:  # modelscope raises many types (HTTP, hub, IO); all mean "could not download"
        raise KoloraError(
            f"downloading {config.kolors_repo} / {config.vae_repo} from ModelScope failed ({type(exc).__name__}: {exc}); "
            "check network access and MODELSCOPE_API_TOKEN, or provide a model directory"
        ) from exc
    model_dir.write_manifest(
        "kolors", {"kolors_repo": config.kolors_repo, "vae_repo": config.vae_repo, "revision": config.revision}
    )


def fetch_models(config: ModelsConfig, out: Path) -> ModelDir:
    """Fill `out` with the configured base model and verify it against the manifest just written."""
    model_dir = ModelDir(out)
    if config.source == "tiny":
        write_tiny_models(model_dir, config.tiny_seed)
    else:
        download_kolors(model_dir, config)
    model_dir.read_manifest()
    return model_dir
