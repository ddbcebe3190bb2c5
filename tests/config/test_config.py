"""The run config: seed defaults, profiles, and errors that name the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kolora_core.cli import main
from kolora_core.config import available_profiles, config_flags, flag_overrides, load_config
from kolora_core.config.files import UniqueKeyLoader
from kolora_core.config.schema import MAX_SAMPLER_STEPS, MAX_SEED, MAX_TRAIN_SEED, UNET_LINEAR_NAMES
from kolora_core.errors import KoloraError


def test_defaults_are_the_seed_recipe() -> None:
    config = load_config("full")
    assert config.ingest.source == "modelscope://AI-ModelScope/lowres_anime"
    assert (config.ingest.subset, config.ingest.split, config.ingest.caption) == ("default", "train", "二次元")
    assert config.filter.ops == [
        {"image_shape_filter": {"min_width": 1024, "min_height": 1024, "any_or_all": "any"}},
        {"image_aspect_ratio_filter": {"min_ratio": 0.5, "max_ratio": 2.0, "any_or_all": "any"}},
    ]
    train = config.train
    assert (train.lora_rank, train.lora_alpha, train.init_lora_weights) == (16, 4.0, "gaussian")
    assert train.lora_target_modules == ["to_q", "to_k", "to_v", "to_out"]
    assert (train.learning_rate, train.steps, train.resolution, train.batch_size) == (1e-4, 500, 1024, 1)
    assert (train.center_crop, train.random_flip, train.precision) == (True, False, "16-mixed")
    # knobs that do not change the math (docs/training.md): chosen per machine
    assert (train.gradient_checkpointing, train.compile, train.cuda_graphs) == ("auto", "auto", "auto")
    assert train.lora_scale == 0.25
    generate = config.generate
    assert (generate.cfg_scale, generate.steps, generate.height, generate.width) == (4.0, 50, 1024, 1024)
    assert [p.seed for p in generate.prompts] == [0, 1, 2, 5, 0, 1, 7, 0]
    assert generate.prompts[0].prompt.startswith("二次元,一个紫色短发小女孩,在家中沙发上坐着")
    assert generate.prompts[3].negative_prompt == "丑陋、变形、嘈杂、模糊、低对比度,扭曲的手指,多余的手指"
    assert generate.lora_strength == 1.0
    assert (config.evaluate.grid_columns, config.evaluate.grid_rows) == (2, 4)
    assert (config.evaluate.grid_width, config.evaluate.grid_height) == (1024, 2048)
    assert config.models.source == "modelscope"


@pytest.mark.parametrize("profile", available_profiles())
def test_every_shipped_profile_validates(profile: str) -> None:
    assert load_config(profile).profile == profile


def test_smoke_profile_is_small_and_cpu() -> None:
    config = load_config("smoke")
    assert config.models.source == "tiny" and config.device == "cpu"
    assert config.train.resolution <= 128 and config.train.steps < 20 and config.generate.steps < 20


def test_overrides_and_file_layer_in_order(tmp_path: Path) -> None:
    overlay = tmp_path / "run.yaml"
    overlay.write_text("train:\n  steps: 7\n  lora_rank: 8\n", encoding="utf-8")
    config = load_config("smoke", overlay, {"train.steps": 9})
    assert (config.train.steps, config.train.lora_rank, config.train.resolution) == (9, 8, 64)


def test_unknown_key_names_the_field(tmp_path: Path) -> None:
    overlay = tmp_path / "run.yaml"
    overlay.write_text("train:\n  stepz: 7\n", encoding="utf-8")
    with pytest.raises(KoloraError, match=r"unknown config key 'train\.stepz'") as err:
        load_config("smoke", overlay)
    assert str(overlay) in str(err.value)


def test_wrong_type_names_the_field() -> None:
    with pytest.raises(KoloraError, match=r"config field 'train\.steps'.*'many'"):
        load_config("smoke", overrides={"train.steps": "many"})


def test_bad_values_are_rejected() -> None:
    with pytest.raises(KoloraError, match=r"'train\.resolution': must be a multiple of 32 \([^()]*\), got 1000$"):  # once
        load_config("smoke", overrides={"train.resolution": 1000})  # a multiple of 8: accepted before, crashed in the UNet
    assert load_config("smoke", overrides={"train.resolution": 992}).train.resolution == 992
    with pytest.raises(KoloraError, match=r"generate\.shard"):
        load_config("smoke", overrides={"generate.shards": 2, "generate.shard": 2})
    with pytest.raises(KoloraError, match=r"unknown profile 'fast'"):
        load_config("fast")
    with pytest.raises(KoloraError, match=r"config field 'generate': generate\.fp8 needs generate\.compile auto, true or whole"):
        load_config("smoke", overrides={"generate.fp8": True, "generate.compile": False})
    with pytest.raises(KoloraError, match=r"generate\.fp8 needs generate\.engine fast"):
        load_config("smoke", overrides={"generate.fp8": True, "generate.engine": "seed"})
    assert load_config("smoke", overrides={"generate.fp8": True}).generate.compile == "auto"


SEED_FIELDS = ("models.tiny_seed", "models.random_seed", "generate.prompts", "train.validation_prompts")


def _with_seed(field: str, seed: int) -> dict[str, object]:
    """The override giving `field` (a seed, or a prompt list's first seed) the value `seed`."""
    return {field: [{"prompt": "a", "seed": seed}]} if field.endswith("prompts") else {field: seed}


@pytest.mark.parametrize("field", SEED_FIELDS)
def test_a_seed_torch_cannot_take_is_refused_when_the_config_loads(field: str) -> None:
    """A seed past 2**64 - 1 passed the config and crashed generate after training (retried, three GPU pods)."""
    load_config("smoke", overrides=_with_seed(field, MAX_SEED))
    for bad, bound in ((MAX_SEED + 1, f"less than or equal to {MAX_SEED}"), (-1, "greater than or equal to 0")):
        with pytest.raises(
            KoloraError, match=rf"config field '{re.escape(field)}(\[0\]\.seed)?': Input should be {bound} \(got {bad}\)$"
        ):
            load_config("smoke", overrides=_with_seed(field, bad))


STEPS_FIELDS = ("generate.steps", "train.validation_steps", "generate.prompts", "train.validation_prompts")


@pytest.mark.parametrize("field", STEPS_FIELDS)
def test_more_sampler_steps_than_the_scheduler_has_are_refused_when_the_config_loads(field: str) -> None:
    """steps: 3000 rendered the 1100-step image (the scheduler caps them silently) and recorded Steps: 3000."""

    def steps(value: int) -> dict[str, object]:
        return {field: [{"prompt": "a", "steps": value}]} if field.endswith("prompts") else {field: value}

    load_config("smoke", overrides=steps(MAX_SAMPLER_STEPS))
    shown = f"{field}[0].steps" if field.endswith("prompts") else field
    with pytest.raises(
        KoloraError,
        match=rf"^command-line flags: config field '{re.escape(shown)}': must be at most {MAX_SAMPLER_STEPS} \(.*\), got 3000$",
    ):
        load_config("smoke", overrides=steps(3000))


def test_the_steps_bound_is_the_kolors_schedulers() -> None:
    from kolora_core.models.sampler import ddim_plan, kolors_scheduler

    assert len(ddim_plan(kolors_scheduler(), MAX_SAMPLER_STEPS)[0]) == MAX_SAMPLER_STEPS
    assert len(ddim_plan(kolors_scheduler(), MAX_SAMPLER_STEPS + 1)[0]) == MAX_SAMPLER_STEPS  # capped without a word


# the last five: each part a name of the UNet's, in an order or with a block number that ends no Linear layer's name
@pytest.mark.parametrize(
    "target",
    ["to_out.0", "ff.net.0.proj", "to_qq", "norm1", "conv1", "attn3.to_q", "to_q.attn1", "ff.to_k", "blocks.1.to_q",
     "attn1.attn2.to_q", "blocks.15.transformer_blocks.10.ff"],
)  # fmt: skip
def test_a_lora_target_that_is_no_linear_layer_of_the_unet_is_refused_when_the_config_loads(target: str) -> None:
    """peft raised NoMatchingPeftModuleError (to_out.0, diffusers' name; to_q.attn1) or a ValueError (norm1) after the
    models loaded, and conv1 trained, then failed when the LoRA was saved."""
    with pytest.raises(
        KoloraError,
        match=rf"^command-line flags: config field 'train\.lora_target_modules\[1\]': '{re.escape(target)}' names no Linear "
        r"layer of the Kolors UNet .*: use ff, proj, .*, alone or as the end of a layer's full name \(e\.g\. attn1\.to_q, "
        r"transformer_blocks\.0\.attn2\.to_k, blocks\.7\.proj_in\)$",
    ):
        load_config("smoke", overrides={"train.lora_target_modules": ["to_q", target]})
    with pytest.raises(KoloraError, match=r"'train\.lora_target_modules': List should have at least 1 item"):
        load_config("smoke", overrides={"train.lora_target_modules": []})


def test_every_linear_layer_name_and_dotted_paths_to_them_are_lora_targets() -> None:
    targets = [*UNET_LINEAR_NAMES, "attn1.to_q", "blocks.7.transformer_blocks.0.attn2.to_k", "act_fn.proj"]
    targets += ["0.attn1.to_q", "transformer_blocks.9.ff", "blocks.48.time_emb_proj", "15.proj_in"]
    overrides = {"train.lora_target_modules": targets, "train.exports": ["diffusers"]}
    assert load_config("smoke", overrides=overrides).train.lora_target_modules == targets


def test_a_lora_target_the_kohya_export_cannot_name_is_refused_with_that_export() -> None:
    """text_intermediate_proj trained, then the kohya export refused it ('outside the UNet blocks')."""
    targets = {"train.lora_target_modules": ["to_q", "text_intermediate_proj"]}
    with pytest.raises(KoloraError, match=r"text_intermediate_proj is outside the UNet blocks, .*train\.exports \[diffusers\]$"):
        load_config("smoke", overrides=targets)
    assert load_config("smoke", overrides={**targets, "train.exports": ["diffusers"]}).train.export_formats == ["diffusers"]


@pytest.mark.parametrize("value", [25, 1.01, -1.5])
def test_a_clip_similarity_gate_outside_the_cosines_range_is_refused_when_the_config_loads(value: float) -> None:
    """min_clip_similarity 25 (a CLIP score) failed every image at the gate, after training and generating."""
    assert load_config("smoke", overrides={"evaluate.min_clip_similarity": 1}).evaluate.min_clip_similarity == 1
    assert load_config("smoke", overrides={"evaluate.min_clip_similarity": -1}).evaluate.min_clip_similarity == -1
    with pytest.raises(
        KoloraError,
        match=rf"^command-line flags: config field 'evaluate\.min_clip_similarity': is a cosine .*, got {float(value)}$",
    ):
        load_config("smoke", overrides={"evaluate.min_clip_similarity": value})


@pytest.mark.parametrize("prefix", ["models/", "a//b", "a/../b", "a/./b"])
def test_a_publish_prefix_with_an_empty_or_dot_part_is_refused_when_the_config_loads(prefix: str) -> None:
    """The pattern alone let these through a config file; the champion and promote steps then made keys with an
    empty or '..' part, after ingest and filter ran."""
    assert load_config("smoke", overrides={"publish.prefix": "team-a/models"}).publish.prefix == "team-a/models"
    with pytest.raises(KoloraError, match=r"config field 'publish\.prefix': no empty, '\.' or '\.\.' parts"):
        load_config("smoke", overrides={"publish.prefix": prefix})


def test_a_train_seed_lightning_cannot_take_is_refused_when_the_config_loads() -> None:
    """train.seed 2**32 passed the config, then the train stage died in seed_everything with a ValueError traceback."""
    assert load_config("smoke", overrides={"train.seed": MAX_TRAIN_SEED}).train.seed == MAX_TRAIN_SEED
    for bad, bound in ((MAX_TRAIN_SEED + 1, f"less than or equal to {MAX_TRAIN_SEED}"), (-1, "greater than or equal to 0")):
        message = rf"^command-line flags: config field 'train\.seed': Input should be {bound} \(got {bad}\)$"
        with pytest.raises(KoloraError, match=message):
            load_config("smoke", overrides={"train.seed": bad})


def test_the_train_seed_bound_is_what_lightning_takes() -> None:
    from lightning.fabric.utilities.seed import max_seed_value, seed_everything

    assert max_seed_value == MAX_TRAIN_SEED
    with pytest.raises(ValueError, match="not in bounds"):
        seed_everything(MAX_TRAIN_SEED + 1, verbose=False)


def test_the_seed_bound_is_what_torch_takes() -> None:
    import torch

    assert torch.Generator().manual_seed(MAX_SEED).initial_seed() == MAX_SEED
    with pytest.raises(ValueError, match="Overflow"):
        torch.Generator().manual_seed(MAX_SEED + 1)
    assert torch.Generator().manual_seed(-1).initial_seed() == MAX_SEED  # why negatives are refused: -1 is 2**64 - 1


def test_missing_and_malformed_config_files(tmp_path: Path) -> None:
    with pytest.raises(KoloraError, match="does not exist"):
        load_config("smoke", tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n", encoding="utf-8")
    with pytest.raises(KoloraError, match="not valid YAML"):
        load_config("smoke", broken)


def test_every_leaf_field_is_a_flag() -> None:
    flags = config_flags()
    assert {"train.steps", "train.lora_rank", "ingest.source", "generate.prompts", "generate.shard", "models.source"} <= set(
        flags
    )
    assert "profile" not in flags and "train" not in flags


NON_FINITE = [("evaluate.min_aesthetic", "nan"), ("train.lora_alpha", "inf"), ("generate.lora_strength", "-inf")]


@pytest.mark.parametrize(("field", "value"), NON_FINITE)
def test_nan_and_infinity_are_refused_where_they_would_pass_a_gate_or_poison_a_run(field: str, value: str) -> None:
    """NaN compares false both ways: `min_aesthetic: nan` passed every gate; inf/NaN weights failed only after loading."""
    with pytest.raises(KoloraError, match=rf"config field '{field}': Input should be a finite number"):
        load_config("smoke", overrides={field: value})


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("twice.yaml", "train:\n  steps: 3\n  steps: 7\n", r"twice\.yaml is not valid YAML: key 'steps' appears twice.*line 3"),
        ("twice.json", '{"train": {"steps": 3}, "train": {"steps": 4}}', r"twice\.json is not valid JSON: key 'train' appears"),
        ("twice.toml", "[train]\nsteps = 3\nsteps = 4\n", r"twice\.toml is not valid TOML"),
        ("nan.yaml", "evaluate:\n  min_aesthetic: .nan\n", r"nan\.yaml: config field 'evaluate\.min_aesthetic': .* finite"),
    ],
)
def test_a_key_written_twice_or_a_non_finite_number_in_a_config_file_is_refused(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(KoloraError, match=message):
        load_config("smoke", tmp_path / name)


def test_a_key_may_override_what_a_yaml_merge_brought_in() -> None:
    text = "base: &b {steps: 3, seed: 1}\ntrain:\n  <<: *b\n  steps: 5\n"
    assert yaml.load(text, Loader=UniqueKeyLoader) == {"base": {"steps": 3, "seed": 1}, "train": {"steps": 5, "seed": 1}}


@pytest.mark.parametrize("written", ["smoke", "nonexistent", None])
def test_a_profile_key_must_be_the_chosen_profile(tmp_path: Path, written: str | None) -> None:
    """The loader sets `profile` from the chosen profile: a file's other value would be ignored, the run another one."""
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"profile": written}), encoding="utf-8")
    with pytest.raises(KoloraError, match=rf"^config file {path} sets profile {written!r}, not the chosen 'full': ") as caught:
        load_config("full", path)
    assert "pass --profile" in str(caught.value) and "-p profile=" in str(caught.value)
    if written == "smoke":
        assert load_config("smoke", path).profile == "smoke"


