"""kolora's fast sampler reproduces diffsynth's SDXLImagePipeline (the seed's path) and does not depend on batching."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from diffsynth import SDXLImagePipeline
from PIL import Image

from jobs.generate import main as generate_main
from kolora_core.inference.story import Job, read_png_record
from kolora_core.models.fp8 import Fp8Linear, to_fp8
from kolora_core.models.layout import ModelDir
from kolora_core.models.loading import load_model_manager
from kolora_core.models.sampler import KolorsSampler, take_models
from kolora_core.models.unet_compile import compile_unet, uncompile_unet

PROMPT, NEGATIVE = "二次元,一个紫色短发小女孩,在家中沙发上坐着", "丑陋、变形、嘈杂、模糊、低对比度"


def _job(index: int, seed: int, cfg: float = 4.0, steps: int = 4, width: int = 64, height: int = 64, prompt: str = PROMPT) -> Job:
    return Job(index, prompt, NEGATIVE, seed, cfg, steps, width, height, 1.0)


def _sampler(models: Path) -> KolorsSampler:
    parts = take_models(load_model_manager(ModelDir(models), "cpu", torch.float32))
    return KolorsSampler(parts["kolors_text_encoder"], parts["sdxl_unet"], parts["sdxl_vae_decoder"], device="cpu")


def test_batch_of_one_is_the_pipeline_image(tiny_models: Path) -> None:
    """Same prompt, seed and settings: the seed's SDXLImagePipeline call and kolora's sampler decode the same pixels."""
    pipe = SDXLImagePipeline.from_model_manager(load_model_manager(ModelDir(tiny_models), "cpu", torch.float32))
    decoded: list[torch.Tensor] = []
    to_image = pipe.vae_output_to_image
    pipe.vae_output_to_image = lambda out: (decoded.append(out.float().clone()), to_image(out))[1]
    # CFG on with a non-square size (add_time_id is [H, W, 0, 0, H, W]), and CFG off (no negative pass).
    jobs = [_job(0, seed=3, width=128, height=64), _job(1, seed=5, cfg=1.0, steps=3)]
    for job in jobs:
        torch.manual_seed(job.seed)
        pipe(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt,
            cfg_scale=job.cfg_scale,
            num_inference_steps=job.steps,
            height=job.height,
            width=job.width,
            seed=job.seed,
            progress_bar_cmd=lambda steps: steps,
        )
    sampler = _sampler(tiny_models)
    sampler.encode([PROMPT, NEGATIVE])
    for job, expected in zip(jobs, decoded, strict=True):
        got = sampler.decode(sampler.sample([job]))[0]
        assert got.shape == expected.shape == (1, 3, job.height, job.width)
        assert expected.std() > 0.1, "a flat image would make this comparison meaningless"
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)  # encoding pos+neg as one batch: float rounding only


def test_batching_gives_the_images_of_one_at_a_time(tiny_models: Path) -> None:
    sampler = _sampler(tiny_models)
    jobs = [_job(0, seed=0), _job(1, seed=1, cfg=7.5, prompt=PROMPT + ",全身"), _job(2, seed=0, prompt="二次元,紫色长发少女")]
    sampler.encode([j.prompt for j in jobs] + [NEGATIVE])
    together = sampler.decode(sampler.sample(jobs))
    alone = [sampler.decode(sampler.sample([job]))[0] for job in jobs]
    for a, b in zip(together, alone, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert (together[0] - together[2]).abs().max() > 1e-2, "same seed, other prompt: must differ"
    batches = list(sampler.render([*jobs, _job(3, seed=9, cfg=1.0)], batch_size=2))
    assert [r.request.index for r in batches] == [0, 1, 2, 3]  # grouped by settings, in order of first appearance


def test_compiled_fp8_layers_take_their_first_scales_from_an_eager_first_step(tiny_models: Path) -> None:
    """generate.fp8 compiled: step 0 runs eagerly (each FP8 layer's first input scale), later steps in the compiled
    graph with the scale of the step before; the latents stay those of eager FP8 within e4m3's rounding."""
    sampler = _sampler(tiny_models)
    sampler.encode([PROMPT, NEGATIVE])
    layers = to_fp8(sampler.unet)
    jobs = [_job(0, seed=3, steps=5), _job(1, seed=4, steps=5)]
    eager = sampler.sample(jobs)
    for module in sampler.unet.modules():  # as just converted: no layer has a scale yet
        if isinstance(module, Fp8Linear):
            module.calibrated = False
            module.input_scale.zero_()
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compile_unet(sampler.unet, "whole", backend="aot_eager")
    compiled = sampler.sample(jobs)
    modules = [m for m in sampler.unet.modules() if isinstance(m, Fp8Linear)]
    assert len(modules) == layers > 0 and all(m.calibrated and bool(m.input_scale > 0) for m in modules)
    assert counters["stats"]["unique_graphs"] == 1, "steps 1-4 ran the one compiled graph"
    assert 0 < float((compiled - eager).norm() / eager.norm()) < 0.02
    uncompile_unet(sampler.unet)


def test_compiling_compiles_the_vae_decoder_too_and_it_decodes_as_eager(tiny_models: Path) -> None:
    """aot_eager traces as inductor does without C++ compilation (inductor: bench/generate_bench.py's `vae` flag)."""
    parts = take_models(load_model_manager(ModelDir(tiny_models), "cpu", torch.float32))
    compiled_sampler = KolorsSampler(None, parts["sdxl_unet"], parts["sdxl_vae_decoder"], device="cpu", compile_scope=True)
    assert compiled_sampler.vae_decoder._compiled_call_impl is not None, "the stage's compile setting reaches the VAE"
    sampler = _sampler(tiny_models)
    assert sampler.vae_decoder._compiled_call_impl is None
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    eager = sampler.decode(latents)
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    sampler.configure_vae(compiled=True, backend="aot_eager")
    compiled = sampler.decode(latents)
    assert counters["stats"]["unique_graphs"] == 1, "one image at a time: one static shape, one graph, no recompiles"
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    sampler.configure_vae(compiled=False)
    assert sampler.vae_decoder._compiled_call_impl is None


def test_text_encoder_is_released_after_encoding(tiny_models: Path) -> None:
    manager = load_model_manager(ModelDir(tiny_models), "cpu", torch.float32)  # kept alive, as the stage keeps it
    parts = take_models(manager)
    sampler = KolorsSampler(parts.pop("kolors_text_encoder"), parts["sdxl_unet"], parts["sdxl_vae_decoder"], device="cpu")
    assert "kolors_text_encoder" not in manager.model_name
    encoder = weakref.ref(sampler.prompter.text_encoder)
    sampler.encode([PROMPT, NEGATIVE])
    sampler.release_text_encoder()
    gc.collect()
    assert encoder() is None, "something still holds the text encoder (the model manager?)"
    assert sampler.decode(sampler.sample([_job(0, seed=1)]))[0].shape == (1, 3, 64, 64)
    with pytest.raises(Exception, match="encode all prompts first"):
        sampler.encode(["a prompt nobody encoded"])


def _generate(models: Path, lora: Path, out: Path, *extra: str) -> None:
    argv = ["--profile", "smoke", "--models", str(models), "--lora", str(lora), "--images", str(out), *extra]
    assert generate_main(argv) == 0


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_stage_engines_agree_and_overrides_apply(tiny_models: Path, tiny_lora: Path, tmp_path: Path) -> None:
    prompts = tmp_path / "story.jsonl"
    prompts.write_text(
        '{"prompt": "二次元,少女", "negative_prompt": "丑陋", "seed": 3}\n'
        '{"prompt": "二次元,少年", "seed": 4, "cfg_scale": 1.0, "steps": 2, "size": "128x64"}\n'
        '{"prompt": "二次元,少女", "negative_prompt": "丑陋", "seed": 3, "lora_strength": 0}\n',
        encoding="utf-8",
    )
    story = ("--generate.prompts_file", str(prompts))
    _generate(tiny_models, tiny_lora, tmp_path / "fast", *story, "--generate.batch_size", "3")
    _generate(tiny_models, tiny_lora, tmp_path / "seed", *story, "--generate.engine", "seed")
    _generate(tiny_models, tiny_lora, tmp_path / "none", *story, "--generate.lora_strength", "0")
    for name in ("000.png", "001.png", "002.png"):
        assert np.abs(_pixels(tmp_path / "fast" / name) - _pixels(tmp_path / "seed" / name)).max() <= 1
    second = read_png_record(tmp_path / "fast" / "001.png")
    assert (second["cfg_scale"], second["steps"], second["width"], second["height"]) == (1.0, 2, 128, 64)
    assert Image.open(tmp_path / "fast" / "001.png").size == (128, 64)
    assert (second["engine"], second["story_size"]) == ("fast", 3)
    assert second["base_model"] == "tiny random Kolors (kolors-tiny-v1, seed 0)"
    assert read_png_record(tmp_path / "seed" / "001.png")["engine"] == "seed"
    # Per-prompt strength 0 after strength 1 in the same process = the base model: the merge was undone, not stacked.
    assert read_png_record(tmp_path / "fast" / "002.png")["lora_strength"] == 0.0
    assert np.abs(_pixels(tmp_path / "fast" / "002.png") - _pixels(tmp_path / "none" / "000.png")).max() <= 1
    assert np.abs(_pixels(tmp_path / "fast" / "002.png") - _pixels(tmp_path / "fast" / "000.png")).max() > 0
