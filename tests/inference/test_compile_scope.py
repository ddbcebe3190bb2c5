"""generate.compile resolved for a shard: auto only where compiling pays, anything set is kept as set."""

from __future__ import annotations

import pytest

from kolora_core.config import load_config
from kolora_core.inference.run import COMPILE_PAYS_IMAGES, compile_scope


@pytest.mark.parametrize(
    ("setting", "device", "images", "scope"),
    [
        ("auto", "cuda", COMPILE_PAYS_IMAGES, True),
        ("auto", "cuda:1", COMPILE_PAYS_IMAGES + 1, True),
        ("auto", "cuda", COMPILE_PAYS_IMAGES - 1, False),  # the 8-image story: the warm-up costs more than it saves
        ("auto", "cpu", 1000, False),
        ("whole", "cuda", 8, "whole"),
        ("whole", "cpu", 8, "whole"),
        (False, "cuda", 1000, False),
        (True, "cpu", 1, True),
    ],
)
def test_auto_picks_by_device_and_shard_size_and_a_set_value_is_kept(
    setting: object, device: str, images: int, scope: object
) -> None:
    generate = load_config("smoke", overrides={"generate.compile": setting}).generate
    assert compile_scope(generate, device, images) == scope
