"""The training identity: operational knobs leave it alone, anything that trains another LoRA changes it."""

from __future__ import annotations

import pytest

from kolora_core.config import load_config
from kolora_core.training.identity import differing_fields, training_identity, training_inputs

BASE = training_identity(load_config("smoke"))


@pytest.mark.parametrize(
    "overrides",
    [
        {"train.num_workers": 7, "train.log_every": 3, "train.checkpoint_every": 0, "train.keep_checkpoints": True},
        {"train.checkpoint_dir": "/elsewhere", "train.seed_compat": True},
        {"evaluate.min_aesthetic": 1.0, "generate.steps": 9, "publish.version": "v9", "name": "other"},
        {"filter.np": 1, "ingest.max_images": 3},
        {"train.validation_every": 2, "train.validation_steps": 3, "train.tensorboard": True},
    ],
)
def test_operational_and_downstream_settings_keep_the_identity(overrides: dict[str, object]) -> None:
    assert training_identity(load_config("smoke", overrides=overrides)) == BASE


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"train.steps": 5}, "train.steps"),
        ({"train.devices": 2}, "train.devices"),
        ({"train.learning_rate": 2e-4}, "train.learning_rate"),
        ({"train.buckets": True}, "train.buckets"),
        ({"train.lora_variant": "loha"}, "train.lora_variant"),
        ({"train.ema_decay": 0.99}, "train.ema_decay"),
        ({"train.min_snr_gamma": 5.0}, "train.min_snr_gamma"),
        ({"train.gradient_accumulation": 2}, "train.gradient_accumulation"),
        ({"models.revision": "v1.1"}, "models.revision"),
        ({"models.tiny_seed": 3}, "models.tiny_seed"),
        ({"ingest.caption": "动漫"}, "ingest.caption"),
        ({"ingest.trigger_word": "kol"}, "ingest.trigger_word"),
        ({"filter.ops": [{"image_shape_filter": {"min_width": 8}}]}, "filter.ops"),
    ],
)
def test_what_changes_the_lora_changes_the_identity(overrides: dict[str, object], field: str) -> None:
    config = load_config("smoke", overrides=overrides)
    assert training_identity(config) != BASE
    assert differing_fields(training_inputs(load_config("smoke")), training_inputs(config)) == [field]
