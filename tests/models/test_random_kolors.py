"""`models.source: random`: full-size random Kolors in the files Kolors ships, detected and loaded as the real ones.

Full size on the meta device (names, shapes, dtypes, detection, conversion: nothing is allocated); a reduced-size
directory written by the same code (`tests.models.scaled_kolors.REDUCED`) through kolora's real loader and the
train and generate stages on CPU.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from diffsynth.configs.model_config import huggingface_model_loader_configs, model_loader_configs
from diffsynth.models.kolors_text_encoder import ChatGLMModel
from diffsynth.models.model_manager import ModelDetectorFromHuggingfaceFolder, ModelDetectorFromSingleFile
from diffsynth.models.sdxl_unet import SDXLUNet
from diffsynth.models.sdxl_vae_decoder import SDXLVAEDecoder
from diffsynth.models.sdxl_vae_encoder import SDXLVAEEncoder
from diffsynth.models.utils import hash_state_dict_keys
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from jobs.generate import main as generate_main
from kolora_core.config import load_config
from kolora_core.models import random_kolors
from kolora_core.models.fetch import fetch_models
from kolora_core.models.layout import ModelDir
from kolora_core.models.loading import load_model_manager
from kolora_core.models.random_kolors import (
    CHATGLM3_6B,
    KOLORS_UNET,
    SDXL_VAE_FP16_FIX,
    TEXT_ENCODER_PREFIX,
    chatglm_config,
    materialise,
    random_value,
    shard_plan,
    tensor_specs,
    text_encoder_module,
    text_encoder_skeleton,
    tokenizer_dir,
    unet_skeleton,
    vae_skeleton,
    write_diffusers_weights,
    write_random_kolors,
)
from kolora_core.models.safetensors_stream import safetensors_header, write_safetensors
from tests.conftest import mark_complete, write_trainset
from tests.models.scaled_kolors import REDUCED, REDUCED_UNET, ScaledKolorsUNet, register_reduced_unet
from tests.training.helpers import train

DTYPES = {"F16": torch.float16, "F32": torch.float32, "BF16": torch.bfloat16}


def header_state(header: bytes) -> dict[str, torch.Tensor]:
    """What diffsynth's detector hashes, read back from the exact header bytes the writer puts in the file."""
    (length,) = struct.unpack("<Q", header[:8])
    entries = json.loads(header[8 : 8 + length])
    entries.pop("__metadata__", None)
    return {k: torch.empty(v["shape"], dtype=DTYPES[v["dtype"]], device="meta") for k, v in entries.items()}


def detected(state: dict[str, torch.Tensor]) -> tuple[list[str], list[type], str]:
    """(model names, classes, resource) diffsynth's single-file detector assigns to this key set."""
    detector = ModelDetectorFromSingleFile(model_loader_configs)
    assert detector.match("weights.safetensors", state), "diffsynth does not recognise these keys and shapes"
    return detector.keys_hash_with_shape_dict[hash_state_dict_keys(state, with_shape=True)]


