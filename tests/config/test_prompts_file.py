"""Prompts files: YAML and JSONL read into generate.prompts at config load; every bad field named with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kolora_core.config import dump_config, inline_prompts_file_text, load_config
from kolora_core.config.loader import flag_overrides
from kolora_core.errors import KoloraError
from kolora_core.inference.story import shard_jobs

STORY_YAML = """\
# the story, two pictures
prompts:
  - prompt: 二次元,紫色长发少女,穿着黑色礼服
    negative_prompt: 丑陋、变形
    seed: 7
  - prompt: 二次元,演唱会
    seed: 1
    cfg_scale: 6.5
    steps: 30
    size: 1024x768
    lora_strength: 0.5
"""


def _load(path: Path, **more: object) -> object:
    return load_config("full", overrides={"generate.prompts_file": str(path), **more})


def test_yaml_file_replaces_the_prompts_and_overrides_resolve(tmp_path: Path) -> None:
    path = tmp_path / "story.yaml"
    path.write_text(STORY_YAML, encoding="utf-8")
    config = _load(path)
    generate = config.generate
    assert [p.seed for p in generate.prompts] == [7, 1]
    assert generate.prompts_file is None and generate.prompts_from == str(path)
    first, second = shard_jobs(generate)
    assert (first.cfg_scale, first.steps, first.width, first.height, first.lora_strength) == (4.0, 50, 1024, 1024, 1.0)
    assert (second.cfg_scale, second.steps, second.width, second.height, second.lora_strength) == (6.5, 30, 1024, 768, 0.5)
    # The dumped run config (what a pod gets) holds the prompts themselves, not a path only this machine has.
    dumped = yaml.safe_load(dump_config(config))["generate"]
    assert dumped["prompts_file"] is None and dumped["prompts"][1]["width"] == 1024
    assert load_config("full", overrides={"generate.prompts": dumped["prompts"]}).generate.prompts == generate.prompts


def test_jsonl_file_and_a_plain_list_yaml(tmp_path: Path) -> None:
    jsonl = tmp_path / "story.jsonl"
    jsonl.write_text('{"prompt": "a", "seed": 1}\n\n{"prompt": "b", "width": 512, "height": 640}\n', encoding="utf-8")
    assert [(p.prompt, p.width, p.height) for p in _load(jsonl).generate.prompts] == [("a", None, None), ("b", 512, 640)]
    plain = tmp_path / "story.yml"
    plain.write_text("- prompt: a\n- {prompt: b, size: 512}\n", encoding="utf-8")
    assert [(p.width, p.height) for p in _load(plain).generate.prompts] == [(None, None), (512, 512)]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "bad.yaml",
            STORY_YAML.replace("steps: 30", "steps: 0"),
            r"bad\.yaml line 9 \(prompt 1\): field 'steps': Input should be greater than or equal to 1 \(got 0\)",
        ),
        ("bad.yaml", STORY_YAML.replace("    seed: 7\n", "    sead: 7\n"), r"line 5 \(prompt 0\): field 'sead': unknown field"),
        (  # said as written, not as the width it is checked as; the value once
            "bad.yaml",
            STORY_YAML.replace("size: 1024x768", "size: 1000x768"),
            r"line 10 \(prompt 1\): size 1000x768: width must be a multiple of 64 \(diffsynth's [^()]*\), got 1000$",
        ),
        ("bad.yaml", "- prompt: a\n  size: 1024x700\n", r"line 2 \(prompt 0\): size 1024x700: height must be a multiple of 64"),
        (
            "bad.yaml",
            STORY_YAML.replace("seed: 7", "seed: 18446744073709551616"),
            r"line 5 \(prompt 0\): field 'seed': Input should be less than or equal to 18446744073709551615 \(got 1844",
        ),
        ("bad.yaml", "prompts:\n  - seed: 1\n", r"line 2 \(prompt 0\): field 'prompt': Field required"),
        ("bad.yaml", "prompts: [\n", r"bad\.yaml is not valid YAML"),
        ("bad.yaml", "prompts: []\n", r"must hold a non-empty list"),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": "b", "cfg_scale": "x"}\n', r"jsonl line 2 \(prompt 1\): field 'cfg_scale'"),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": "b",\n', r"bad\.jsonl line 2: not valid JSON"),
        ("bad.jsonl", '["a"]\n', r"line 1 \(prompt 0\): each prompt must be a mapping"),
        ("bad.txt", "a\n", r"unknown format '\.txt'"),
        ("bad.yaml", "- prompt: a\n  prompt: b\n", r"bad\.yaml is not valid YAML: key 'prompt' appears twice.*again on line 2"),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": "b", "prompt": "c"}\n', r"bad\.jsonl line 2: key 'prompt' appears twice"),
        ("bad.yaml", "- prompt: a\n  cfg_scale: .nan\n", r"line 2 \(prompt 0\): field 'cfg_scale': Input should be a finite"),
    ],
)
def test_bad_entries_name_file_line_and_field(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KoloraError, match=message) as caught:
        _load(path)
    assert "\n" not in str(caught.value)


def test_missing_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KoloraError, match=r"prompts file .*nope\.yaml does not exist: set generate\.prompts_file to a YAML"):
        _load(tmp_path / "nope.yaml")
    monkeypatch.chdir(tmp_path)  # a relative path from a config file is read from here, not beside the config
    with pytest.raises(KoloraError, match=rf"nope\.yaml does not exist: .*read from the working directory, {tmp_path}\)"):
        _load(Path("nope.yaml"))


def test_sizes_must_be_multiples_of_64() -> None:
    with pytest.raises(KoloraError, match=r"config field 'generate\.width': must be a multiple of 64 \([^()]*\), got 1000$"):
        load_config("full", overrides={"generate.width": 1000})
    with pytest.raises(KoloraError, match=r"field 'generate\.prompts\[0\]': size 960x1000: height must be a multiple of 64"):
        load_config("full", overrides={"generate.prompts": [{"prompt": "a", "size": "960x1000"}]})


def test_a_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"prompt": "a"}\n')
    assert [p.prompt for p in _load(path).generate.prompts] == ["a"]


def test_a_config_text_gets_the_prompts_inlined_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `config` parameter travels to steps and pods in other directories: its prompts file is read where the user
    named it, and the text holds the prompts, loading to the same config anywhere."""
    (tmp_path / "story.yaml").write_text(STORY_YAML, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    text = "generate: {prompts_file: story.yaml}\ntrain: {steps: 3}\n"
    inlined = inline_prompts_file_text(text)
    assert "prompts_file" not in inlined and yaml.safe_load(inlined)["train"] == {"steps": 3}
    expected = _load(Path("story.yaml"), **{"train.steps": 3})
    monkeypatch.chdir(tmp_path.parent)  # where a step runs: story.yaml names nothing there
    (tmp_path / "run.yaml").write_text(inlined, encoding="utf-8")
    assert load_config("full", tmp_path / "run.yaml") == expected
    unchanged = ("train: {steps: 3}  # no prompts file\n", "generate: {prompts_file: null}\n", "[not, a, mapping]", "a: [\n")
    assert [inline_prompts_file_text(text) for text in unchanged] == list(unchanged)
    with pytest.raises(KoloraError, match=r"^config field 'generate\.prompts_file': give the path of a YAML or JSONL file"):
        inline_prompts_file_text("generate: {prompts_file: 5}")


def test_inline_prompts_beside_a_prompts_file_are_refused_not_replaced(tmp_path: Path) -> None:
    """Both in one place: the file's prompts would replace the inline ones silently. A later layer's file over an
    earlier layer's prompts (a flag over a config file) is an override, as any other field."""
    path = tmp_path / "story.yaml"
    path.write_text(STORY_YAML, encoding="utf-8")
    both = f"generate:\n  prompts_file: {path}\n  prompts:\n    - prompt: mine\n"
    (tmp_path / "run.yaml").write_text(both, encoding="utf-8")
    refused = r"sets both generate\.prompts and generate\.prompts_file: the file would replace the inline prompts; keep one"
    with pytest.raises(KoloraError, match=rf"^config file .*run\.yaml {refused}"):
        load_config("full", tmp_path / "run.yaml")
    with pytest.raises(KoloraError, match=rf"^the run config {refused}"):
        inline_prompts_file_text(both)
    with pytest.raises(KoloraError, match=rf"^command-line flags {refused}"):
        _load(path, **{"generate.prompts": [{"prompt": "mine"}]})
    (tmp_path / "inline.yaml").write_text("generate:\n  prompts:\n    - prompt: mine\n", encoding="utf-8")
    over = load_config("full", tmp_path / "inline.yaml", {"generate.prompts_file": str(path)})
    assert [p.seed for p in over.generate.prompts] == [7, 1]


def test_more_prompts_than_the_grid_holds_names_the_rows_to_set(tmp_path: Path) -> None:
    """A 9th prompt read 'config field '(top level)': evaluate grid 2x4 has 8 cells but generate.prompts has 9',
    naming no field to change; now it says which value holds the story, and the config with it loads."""
    path = tmp_path / "story.yaml"
    path.write_text("".join(f"- {{prompt: p{i}, seed: {i}}}\n" for i in range(9)), encoding="utf-8")
    with pytest.raises(KoloraError) as caught:
        _load(path)
    assert str(caught.value) == (
        "command-line flags: evaluate grid 2x4 has 8 cells but generate.prompts has 9: set evaluate.grid_rows 5 "
        "(or raise evaluate.grid_columns)"
    )
    assert len(_load(path, **{"evaluate.grid_rows": 5}).generate.prompts) == 9


def test_a_json_file_is_read_as_json(tmp_path: Path) -> None:
    """A story.json (a list, or {"prompts": [...]}) was refused as "unknown format '.json'"; it is read by the JSON
    parser (PyYAML would refuse the tab indentation that JSON allows and read 1e3 as text)."""
    path = tmp_path / "story.json"
    path.write_text('[\n\t{"prompt": "一只猫", "seed": 1},\n\t{"prompt": "b", "steps": 2e1, "size": "128x64"}\n]\n', "utf-8")
    read = [(p.prompt, p.seed, p.steps, p.width) for p in _load(path).generate.prompts]
    assert read == [("一只猫", 1, None, None), ("b", 0, 20, 128)]
    path.write_text('{"prompts": [{"prompt": "a"}]}', encoding="utf-8")
    assert [p.prompt for p in _load(path).generate.prompts] == ["a"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[{"prompt": "a"}, {"prompt": "b", "negative_promt": "x"}]', r"json \(prompt 1\): field 'negative_promt': unknown"),
        ('[{"prompt": "a"},\n {"prompt": "b",]', r"story\.json line 2: not valid JSON"),
        ('[{"prompt": "a", "prompt": "b"}]', r"story\.json: key 'prompt' appears twice"),
        ('{"prompt": "a"}', r"story\.json must hold a non-empty list of prompts"),
        ('["a"]', r"story\.json \(prompt 0\): each prompt must be a mapping"),
    ],
)
def test_a_bad_json_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "story.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(KoloraError, match=message) as caught:
        _load(path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (  # pydantic's "Input should be a valid list (got 'a cat on a mat')": not what to write
            "a cat on a mat",
            "config field 'generate.prompts': must be a list of prompts, each a mapping with at least 'prompt', "
            "e.g. [{prompt: a cat, seed: 1}, {prompt: a dog, seed: 2}] (got 'a cat on a mat')",
        ),
        (  # "Input should be a valid dictionary or instance of StoryPrompt (got 'a cat') (+1 more)": a Python class
            "[a cat, a dog]",
            "config field 'generate.prompts[0]': each prompt must be a mapping with at least 'prompt', "
            "e.g. {prompt: a cat, seed: 1} (got str 'a cat')",
        ),
        (  # "unknown config key ...: check its spelling against `kolora config --profile <name>`"
            "[{prompt: a, negative_promt: b}]",
            "config field 'generate.prompts[0].negative_promt': unknown field (allowed: prompt, negative_prompt, seed, "
            "cfg_scale, steps, width, height, lora_strength, size)",
        ),
    ],
)
def test_an_inline_story_of_the_wrong_shape_says_what_to_write(value: str, message: str) -> None:
    with pytest.raises(KoloraError) as caught:
        load_config("smoke", overrides=flag_overrides({"generate.prompts": value}))
    assert str(caught.value) == f"command-line flags: {message}"


