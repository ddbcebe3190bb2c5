"""The train stage on tiny models: the seed's objective, LoRA files that say how to apply them, clear failures."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

from jobs.train import main as train_main
from kolora_core.config import TrainConfig
from kolora_core.lora.export import DIFFUSERS_FILE, KOHYA_FILE
from kolora_core.lora.format import LORA_FILE, load_lora, sha256_of
from kolora_core.models.layout import UNET_FILE
from kolora_core.training.run import oom_message
from tests.conftest import mark_complete, write_trainset
from tests.data.conftest import damage_pixels
from tests.training.helpers import losses, train


@pytest.fixture(scope="module")
def trained(tiny_models: Path, tiny_trainset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "lora"  # its checkpoints go beside it, in a directory of its own
    assert train(tiny_models, tiny_trainset, out, "--train.steps", "3") == 0
    return out


def test_lora_file_has_peft_keys_and_metadata(trained: Path, tiny_models: Path) -> None:
    lora = load_lora(trained / LORA_FILE)
    assert (lora.rank, lora.alpha, lora.scale) == (16, 4.0, 0.25)
    modules = lora.modules()
    assert modules and all(m.rsplit(".", 1)[-1] in {"to_q", "to_k", "to_v", "to_out"} for m in modules)
    assert all(k.endswith((".lora_A.default.weight", ".lora_B.default.weight")) for k in lora.tensors)
    assert json.loads(lora.metadata["targets"]) == ["to_q", "to_k", "to_v", "to_out"]
    assert len(lora.metadata["base_model_sha256"]) == 64 and len(lora.metadata["dataset_sha256"]) == 64
    # gaussian init leaves B at zero; three AdamW steps at lr 1e-4 must have moved it
    assert any(lora.tensors[m + ".lora_B.default.weight"].abs().sum() > 0 for m in modules)


def test_exports_written_next_to_the_lora(trained: Path) -> None:
    assert (trained / DIFFUSERS_FILE).is_file() and (trained / KOHYA_FILE).is_file()
    marker = json.loads((trained / "_SUCCESS").read_text())
    assert {LORA_FILE, DIFFUSERS_FILE, KOHYA_FILE, "train_log.csv", "train_summary.json"} <= set(marker["files"])


def test_loss_log_and_summary(trained: Path) -> None:
    rows = list(csv.DictReader((trained / "train_log.csv").read_text(encoding="utf-8").splitlines()))
    assert list(rows[0]) == ["step", "loss", "lr", "seconds", "images_per_second"]
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert all(float(r["lr"]) == 1e-4 for r in rows)
    assert all(torch.isfinite(torch.tensor(float(r["loss"]))) for r in rows)
    summary = json.loads((trained / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["final_loss"] == pytest.approx(float(rows[-1]["loss"]), abs=1e-5)
    assert summary["engine"] == "fast" and summary["global_batch"] == 1 and summary["resumed_from"] is None
    assert summary["cache"]["captions_encoded"] == 1 and summary["cache"]["latents_encoded"] == 4
    kept = trained.parent / f"{trained.name}.checkpoints"
    assert not kept.exists(), "checkpoints are deleted after a successful run by default"


def test_identical_trainings_give_identical_files(trained: Path, tiny_models: Path, tiny_trainset: Path, tmp_path: Path) -> None:
    """Same config, data and base model: byte-identical LoRA and exports (so one release identity, one version).

    A different worker count is operational: neither the files nor the training identity change.
    """
    again = tmp_path / "again"
    assert train(tiny_models, tiny_trainset, again, "--train.steps", "3", "--train.num_workers", "1") == 0
    for name in (LORA_FILE, DIFFUSERS_FILE, KOHYA_FILE):
        assert sha256_of(again / name) == sha256_of(trained / name), name
    first, second = (json.loads((d / "train_summary.json").read_text()) for d in (trained, again))
    assert first["training_identity"] == second["training_identity"] and len(first["training_identity"]) == 64
    assert first["trainset_sha256"] == second["trainset_sha256"] == load_lora(trained / LORA_FILE).metadata["dataset_sha256"]
    assert load_lora(trained / LORA_FILE).metadata["training_identity"] == first["training_identity"]
    assert first["training_inputs"]["train"]["steps"] == 3 and "num_workers" not in first["training_inputs"]["train"]


def test_empty_trainset_fails_before_loading_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trainset = write_trainset(tmp_path / "ts", count=0)
    argv = ["--profile", "smoke", "--trainset", str(trainset), "--models", str(tmp_path / "ts"), "--lora", str(tmp_path / "out")]
    assert train_main(argv) == 2
    assert "lists no images" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("metadata latin-1", r"training set metadata .*metadata\.csv is not UTF-8 \(byte 0xe9 on line 2\)"),
        ("image not an image", r"training image .*0\.png is not a readable image \(UnidentifiedImageError"),
        # were tracebacks, exit 1: OSError in the loader after the models loaded (a JPEG's verify() checks nothing),
        # AttributeError on the missing caption (csv fills a short row with None; a long one put the rest under None)
        ("jpeg cut in half", r"training image .*0\.jpg is not a readable image \(OSError: image file is truncated"),
        ("row short", r"metadata\.csv line 2 does not have the 2 fields of its header \(file_name, text\)"),
        ("row long", r"metadata\.csv line 3 does not have the 2 fields of its header"),
    ],
)
def test_a_damaged_trainset_is_one_line_before_models_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    """Both were tracebacks with exit 1 (UnicodeDecodeError; UnidentifiedImageError inside a loader worker)."""
    trainset = write_trainset(tmp_path / "ts", count=2)
    metadata = trainset / "train" / "metadata.csv"
    if damage == "metadata latin-1":
        metadata.write_bytes("file_name,text\n0.png,café\n".encode("latin-1"))
    elif damage == "jpeg cut in half":
        jpeg = io.BytesIO()
        Image.open(trainset / "train" / "0.png").save(jpeg, format="JPEG")
        (trainset / "train" / "0.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
        metadata.write_text("file_name,text\n0.jpg,a\n", encoding="utf-8")
        mark_complete(trainset)  # 0.jpg listed: a file the marker does not list is removed as junk
    elif damage.startswith("row"):
        metadata.write_text(
            "file_name,text\n0.png\n1.png,b\n" if damage == "row short" else "file_name,text\n0.png,a\n1.png,b,c\n"
        )
    else:
        (trainset / "train" / "0.png").write_bytes(b"<html>not a png</html>")
    argv = ["--profile", "smoke", "--trainset", str(trainset), "--models", str(tmp_path / "ts"), "--lora", str(tmp_path / "out")]
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert re.search(message, err[-1]), err[-1]


@pytest.mark.parametrize(
    ("damage", "workers", "reason"),
    [
        ("bad deflate", "0", r"OSError: broken data stream when reading image file"),  # was this OSError's traceback
        ("cut stream", "1", r"OSError: image file is truncated"),  # in a loader worker: the same line
        ("few rows", "0", r"cannot decode: the image data ends after 16184 of the 32368 bytes"),  # was trained on, black
    ],
)
def test_a_png_whose_pixel_data_is_damaged_is_one_line_from_the_cache_build(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, workers: str, reason: str
) -> None:
    """Its CRCs are valid, so the pre-check's verify() passes it (decoding every image there would cost as long as
    loading the models): the cache build, which decodes the images first, names it. Exit 1 with a traceback, or exit 0
    having trained on the rows Pillow could not decode as black (or on all of it, with truncated loading on)."""
    _assert_damage_named(tiny_models, tmp_path, capsys, damage, reason, 2, "--train.num_workers", workers)


@pytest.mark.parametrize(
    ("damage", "workers", "reason"),
    [
        ("bad deflate", "1", r"OSError: broken data stream when reading image file"),  # was a worker's traceback
        ("few rows", "0", r"cannot decode: the image data ends after 16184 of the 32368 bytes"),  # was trained on, black
    ],
)
def test_the_seed_engine_names_a_png_whose_pixel_data_is_damaged(
    tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, workers: str, reason: str
) -> None:
    """engine: seed decodes each step's images when the step draws them (no cache): the same line, at that step."""
    flags = ("--train.engine", "seed", "--train.num_workers", workers)
    _assert_damage_named(tiny_models, tmp_path, capsys, damage, reason, 1, *flags)  # the one image: step 1 draws it


