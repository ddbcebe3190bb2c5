"""LoRA exports that other tools load at the trained strength: diffusers and kohya/ComfyUI.

kolora's own `lora.safetensors` (`format.py`) uses diffsynth module names (`blocks.7.transformer_blocks.0.attn1.to_q`)
that only diffsynth understands. Two more files are written next to it:

* `lora_diffusers.safetensors`: `unet.<diffusers module>.lora_A.weight` / `.lora_B.weight`, the
  PEFT form of `StableDiffusionXLPipeline.load_lora_weights` and `UNet2DConditionModel.load_lora_adapter`.
  diffusers keeps no alpha for this form (it sets lora_alpha = rank, scale 1), so alpha/rank is
  baked into lora_B: loading at weight 1.0 gives the trained strength.
* `lora_kohya.safetensors`: `lora_unet_<SGM module, "." -> "_">.lora_down.weight` / `.lora_up.weight` /
  `.alpha`, what kohya's sd-scripts writes for SDXL and what ComfyUI, A1111/Forge and diffusers'
  kohya converter read. Those loaders all scale by alpha / rank (rank = rows of lora_down), so
  the unscaled tensors and the trained alpha give the trained strength.

Names: diffsynth's `SDXLUNet` is a flat list of blocks (ResnetBlock, AttentionBlock, Push/Pop,
Down/UpSampler); `diffusers_block_names` walks that list and names each block the way diffusers'
`UNet2DConditionModel` does, which is the inverse of diffsynth's own
`SDXLUNet.state_dict_converter().from_diffusers()` (checked against it on the full-size Kolors
UNet in the tests), generalised to any layout (the tiny test UNet). Inside attention blocks diffsynth's
`to_out` is diffusers' `to_out.0`, and `act_fn.proj` / `ff` are `ff.net.0.proj` / `ff.net.2`.
SGM names follow from the diffusers ones (`input_blocks.N.{0,1}`, `middle_block.{0,1,2}`,
`output_blocks.N.{0,1}`), checked against diffsynth's `from_civitai` table on the full-size UNet.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from kolora_core.errors import KoloraError
from kolora_core.lora.format import LoRAFile, save_safetensors

DIFFUSERS_FILE = "lora_diffusers.safetensors"
KOHYA_FILE = "lora_kohya.safetensors"
EXPORT_FORMAT = "kolora-lora-export-v1"


@dataclass(frozen=True)
class BlockName:
    """Where one diffsynth block sits in diffusers' UNet2DConditionModel and in SGM's UNet."""

    diffusers: str  # e.g. "down_blocks.1.attentions.0"
    sgm: str  # e.g. "input_blocks.4.1"


def unet_layout(unet: torch.nn.Module) -> list[str]:
    """The block class names of a diffsynth SDXL-style UNet, which is all the naming depends on."""
    return [type(block).__name__ for block in unet.blocks]


def diffusers_block_names(layout: Sequence[str]) -> dict[int, BlockName]:
    """diffsynth block index -> diffusers and SGM block names, for any SDXL-style layout.

    Down blocks end with a DownSampler (except the last); each resnet (+attention) layer is followed
    by a PushBlock. The mid block is what lies between the last PushBlock and the first PopBlock.
    Every up-block layer starts with a PopBlock; an UpSampler closes each up block but the last.
    """
    first_pop = layout.index("PopBlock")
    last_push = max(i for i, kind in enumerate(layout[:first_pop]) if kind == "PushBlock")
    names: dict[int, BlockName] = {}

    # Down blocks: count layers per block (resnets before the first DownSampler).
    per_block = sum(1 for kind in layout[: layout.index("DownSampler")] if kind == "ResnetBlock")
    down, layer, previous = 0, 0, ""
    for i, kind in enumerate(layout[: last_push + 1]):
        sgm_layer = 1 + down * (per_block + 1) + layer
        if kind == "ResnetBlock":
            names[i] = BlockName(f"down_blocks.{down}.resnets.{layer}", f"input_blocks.{sgm_layer}.0")
        elif kind == "AttentionBlock":
            names[i] = BlockName(f"down_blocks.{down}.attentions.{layer}", f"input_blocks.{sgm_layer}.1")
        elif kind == "DownSampler":
            names[i] = BlockName(f"down_blocks.{down}.downsamplers.0", f"input_blocks.{(down + 1) * (per_block + 1)}.0.op")
        elif kind == "PushBlock" and previous in ("ResnetBlock", "AttentionBlock"):
            layer += 1
        if kind == "PushBlock" and previous == "DownSampler":
            down, layer = down + 1, 0
        previous = kind

    resnets, attentions = 0, 0
    for i in range(last_push + 1, first_pop):
        if layout[i] == "ResnetBlock":
            names[i] = BlockName(f"mid_block.resnets.{resnets}", f"middle_block.{0 if resnets == 0 else 2}")
            resnets += 1
        elif layout[i] == "AttentionBlock":
            names[i] = BlockName(f"mid_block.attentions.{attentions}", "middle_block.1")
            attentions += 1

    up, layer, inner = 0, -1, 0
    for i in range(first_pop, len(layout)):
        kind = layout[i]
        sgm_layer = up * (per_block + 1) + layer
        if kind == "PopBlock":
            layer, inner = layer + 1, 0
        elif kind == "ResnetBlock":
            names[i] = BlockName(f"up_blocks.{up}.resnets.{layer}", f"output_blocks.{sgm_layer}.0")
            inner = 1
        elif kind == "AttentionBlock":
            names[i] = BlockName(f"up_blocks.{up}.attentions.{layer}", f"output_blocks.{sgm_layer}.1")
            inner = 2
        elif kind == "UpSampler":
            names[i] = BlockName(f"up_blocks.{up}.upsamplers.0", f"output_blocks.{sgm_layer}.{inner}")
            up, layer = up + 1, -1
    return names


def _inner_to_diffusers(inner: str) -> str:
    """Module path inside a block: diffsynth -> diffusers (to_out -> to_out.0, GEGLU and ff names)."""
    parts = inner.split(".")
    out: list[str] = []
    for part in parts:
        if part == "to_out":
            out += ["to_out", "0"]
        elif part == "act_fn":
            out += ["ff", "net", "0"]
        elif part == "ff":
            out += ["ff", "net", "2"]
        else:
            out.append(part)
    return ".".join(out)


_TOP_LEVEL = {
    "time_embedding.0": "time_embedding.linear_1",
    "time_embedding.2": "time_embedding.linear_2",
    "add_time_embedding.0": "add_embedding.linear_1",
    "add_time_embedding.2": "add_embedding.linear_2",
    "text_intermediate_proj": "encoder_hid_proj",
}


def diffsynth_to_diffusers(name: str, blocks: dict[int, BlockName], sgm: bool = False) -> str:
    """A diffsynth module or parameter path as diffusers (or, with `sgm`, SGM/kohya) names it."""
    parts = name.split(".")
    if parts[0] == "blocks":
        block = blocks.get(int(parts[1]))
        if block is None:
            raise KoloraError(f"diffsynth module {name} sits in a Push/Pop block, which has no weights")
        inner = _inner_to_diffusers(".".join(parts[2:]))
        if sgm and block.sgm.endswith(".op"):
            return block.sgm if inner == "conv" else f"{block.sgm}.{inner.removeprefix('conv.')}"
        return f"{block.sgm if sgm else block.diffusers}.{inner}"
    if sgm:
        raise KoloraError(f"{name} is outside the UNet blocks; LoRA exports cover attention layers only")
    for prefix, renamed in _TOP_LEVEL.items():
        if name == prefix or name.startswith(prefix + "."):
            return renamed + name[len(prefix) :]
    return name


# which export carries which adapter: the config refuses any other combination before training (VARIANT_EXPORTS)
DIFFUSERS_VARIANTS, KOHYA_VARIANTS = ("lora", "dora"), ("lora", "loha", "lokr")
# kohya/LyCORIS tensor names <-> peft's (kolora's) names; LoHa and LoKr keep LyCORIS' own names, which peft copied
_KOHYA_NAMES = {"lora_A": "lora_down.weight", "lora_B": "lora_up.weight"}


def _refuse(lora: LoRAFile, name: str, carries: Sequence[str]) -> None:
    if lora.variant not in carries:
        raise KoloraError(f"the {name} export cannot carry a {lora.variant} adapter (it carries {', '.join(carries)})")


def to_diffusers(lora: LoRAFile, layout: Sequence[str]) -> dict[str, torch.Tensor]:
    """`unet.<diffusers module>.lora_A/B.weight`, with alpha/rank baked into B; DoRA adds `.lora_magnitude_vector`
    (peft's saved form, from which diffusers' `load_lora_adapter` sets `use_dora`)."""
    _refuse(lora, "diffusers", DIFFUSERS_VARIANTS)
    blocks = diffusers_block_names(layout)
    tensors: dict[str, torch.Tensor] = {}
    for module in lora.modules():
        parts = {k: v.float() for k, v in lora.parts(module).items()}
        target = "unet." + diffsynth_to_diffusers(module, blocks)
        tensors[target + ".lora_A.weight"] = parts["lora_A"].contiguous()
        tensors[target + ".lora_B.weight"] = (parts["lora_B"] * lora.scale).contiguous()
        if "lora_magnitude_vector" in parts:
            tensors[target + ".lora_magnitude_vector"] = parts["lora_magnitude_vector"].contiguous()
    return tensors


def kohya_key(module: str, blocks: dict[int, BlockName]) -> str:
    return "lora_unet_" + diffsynth_to_diffusers(module, blocks, sgm=True).replace(".", "_")


def _lokr_dim(parts: dict[str, torch.Tensor]) -> int | None:
    """The rank LyCORIS loaders divide alpha by: that of the low-rank factor, none when both factors are whole."""
    for factor in ("lokr_w2_b", "lokr_w1_b"):
        if factor in parts:
            return parts[factor].shape[0]
    return None


def to_kohya(lora: LoRAFile, layout: Sequence[str]) -> dict[str, torch.Tensor]:
    """`lora_unet_<sgm path>.lora_down/.lora_up/.alpha`: unscaled tensors plus the trained alpha. LoHa: LyCORIS'
    `.hada_w1_a/.hada_w1_b/.hada_w2_a/.hada_w2_b` + `.alpha` (loaders scale by alpha / rank, as peft). LoKr: LyCORIS'
    `.lokr_w1/.lokr_w2` (or their `_a/_b` factors) with alpha/rank baked into w1 and `.alpha` = the rank the loaders
    divide by (LyCORIS ignores alpha when both factors are whole, peft does not: baking gives both the trained update)."""
    _refuse(lora, "kohya", KOHYA_VARIANTS)
    blocks = diffusers_block_names(layout)
    tensors: dict[str, torch.Tensor] = {}
    for module in lora.modules():
        parts = {k: v.float() for k, v in lora.parts(module).items()}
        key = kohya_key(module, blocks)
        alpha: float | None = float(lora.alpha)
        if lora.variant == "lokr":
            baked = "lokr_w1" if "lokr_w1" in parts else "lokr_w1_a"
            parts[baked] = parts[baked] * lora.scale
            dim = _lokr_dim(parts)
            alpha = float(dim) if dim is not None else None
        for name, value in parts.items():
            tensors[f"{key}.{_KOHYA_NAMES.get(name, name)}"] = value.contiguous()
        if alpha is not None:
            tensors[key + ".alpha"] = torch.tensor(alpha, dtype=torch.float32)
    return tensors


def write_exports(
    directory: Path,
    lora: LoRAFile,
    layout: Sequence[str],
    extra: dict[str, str] | None = None,
    formats: Sequence[str] = ("diffusers", "kohya"),
    *,
    output_name: str,
) -> list[Path]:
    """Write the export files of `formats` atomically next to lora.safetensors; returns their paths.

    `output_name` becomes the kohya file's `ss_output_name`, the name A1111/Forge list it under and accept in
    `<lora:NAME:1>` whatever the file is called (their alias), and the name the generate stage's PNGs cite.
    """
    common = {"format": EXPORT_FORMAT, "rank": str(lora.rank), "alpha": repr(float(lora.alpha))} | dict(extra or {})
    if lora.variant != "lora":
        common["variant"] = lora.variant
    network = {"lora": "networks.lora", "loha": "lycoris.kohya", "lokr": "lycoris.kohya"}.get(lora.variant, "")
    kohya_meta = {
        "ss_network_module": network,
        "ss_network_dim": str(lora.rank),
        "ss_network_alpha": repr(float(lora.alpha)),
        "ss_output_name": output_name,
    }
    if lora.variant != "lora":
        kohya_meta["ss_network_args"] = json.dumps({"algo": lora.variant})
    files = {
        "diffusers": (DIFFUSERS_FILE, to_diffusers, common | {"scale_baked_into_lora_B": repr(lora.scale)}),
        "kohya": (KOHYA_FILE, to_kohya, common | kohya_meta),
    }
    written = []
    for export in formats:
        name, convert, metadata = files[export]
        path = directory / name
        save_safetensors(path, convert(lora, layout), metadata)
        written.append(path)
    return written


def addnet_hash(path: Path) -> str:
    """sha256 of a safetensors file's tensor data, past its header: kohya sd-scripts' `sshs_model_hash`, the
    hash A1111 computes for a LoRA (`modules/hashes.py` addnet_hash_safetensors) and Civitai's AutoV3.
    Metadata lives in the header, so it is the same for any metadata."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        handle.seek(8 + int.from_bytes(handle.read(8), "little"))
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def a1111_identity(path: Path) -> tuple[str, str]:
    """(name, short hash) A1111's Lora extension gives a kohya file (`extensions-builtin/Lora/network.py`
    NetworkOnDisk): the alias `ss_output_name` else the file stem; the first 12 hex digits of `sshs_model_hash`
    else of the addnet hash."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    name = metadata.get("ss_output_name") or path.stem
    return name, (metadata.get("sshs_model_hash") or addnet_hash(path))[:12]


def _kolora_key(module: str, name: str) -> str:
    """peft's key form of one adapter tensor: LoRA/DoRA tensors end in `.default.weight`, LoHa/LoKr in `.default`."""
    return f"{module}.{name}.default" + (".weight" if name.startswith("lora_") else "")


