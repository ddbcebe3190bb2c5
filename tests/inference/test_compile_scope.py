"""generate.compile resolved for a shard: auto only where compiling pays (long shards, FP8), anything set is kept as set."""

from __future__ import annotations

import pytest

from kolora_core.config import load_config
from kolora_core.inference.run import COMPILE_PAYS_IMAGES, compile_scope


@pytest.mark.parametrize(
    ("setting", "device", "images", "scope", "fp8"),
    [
        ("auto", "cuda", COMPILE_PAYS_IMAGES, True, False),
        ("auto", "cuda:1", COMPILE_PAYS_IMAGES + 1, True, False),
        ("auto", "cuda", COMPILE_PAYS_IMAGES - 1, False, False),  # the 8-image story: the warm-up costs more than it saves
        ("auto", "cuda", 8, True, True),  # but FP8 pays only compiled
        ("auto", "cpu", 1000, False, False),
        ("auto", "cpu", 8, False, True),  # CPUs run FP8 eager (the tests): nothing there is fast
        ("whole", "cuda", 8, "whole", False),
        ("whole", "cuda", 8, "whole", True),
        ("whole", "cpu", 8, "whole", False),
        (False, "cuda", 1000, False, False),
        (True, "cpu", 1, True, False),
    ],
)
def test_auto_picks_by_device_and_shard_size_and_a_set_value_is_kept(
    setting: object, device: str, images: int, scope: object, fp8: bool
) -> None:
    generate = load_config("smoke", overrides={"generate.compile": setting, "generate.fp8": fp8}).generate
    assert compile_scope(generate, device, images) == scope