def same_layout(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    assert [k for k in a if a[k].shape != b[k].shape] == []


def meta_state(module_class: type, **kwargs: object) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return module_class(**kwargs).state_dict()


# --- full size, on the meta device ------------------------------------------------------------------------------


def test_unet_file_is_what_diffsynth_detects_and_converts_to_the_kolors_unet() -> None:
    specs = tensor_specs(unet_skeleton(KOLORS_UNET).state_dict())
    state = header_state(safetensors_header(specs, {"format": "pt"}))
    assert {t.dtype for t in state.values()} == {torch.float16}  # Kolors' unet file is fp16
    assert sum(t.numel() for t in state.values()) == 2_579_458_820  # 2.58 B
    names, classes, resource = detected(state)
    assert (names, classes, resource) == (["sdxl_unet"], [SDXLUNet], "diffusers")
    converted, extra = SDXLUNet.state_dict_converter().from_diffusers(state)
    assert extra == {"is_kolors": True}
    same_layout(converted, meta_state(SDXLUNet, is_kolors=True))


def test_vae_file_is_what_diffsynth_detects_as_the_sdxl_vae_encoder_and_decoder(tmp_path: Path) -> None:
    vae = vae_skeleton(SDXL_VAE_FP16_FIX)
    state = header_state(safetensors_header(tensor_specs(vae.state_dict())))
    assert {t.dtype for t in state.values()} == {torch.float32}
    names, classes, resource = detected(state)
    assert (names, classes, resource) == (["sdxl_vae_encoder", "sdxl_vae_decoder"], [SDXLVAEEncoder, SDXLVAEDecoder], "diffusers")
    for cls in classes:
        converted, extra = cls.state_dict_converter().from_diffusers(state)
        same_layout(converted, meta_state(cls))
        assert extra == {"upcast_to_float32": True}
    vae.save_config(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["_class_name"], config["scaling_factor"], config["force_upcast"]) == ("AutoencoderKL", 0.13025, False)


def test_text_encoder_folder_is_chatglm3_6b_in_seven_shards(tmp_path: Path) -> None:
    state = text_encoder_skeleton(CHATGLM3_6B)
    assert all(k.startswith(TEXT_ENCODER_PREFIX) for k in state)
    assert sum(t.numel() for t in state.values()) == 6_243_584_032 and {t.dtype for t in state.values()} == {torch.float16}
    ours = {k.removeprefix(TEXT_ENCODER_PREFIX): v for k, v in state.items()}
    same_layout(ours, meta_state(ChatGLMModel, config=chatglm_config(CHATGLM3_6B), empty_init=False))
    # the rotary frequencies are the model's own, not random numbers
    expected = 1.0 / (10000 ** (torch.arange(0, 64, 2).to(torch.float16) / 64))
    assert torch.equal(ours["rotary_pos_emb.inv_freq"], expected)
    split = shard_plan(state, random_kolors.TEXT_ENCODER_SHARD)
    assert sorted(split.filename_to_tensors) == [f"pytorch_model-0000{i}-of-00007.bin" for i in range(1, 8)]
    assert split.metadata["total_size"] == 12_487_168_064
    # config.json as written: diffsynth's folder detector takes it and maps ChatGLMModel to the Kolors text encoder
    chatglm_config(CHATGLM3_6B).save_pretrained(tmp_path)
    folder = ModelDetectorFromHuggingfaceFolder(huggingface_model_loader_configs)
    assert folder.match(str(tmp_path), {})
    architectures = json.loads((tmp_path / "config.json").read_text())["architectures"]
    assert [folder.architecture_dict[a][1] for a in architectures] == ["kolors_text_encoder"]
    assert all((tokenizer_dir() / name).is_file() for name in random_kolors.TOKENIZER_FILES)


# --- the writers -------------------------------------------------------------------------------------------------


def test_streamed_safetensors_read_back_like_save_file(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 5),
        "b.weight": torch.randn(2, 2, 3).half(),
        "scalar": torch.tensor(7.5, dtype=torch.bfloat16),
        "ids": torch.arange(4),
    }
    write_safetensors(tmp_path / "s.safetensors", tensor_specs(tensors), tensors.items(), {"format": "pt"})
    save_file(tensors, str(tmp_path / "ref.safetensors"), metadata={"format": "pt"})
    ours, ref = load_file(str(tmp_path / "s.safetensors")), load_file(str(tmp_path / "ref.safetensors"))
    assert ours.keys() == ref.keys() and all(torch.equal(ours[k], ref[k]) and ours[k].dtype == ref[k].dtype for k in ref)
    with safe_open(str(tmp_path / "s.safetensors"), "pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    with pytest.raises(ValueError, match="the header says"):
        write_safetensors(tmp_path / "x.safetensors", tensor_specs(tensors), reversed(tensors.items()))


def test_values_depend_on_seed_and_name_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    skeleton = unet_skeleton(REDUCED_UNET)
    write_diffusers_weights(tmp_path / "a.safetensors", skeleton, seed=3, workers=4)
    monkeypatch.setattr(random_kolors, "IN_FLIGHT_BYTES", 1)  # one tensor at a time, one thread
    write_diffusers_weights(tmp_path / "b.safetensors", skeleton, seed=3, workers=1)
    write_diffusers_weights(tmp_path / "c.safetensors", skeleton, seed=4, workers=1)
    a, c = (load_file(str(tmp_path / f"{n}.safetensors")) for n in "ac")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    assert not torch.equal(a["conv_in.weight"], c["conv_in.weight"])
    assert float(a["conv_in.weight"].float().std()) == pytest.approx(0.02, rel=0.1)
    assert torch.equal(a["conv_norm_out.weight"], torch.ones(32, dtype=torch.float16))
    assert torch.equal(a["conv_in.bias"], torch.zeros(32, dtype=torch.float16))
    named = dict(materialise([("conv_in.weight", skeleton.conv_in.weight)], seed=3))
    assert torch.equal(named["conv_in.weight"], a["conv_in.weight"])


def test_in_memory_benchmark_models_keep_their_rotary_frequencies() -> None:
    """bench/real_kolors.py's path (random_kolors.materialise_module): the buffer survives allocation."""
    from kolora_core.models.random_kolors import materialise_module
    from tests.models.scaled_kolors import REDUCED_TEXT_ENCODER

    module = materialise_module(text_encoder_module(REDUCED_TEXT_ENCODER), "cpu", torch.float16)
    reference = ChatGLMModel(chatglm_config(REDUCED_TEXT_ENCODER), empty_init=False)
    assert torch.equal(module.rotary_pos_emb.inv_freq, reference.rotary_pos_emb.inv_freq.half())
    norms = [p for n, p in module.named_parameters() if "norm" in n]
    assert norms and all(bool((p == 1).all()) for p in norms)


# --- a reduced-size directory, end to end on CPU -----------------------------------------------------------------


@pytest.fixture(scope="module")
def reduced_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("random-models")
    write_random_kolors(ModelDir(out), seed=0, spec=REDUCED)
    return mark_complete(out)


@pytest.fixture
def reduced_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    register_reduced_unet(monkeypatch)


def test_reduced_directory_has_the_kolors_files(reduced_models: Path) -> None:
    model_dir = ModelDir(reduced_models)
    manifest = model_dir.read_manifest(verify="sha256")
    assert manifest["kind"] == "random" and manifest["sources"]["full_size"] is False
    encoder = model_dir.text_encoder
    index = json.loads((encoder / "pytorch_model.bin.index.json").read_text())
    shards = sorted({*index["weight_map"].values()})
    assert shards == sorted(p.name for p in encoder.glob("pytorch_model-*.bin")) and len(shards) > 1
    assert {"config.json", *random_kolors.TOKENIZER_FILES} <= {p.name for p in encoder.iterdir()}
    for name in random_kolors.TOKENIZER_FILES:  # the tokenizer KolorsPrompter reads, byte for byte
        assert (encoder / name).read_bytes() == (tokenizer_dir() / name).read_bytes()
    shard = torch.load(encoder / shards[0], weights_only=True)
    assert all(k.startswith(TEXT_ENCODER_PREFIX) and v.dtype == torch.float16 for k, v in shard.items())
    assert json.loads((model_dir.vae.parent / "config.json").read_text())["_class_name"] == "AutoencoderKL"
    assert set(manifest["files"]) >= {"kolors/unet/diffusion_pytorch_model.safetensors", f"kolors/text_encoder/{shards[0]}"}


def test_reduced_directory_loads_through_the_real_loader(reduced_models: Path, reduced_detected: None) -> None:
    manager = load_model_manager(ModelDir(reduced_models), "cpu", torch.float32)
    assert sorted(manager.model_name) == ["kolors_text_encoder", "sdxl_unet", "sdxl_vae_decoder", "sdxl_vae_encoder"]
    unet = manager.fetch_model("sdxl_unet")
    assert isinstance(unet, ScaledKolorsUNet) and unet.is_kolors
    file = load_file(str(ModelDir(reduced_models).unet))
    assert torch.equal(unet.conv_in.weight, file["conv_in.weight"].float())
    assert torch.equal(unet.text_intermediate_proj.weight, file["encoder_hid_proj.weight"].float())
    encoder = manager.fetch_model("kolors_text_encoder")
    embedding = encoder.embedding.word_embeddings.weight
    expected = random_value(f"{TEXT_ENCODER_PREFIX}embedding.word_embeddings.weight", embedding.half(), seed=0)
    assert torch.equal(embedding, expected.float())
    reference = ChatGLMModel(chatglm_config(REDUCED.text_encoder), empty_init=False)
    assert torch.allclose(encoder.rotary_pos_emb.inv_freq.float(), reference.rotary_pos_emb.inv_freq.float())


def test_reduced_directory_trains_and_generates(reduced_models: Path, reduced_detected: None, tmp_path: Path) -> None:
    """The train and generate stages as the workflow runs them, on the random directory (smoke settings)."""
    trainset = write_trainset(tmp_path / "trainset", count=2)
    lora = tmp_path / "lora"
    assert train(reduced_models, trainset, lora, "--train.steps", "2") == 0
    summary = json.loads((lora / "train_summary.json").read_text())
    assert summary["final_loss"] is not None and summary["cache"]["latents_encoded"] == 2
    images = tmp_path / "images"
    argv = ["--profile", "smoke", "--models", str(reduced_models), "--lora", str(lora), "--images", str(images)]
    argv += ["--generate.prompts", '[{"prompt": "二次元", "seed": 1}]', "--generate.steps", "2"]
    assert generate_main(argv) == 0
    record = json.loads((images / "generations.jsonl").read_text().splitlines()[0])
    assert record["base_model"] == "reduced-size random Kolors (kolors-random-v1, seed 0)"


def test_fetch_models_writes_the_random_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`models.source: random` through fetch-models (the full spec swapped for the reduced one to stay small)."""
    monkeypatch.setattr(random_kolors, "FULL", REDUCED)
    config = load_config("full", overrides={"models.source": "random", "models.random_seed": 5})
    model_dir = fetch_models(config.models, tmp_path / "models")
    manifest = model_dir.read_manifest()
    assert manifest["kind"] == "random" and manifest["sources"]["seed"] == 5
