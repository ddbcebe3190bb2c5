"""The trainer options of issue 14 on the tiny models: each one does what its formula says (and would fail if ignored)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from kolora_core.config import TrainConfig
from kolora_core.lora.format import LORA_FILE, load_lora
from kolora_core.training.fast_module import kolors_train_scheduler
from kolora_core.training.optim import learning_rate, lr_factor
from kolora_core.training.sampling import caption_dropped, offset_noise
from tests.conftest import mark_complete
from tests.training.engine import fast_engine
from tests.training.helpers import LOSS_CSV_TOLERANCE, lora_max_diff, losses, train


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_per_step_is_transformers_schedule(schedule: str) -> None:
    """Each step's lr equals what `transformers.get_scheduler` (diffusers' scripts use the same) gives that step."""
    from transformers import get_scheduler

    total, warmup = 20, 4
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_scheduler(f"{schedule}_with_warmup" if schedule == "constant" else schedule, optimizer, warmup, total)
    expected = []
    for _ in range(total):
        expected.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        reference.step()
    assert [lr_factor(schedule, warmup, total, s) for s in range(total)] == pytest.approx(expected, abs=1e-12)
    assert expected[0] == 0.0 and expected[warmup] == pytest.approx(1.0)


def test_train_log_carries_the_scheduled_lr(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    flags = ["--train.steps", "5", "--train.lr_scheduler", "cosine", "--train.lr_warmup_steps", "2"]
    assert train(tiny_models, tiny_trainset, tmp_path, *flags) == 0
    rows = list(csv.DictReader((tmp_path / "train_log.csv").read_text(encoding="utf-8").splitlines()))
    config = TrainConfig(steps=5, lr_scheduler="cosine", lr_warmup_steps=2)
    assert [float(r["lr"]) for r in rows] == pytest.approx([learning_rate(config, s) for s in range(5)], abs=1e-15)


def test_accumulated_micro_batches_train_the_one_batch_lora(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    assert train(tiny_models, tiny_trainset, tmp_path / "b2", "--train.steps", "3", "--train.batch_size", "2") == 0
    assert train(tiny_models, tiny_trainset, tmp_path / "a2", "--train.steps", "3", "--train.gradient_accumulation", "2") == 0
    assert lora_max_diff(tmp_path / "a2", tmp_path / "b2") <= 1e-6
    assert losses(tmp_path / "a2") == pytest.approx(losses(tmp_path / "b2"), abs=LOSS_CSV_TOLERANCE)
    summary = json.loads((tmp_path / "a2" / "train_summary.json").read_text())
    assert summary["global_batch"] == 2 and summary["gradient_accumulation"] == 2


def _prediction_and_loss(engine, inputs):  # type: ignore[no-untyped-def]
    noisy, timesteps, embeddings, pooled, target, time_ids, *_ = inputs
    with torch.no_grad():
        pred = engine.module.unet(noisy, timestep=timesteps.float(), encoder_hidden_states=embeddings,
                                  add_text_embeds=pooled, add_time_id=time_ids)  # fmt: skip
        loss = engine.module(*inputs)
    return pred, target, loss


def test_min_snr_weights_the_per_image_loss_by_the_formula(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    gamma = 1.0  # SNR above 1 (alphas_cumprod above 0.5) happens in a batch of 8, so some weights are below 1
    engine = fast_engine(tiny_models, tiny_trainset, tmp_path, batch_size=8, min_snr_gamma=gamma)
    (inputs,) = engine.batch(3)
    pred, target, loss = _prediction_and_loss(engine, inputs)
    scheduler = kolors_train_scheduler()
    alphas = torch.tensor([float(scheduler.alphas_cumprod[int(t)]) for t in inputs[1]])
    snr = alphas / (1 - alphas)
    weights = torch.clamp(snr, max=gamma) / snr
    per_image = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    assert (weights < 1).any(), "some timestep of this batch has SNR above gamma, so the weighting matters"
    assert float(loss) == pytest.approx(float((weights * per_image).mean()), rel=1e-6)
    assert float(loss) != pytest.approx(float(per_image.mean()), rel=1e-3), "and it differs from the plain MSE"


def test_noise_offset_shifts_noise_and_target_by_the_formula(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    plain = fast_engine(tiny_models, tiny_trainset, tmp_path / "plain", batch_size=2)
    offset = fast_engine(tiny_models, tiny_trainset, tmp_path / "offset", batch_size=2, noise_offset=0.1)
    (p,), (o,) = plain.batch(1), offset.batch(1)
    shift = 0.1 * offset_noise(0, 1, tuple(p[4].shape), "cpu", p[4].dtype)
    torch.testing.assert_close(o[4], p[4] + shift, rtol=0, atol=1e-7)  # the target is the offset noise
    scheduler = kolors_train_scheduler()
    a = torch.tensor([float(scheduler.alphas_cumprod[int(t)]) for t in p[1]]).view(-1, 1, 1, 1)
    torch.testing.assert_close(o[0], p[0] + torch.sqrt(1 - a) * shift, rtol=0, atol=1e-6)  # noised with it
    pred, target, loss = _prediction_and_loss(offset, o)
    assert float(loss) == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-6)


def test_caption_dropout_trains_the_drawn_images_with_the_empty_caption(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path
) -> None:
    engine = fast_engine(tiny_models, tiny_trainset, tmp_path, batch_size=4, caption_dropout=0.5)
    cache = engine.cache
    empty, caption = cache.embeddings[cache.text_rows[""]], cache.embeddings[cache.text_rows["二次元"]]
    assert not torch.equal(empty, caption)
    seen = 0
    for step in range(6):
        (inputs,) = engine.batch(step)
        for image, dropped in enumerate(caption_dropped(0, step, 4, 0.5).tolist()):
            assert torch.equal(inputs[2][image], empty if dropped else caption)
            seen += dropped
    assert 0 < seen < 24


def test_exported_lora_is_the_ema(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    """EMA: after each step ema = d * ema + (1 - d) * weights, from the initial LoRA; lora.safetensors holds it."""
    decay = 0.6
    engine = fast_engine(tiny_models, tiny_trainset, tmp_path, steps=3, ema_decay=decay, checkpoint_every=0)
    params = engine.lora_parameters()
    expected = {n: p.detach().clone() for n, p in params.items()}
    engine.start_step = 0
    engine.run()  # writes the outputs too
    raw = {n: p.detach().clone() for n, p in params.items()}
    # replay the raw trajectory: the same engine without EMA gives the weights of every step
    plain = fast_engine(tiny_models, tiny_trainset, tmp_path / "plain", steps=3, checkpoint_every=0)
    for step in range(3):
        plain.step(step)
        for n, p in plain.lora_parameters().items():
            expected[n] = decay * expected[n] + (1 - decay) * p.detach()
    exported = load_lora(tmp_path / LORA_FILE).tensors
    assert exported.keys() == expected.keys()
    for n in expected:
        torch.testing.assert_close(exported[n], expected[n], rtol=0, atol=1e-6)
    assert any(not torch.allclose(exported[n], raw[n], atol=1e-7) for n in raw), "the EMA, not the last weights"


def test_8bit_adamw_keeps_8bit_moments_and_trains(tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    engine = fast_engine(tiny_models, tiny_trainset, tmp_path, optimizer="adamw8bit")
    reference = fast_engine(tiny_models, tiny_trainset, tmp_path / "adamw")
    initial = {n: p.detach().clone() for n, p in engine.lora_parameters().items()}
    for step in range(3):
        engine.step(step)
        reference.step(step)
    state = engine.optimizer.state[next(iter(engine.lora_parameters().values()))]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8
    ours, theirs = engine.lora_parameters(), reference.lora_parameters()
    diff = max(float((ours[n] - theirs[n]).abs().max()) for n in ours)
    moved = max(float((ours[n] - initial[n]).abs().max()) for n in ours)
    assert 0 < diff < moved, "8-bit moments: another rounding of the same optimizer"
    assert engine.cuda_graphs is False


def write_aspect_trainset(root: Path) -> Path:
    """Portraits, landscapes and squares: three buckets at resolution 192."""
    (root / "train").mkdir(parents=True)
    sizes = [(200, 100), (100, 200), (150, 150), (220, 110), (96, 112), (110, 230)]
    lines = ["file_name,text"]
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (30 * i, 90, 200)).save(root / "train" / f"{i}.png")
        lines.append(f"{i}.png,二次元")
    (root / "train" / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return mark_complete(root)


def test_buckets_never_mix_aspects_and_time_ids_carry_sizes(tiny_models: Path, tmp_path: Path) -> None:
    trainset = write_aspect_trainset(tmp_path / "ts")
    engine = fast_engine(tiny_models, trainset, tmp_path / "out", resolution=192, buckets=True, batch_size=2,
                         gradient_accumulation=2, random_flip=True)  # fmt: skip
    cache = engine.cache
    assert cache.stats["buckets"] == {"128x256": 2, "192x192": 2, "256x128": 2}
    sizes = {i: Image.open(trainset / "train" / f"{i}.png").size for i in range(6)}
    seen, crops = set(), set()
    for step in range(12):
        micro = engine.batch(step)
        shapes = {tuple(m[0].shape[2:]) for m in micro}
        assert len(shapes) == 1, "every micro-batch of a step comes from one bucket"
        ((latent_h, latent_w),) = shapes
        seen.add((latent_w * 8, latent_h * 8))
        for m in micro:
            for ids in m[5].view(-1, 6).tolist():
                original_h, original_w, top, left, target_h, target_w = ids
                assert (target_w, target_h) == (latent_w * 8, latent_h * 8)
                assert (original_w, original_h) in sizes.values(), "the size before the resize"
                assert top >= 0 and left >= 0
                crops.add((top, left))
    assert seen == {(128, 256), (192, 192), (256, 128)}
    assert len(crops) > 1, "images whose aspect is not their bucket's are cropped, and the crop is in the time ids"


def test_bucketed_training_reports_its_histogram(tiny_models: Path, tmp_path: Path) -> None:
    trainset = write_aspect_trainset(tmp_path / "ts")
    assert train(tiny_models, trainset, tmp_path / "out", "--train.steps", "3", "--train.resolution", "192",
                 "--train.buckets", "true") == 0  # fmt: skip
    summary = json.loads((tmp_path / "out" / "train_summary.json").read_text())
    assert summary["buckets"] == {"128x256": 2, "192x192": 2, "256x128": 2}
