"""Load a model directory into a diffsynth `ModelManager`, the object both seed scripts start from.

Real Kolors goes through `ModelManager.load_models` exactly as the seed does (detection by state-dict
hashes). Tiny models cannot be detected that way, so they are built from `kolora_core.models.tiny`
and registered by name, which is what `ModelManager.load_models` does internally after detection.
"""

from __future__ import annotations

import torch
from diffsynth import ModelManager
from diffsynth.models.kolors_text_encoder import ChatGLMModel
from safetensors.torch import load_file

from kolora_core.errors import KoloraError
from kolora_core.models.layout import ModelDir
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
    text_encoder = ChatGLMModel.from_pretrained(str(model_dir.text_encoder), dtype=dtype)
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
    _register(manager, "kolors_text_encoder", text_encoder.to(device=device).eval(), str(model_dir.text_encoder))
    for name, module in parts.items():
        _register(manager, name, module.to(device=device, dtype=dtype), f"{model_dir.root}:{name}")


def load_model_manager(model_dir: ModelDir, device: str, dtype: torch.dtype) -> ModelManager:
    """A ModelManager holding text encoder, UNet and VAE encoder/decoder of `model_dir`."""
    manifest = model_dir.read_manifest()
    manager = ModelManager(torch_dtype=dtype, device=device)
    if manifest["kind"] == "tiny":
        _load_tiny(model_dir, manager, dtype, device)
    else:
        manager.load_models([str(model_dir.text_encoder), str(model_dir.unet), str(model_dir.vae)])
    found = set(manager.model_name)
    for needed in ("kolors_text_encoder", "sdxl_unet", "sdxl_vae_encoder", "sdxl_vae_decoder"):
        if needed not in found:
            raise KoloraError(
                f"no {needed} could be loaded from {model_dir.root}: the weight files are not Kolors "
                "(expected the Kwai-Kolors/Kolors text_encoder + unet and the sdxl-vae-fp16-fix VAE)"
            )
    return manager
