"""Load a model directory into a diffsynth `ModelManager`, the object both seed scripts start from.

Real Kolors (and `models.source: random`, the same files) goes through `ModelManager.load_models` as the seed
does for the UNet and VAE files (detection by state-dict hashes). The text encoder folder is loaded the way
diffsynth's folder detector does it (config.json's architectures name `ChatGLMModel` -> `from_pretrained`),
but straight onto its device in its dtype (accelerate's device_map: shard by shard, no CPU copy of the
12.5 GB first), and only when asked for: generate skips it when train's prompt embeddings cover its texts.
Tiny models cannot be detected by hash, so they are built from `kolora_core.models.tiny` and registered by
name, which is what `ModelManager.load_models` does internally after detection.
"""

from __future__ import annotations

import json

import torch
from diffsynth import ModelManager
from diffsynth.models.kolors_text_encoder import ChatGLMModel
from safetensors import safe_open
from safetensors.torch import load_file

from kolora_core.errors import KoloraError
from kolora_core.models.layout import ModelDir
from kolora_core.models.shard_index import check_shard_indexes
from kolora_core.models.tiny import TinyKolorsUNet, TinyVAEDecoder, TinyVAEEncoder


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> torch.nn.Module:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise KoloraError(f"weight file {source} does not fit {type(module).__name__}: {first}") from None
    return module


def _register(manager: ModelManager, name: str, module: torch.nn.Module, path: str) -> None:
    manager.model.append(module)
    manager.model_name.append(name)
    manager.model_path.append(path)


def _load_tiny(model_dir: ModelDir, manager: ModelManager, dtype: torch.dtype, device: str) -> None:
    vae = load_file(str(model_dir.vae))
    parts = {
        "sdxl_unet": _load_strict(TinyKolorsUNet(), load_file(str(model_dir.unet)), str(model_dir.unet)),
        "sdxl_vae_encoder": _load_strict(
            TinyVAEEncoder(),
            {k.removeprefix("encoder."): v for k, v in vae.items() if k.startswith("encoder.")},
            str(model_dir.vae),
        ),
        "sdxl_vae_decoder": _load_strict(
            TinyVAEDecoder(),
            {k.removeprefix("decoder."): v for k, v in vae.items() if k.startswith("decoder.")},
            str(model_dir.vae),
        ),
    }
    for name, module in parts.items():
        _register(manager, name, module.to(device=device, dtype=dtype), f"{model_dir.root}:{name}")


def _load_text_encoder(model_dir: ModelDir, manager: ModelManager, dtype: torch.dtype, device: str) -> None:
    config = model_dir.text_encoder / "config.json"
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    if "ChatGLMModel" not in architectures:
        raise KoloraError(f"{config} names {architectures}, not ChatGLMModel: not the Kolors text encoder; rerun fetch-models")
    check_shard_indexes(model_dir.text_encoder)
    encoder = ChatGLMModel.from_pretrained(str(model_dir.text_encoder), dtype=dtype, device_map=device)
    _register(manager, "kolors_text_encoder", encoder.eval(), str(model_dir.text_encoder))


def check_headers(model_dir: ModelDir, files: list[str]) -> None:
    """Parse the header of every safetensors weight file, so a damaged one is named instead of failing deep in a loader.

    A header is a few KB and safetensors checks that its offsets cover the file exactly, so this is instant and
    catches any damage to the header and index; damage inside tensor data only the sha256 check finds
    (`models.verify: sha256`).
    """
    for rel in files:
        path = model_dir.root / rel
        if path.suffix != ".safetensors":
            continue
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, ...: the file is unusable either way
            reason = " ".join(str(exc).split())[:200]
            raise KoloraError(
                f"weight file {path} is damaged ({type(exc).__name__}: {reason}); rerun fetch-models "
                "(models.verify: sha256 checks every file against its manifest hash)"
            ) from None


def load_model_manager(
    model_dir: ModelDir, device: str, dtype: torch.dtype, text_encoder: bool = True, text_encoder_device: str | None = None
) -> ModelManager:
    """A ModelManager holding the text encoder (on `text_encoder_device`, default `device`; none when
    `text_encoder` is false: 12.5 GB not read), the UNet and the VAE encoder/decoder of `model_dir`."""
    manifest = model_dir.read_manifest()
    check_headers(model_dir, list(manifest["files"]))
    manager = ModelManager(torch_dtype=dtype, device=device)
    if text_encoder:
        _load_text_encoder(model_dir, manager, dtype, str(text_encoder_device or device))
    if manifest["kind"] == "tiny":
        _load_tiny(model_dir, manager, dtype, device)
    else:
        manager.load_models([str(model_dir.unet), str(model_dir.vae)])
    found = set(manager.model_name)
    needs = ("kolors_text_encoder",) if text_encoder else ()
    for needed in (*needs, "sdxl_unet", "sdxl_vae_encoder", "sdxl_vae_decoder"):
        if needed not in found:
            raise KoloraError(
                f"no {needed} could be loaded from {model_dir.root}: the weight files are not Kolors "
                "(expected the Kwai-Kolors/Kolors text_encoder + unet and the sdxl-vae-fp16-fix VAE)"
            )
    return manager