def _assert_damage_named(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, reason: str, count: int, *flags: str
) -> None:
    """One step on a trainset of `count` images whose last one is damaged: exit 2, the pre-check's line, no traceback."""
    trainset = write_trainset(tmp_path / "ts", count=count)
    png = trainset / "train" / f"{count - 1}.png"
    png.write_bytes(damage_pixels(png.read_bytes(), damage))
    mark_complete(trainset)
    assert train(models, trainset, tmp_path / "o", "--train.steps", "1", *flags) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.fullmatch(
        rf"kolora train: error: training image {re.escape(str(png.resolve()))} is not a readable image \({reason}.*\): "
        "rerun the filter stage",
        err.strip().splitlines()[-1],
    ), err.strip().splitlines()[-1]


def test_fp16_mixed_on_cpu_is_refused(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(tiny_models, tiny_trainset, tmp_path / "o", "--train.precision", "16-mixed") == 2
    assert "16-mixed needs a GPU" in capsys.readouterr().err


def test_seed_engine_on_several_devices_is_refused(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert train(tiny_models, tiny_trainset, tmp_path / "o", "--train.engine", "seed", "--train.devices", "2") == 2
    assert "engine seed runs on one device" in capsys.readouterr().err


def test_non_finite_loss_stops_with_the_step_and_a_hint(
    tiny_models: Path, tiny_trainset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """AdamW moves each weight by ~lr per step: lr 1e30 makes step 2's loss non-finite."""
    out = tmp_path / "o"
    assert (
        train(tiny_models, tiny_trainset, out, "--train.steps", "4", "--train.learning_rate", "1e30", "--train.log_every", "1")
        == 2
    )
    err = capsys.readouterr().err
    assert "loss became" in err and "at step 2" in err and "train.learning_rate" in err
    assert not (out / LORA_FILE).exists()


def test_out_of_memory_message_names_the_settings_to_lower() -> None:
    message = oom_message(TrainConfig(batch_size=8, gradient_checkpointing=False))
    assert "train.batch_size (now 8)" in message and "train.gradient_checkpointing" in message and "train.resolution" in message


def test_missing_weight_file_is_named(
    tiny_trainset: Path, tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    broken = tmp_path / "models"
    shutil.copytree(tiny_models, broken)
    unet = next(broken.rglob("diffusion_pytorch_model.safetensors"))
    unet.write_bytes(unet.read_bytes()[:100])
    assert train(broken, tiny_trainset, tmp_path / "o") == 2
    assert str(unet) in capsys.readouterr().err


def damaged_copy(models: Path, root: Path, where: str) -> tuple[Path, Path]:
    """A copy of the models with 16 bytes of the UNet flipped, its size unchanged: in the header or in tensor data."""
    import shutil

    broken = root / f"models-{where}"
    shutil.copytree(models, broken)
    unet = broken / UNET_FILE
    data = bytearray(unet.read_bytes())
    start = 20 if where == "header" else len(data) // 2
    data[start : start + 16] = bytes(b ^ 0x5A for b in data[start : start + 16])
    unet.write_bytes(bytes(data))
    return broken, unet


@pytest.mark.parametrize(
    ("where", "flags", "message"),
    [
        ("header", (), "is damaged (SafetensorError"),  # was a SafetensorError traceback, exit 1
        ("data", ("--models.verify", "sha256"), "does not match its sha256"),  # was a NaN loss blamed on the precision
    ],
)
def test_a_weight_file_damaged_in_place_is_named(
    tiny_trainset: Path, tiny_models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, flags, message: str
) -> None:
    broken, unet = damaged_copy(tiny_models, tmp_path, where)
    assert train(broken, tiny_trainset, tmp_path / "o", *flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"kolora train: error: weight file {unet} ") and message in err[-1]


def test_learning_overfits_two_images(tiny_models: Path, tmp_path: Path) -> None:
    """At a raised learning rate the seed's objective falls clearly on two images within tens of steps."""
    trainset = write_trainset(tmp_path / "two", count=2)
    out = tmp_path / "o"
    flags = ["--train.steps", "50", "--train.batch_size", "4", "--train.learning_rate", "1e-2", "--train.lora_alpha", "16"]
    flags += ["--train.checkpoint_every", "0"]
    assert train(tiny_models, trainset, out, *flags) == 0
    curve = losses(out)
    first, last = sum(curve[:8]) / 8, sum(curve[-8:]) / 8
    assert last < first - 0.08, f"loss did not fall: first 8 steps {first:.4f}, last 8 steps {last:.4f}"