@pytest.mark.parametrize("profile", ["full", "smoke"])
def test_kolora_configs_output_is_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], profile: str) -> None:
    """What `kolora config` prints (with its `profile:` line) is what users copy into a --config file."""
    assert main(["config", "--profile", profile]) == 0
    path = tmp_path / "copied.yaml"
    path.write_text(capsys.readouterr().out, encoding="utf-8")
    assert main(["config", "--profile", profile, "--config", str(path)]) == 0
    assert capsys.readouterr().out == path.read_text(encoding="utf-8")
    other = "smoke" if profile == "full" else "full"
    assert main(["config", "--profile", other, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"sets profile '{profile}', not the chosen '{other}'" in err, err


BOOLEAN_NUMBERS = [("train.steps", "yes", "an integer"), ("train.lora_rank", "true", "an integer")]
BOOLEAN_NUMBERS += [("train.learning_rate", "off", "a number"), ("models.tiny_seed", "no", "an integer")]
BOOLEAN_NUMBERS += [("ingest.max_images", "on", "an integer"), ("train.max_grad_norm", "false", "a number")]


@pytest.mark.parametrize(("field", "raw", "kind"), BOOLEAN_NUMBERS)
def test_a_boolean_for_a_number_is_refused_naming_the_field(field: str, raw: str, kind: str) -> None:
    """pydantic's lax mode read True as 1 and YAML reads yes/no/on/off as booleans: `-p steps=yes` trained 1 step."""
    word = str(yaml.safe_load(raw)).lower()
    with pytest.raises(KoloraError, match=rf"config field '{re.escape(field)}': got the boolean {word} \(YAML .*: give {kind}$"):
        load_config("smoke", overrides=flag_overrides({field: raw}))


def test_a_boolean_for_a_number_in_a_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  steps: true\n", encoding="utf-8")
    with pytest.raises(KoloraError, match=rf"^config file {re.escape(str(path))}: config field 'train.steps': got the boolean"):
        load_config("smoke", path)


def test_numbers_as_flag_text_and_booleans_where_a_field_takes_one_still_load() -> None:
    """Flags arrive as text; YAML reads '1e-4' as a string (its floats need a dot), which pydantic's strict mode would refuse."""
    flags = {"train.steps": "3", "train.learning_rate": "1e-4", "train.lora_alpha": "8", "train.center_crop": "no"}
    train = load_config("smoke", overrides=flag_overrides({**flags, "train.compile": "yes", "train.max_grad_norm": "null"})).train
    assert (train.steps, train.learning_rate, train.lora_alpha, train.center_crop, train.compile) == (3, 1e-4, 8.0, False, True)
    assert train.max_grad_norm is None


@pytest.mark.parametrize(
    ("raw", "read", "text"), [("2026", "2026 as a number", "2026"), ("2026-01-01", "2026-01-01 as a date", "2026-01-01")]
)
def test_a_number_for_a_text_field_says_how_to_quote_it(raw: str, read: str, text: str) -> None:
    """`-p caption=2026` was refused as 'Input should be a valid string (got 2026)', with no word on how to pass it."""
    with pytest.raises(KoloraError) as caught:
        load_config("smoke", overrides=flag_overrides({"ingest.caption": raw}))
    message = str(caught.value)
    assert message.startswith("command-line flags: config field 'ingest.caption': Input should be a valid string")
    assert message.endswith(
        f'YAML reads an unquoted {read}: to pass it as text, quote it: "{text}" in a file, "\'{text}\'" in a flag or -p value'
    )
    assert (
        load_config("smoke", overrides=flag_overrides({"ingest.caption": f"'{text}'"})).ingest.caption == text
    )  # the advice works


def test_a_boolean_for_a_text_field_says_how_to_quote_the_word(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("ingest:\n  caption: no\n", encoding="utf-8")
    with pytest.raises(
        KoloraError, match=r"'ingest\.caption': Input should be a valid string \(got False\); YAML reads an unquoted "
    ):
        load_config("smoke", path)
    path.write_text('ingest:\n  caption: "no"\n', encoding="utf-8")  # the advice works
    assert load_config("smoke", path).ingest.caption == "no"