@pytest.mark.parametrize("field", ["generate.cfg_scale", "generate.prompts"])
@pytest.mark.parametrize("value", [0, 0.5])
def test_a_guidance_scale_below_one_is_refused(field: str, value: float) -> None:
    """Both engines compute uncond + cfg x (cond - uncond): cfg 0 rendered the negative prompt alone (the records
    naming the prompt), 0.5 mostly it. Refused when the config loads, saying what 1 means."""

    def layer(cfg: float) -> dict[str, object]:
        return {field: cfg} if field == "generate.cfg_scale" else {field: [{"prompt": "a", "cfg_scale": cfg}]}

    named = "generate.cfg_scale" if field == "generate.cfg_scale" else r"generate.prompts\[0\].cfg_scale"
    with pytest.raises(KoloraError, match=rf"'{named}': must be at least 1 \(.*0 renders the negative prompt alone\): 1 = no "):
        load_config("smoke", overrides=layer(value))
    assert load_config("smoke", overrides=layer(1))


def test_a_blank_prompt_is_refused(tmp_path: Path) -> None:
    """An empty prompt was refused, one of spaces or a newline rendered (an image of no prompt)."""
    path = tmp_path / "story.yaml"
    path.write_text('- prompt: a\n- prompt: "\\t \\n"\n', encoding="utf-8")
    with pytest.raises(KoloraError, match=r"line 2 \(prompt 1\): field 'prompt': is blank \('\\t \\n'\): write what the image"):
        _load(path)