def read_export(path: Path, layout: Sequence[str]) -> LoRAFile:
    """An export read back into kolora's form (diffsynth names, rank, alpha, variant) for `merge_lora`.

    Diffusers exports come back with alpha = rank (their scale is baked into B); kohya exports with
    the stored alpha (LoKr: alpha = rank, its scale is baked). Used to prove the exports are lossless; a module
    the layout lacks is an error.
    """
    blocks = diffusers_block_names(layout)
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    out: dict[str, torch.Tensor] = {}
    alphas: set[float] = set()
    rank = int(metadata.get("rank", "0"))
    variant = metadata.get("variant", "lora")
    kohya = any(k.startswith("lora_unet_") for k in tensors)
    if kohya:
        names = {kohya_key(m, blocks): m for m in _attention_modules(blocks, layout)}
        peft_name = {v: k for k, v in _KOHYA_NAMES.items()}
    else:
        names = {"unet." + diffsynth_to_diffusers(m, blocks): m for m in _attention_modules(blocks, layout)}
        peft_name = {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B", "lora_magnitude_vector": "lora_magnitude_vector"}
    for key, value in tensors.items():
        base, kind = next(((b, key[len(b) + 1 :]) for b in (key.rsplit(".", n)[0] for n in (2, 1)) if b in names), ("", ""))
        if not base:
            raise KoloraError(f"{path}: {key} names no attention layer of this UNet layout")
        if kind == "alpha":
            alphas.add(float(value))
        else:
            out[_kolora_key(names[base], peft_name.get(kind, kind))] = value
    alpha = alphas.pop() if kohya and variant != "lokr" and len(alphas) == 1 else float(rank)
    metadata = metadata | {"variant": variant}
    return LoRAFile(tensors=out, rank=rank, alpha=alpha, metadata=metadata)


def _attention_modules(blocks: dict[int, BlockName], layout: Sequence[str]) -> list[str]:
    """Every to_q/to_k/to_v/to_out path a LoRA can target, up to 16 transformer layers per block."""
    modules = []
    for index, kind in enumerate(layout):
        if kind != "AttentionBlock":
            continue
        for layer in range(16):
            for attn in ("attn1", "attn2"):
                modules += [
                    f"blocks.{index}.transformer_blocks.{layer}.{attn}.{proj}" for proj in ("to_q", "to_k", "to_v", "to_out")
                ]
    return modules
