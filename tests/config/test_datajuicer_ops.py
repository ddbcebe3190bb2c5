"""`filter.ops` names are checked against the pinned Data-Juicer's ops when the config is read, not at the filter stage.

A typo (`image_size_filtr`, `min_widht`) was found only when the filter stage ran Data-Juicer: after `kolora submit`
had sent the workflow, or after `kolora run` had started the store and run ingest. The check reads the committed
table (tests/data/test_datajuicer_ops_table.py holds it to the installed Data-Juicer), so it works where Data-Juicer
is not installed (a laptop that submits to a cluster).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kolora_core.config import load_config
from kolora_core.config.datajuicer_ops import datajuicer_ops
from kolora_core.errors import KoloraError

ROOT = Path(__file__).resolve().parents[2]
DJ = f"Data-Juicer {datajuicer_ops().version}"


def recipe(tmp_path: Path, *ops: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text("filter:\n  ops:\n" + "".join(f"    - {op}\n" for op in ops), encoding="utf-8")
    return path


SEED_OPS = (
    "image_shape_filter: {min_width: 1024, min_height: 1024, any_or_all: any}",
    "image_aspect_ratio_filter: {min_ratio: 0.5, max_ratio: 2.0, any_or_all: any}",
)


def test_an_unknown_op_is_refused_naming_its_place_the_file_and_close_names(tmp_path: Path) -> None:
    path = recipe(tmp_path, *SEED_OPS, "image_size_filtr: {max_size: 10MB}")
    with pytest.raises(KoloraError) as caught:
        load_config("smoke", path)
    assert str(caught.value) == (
        f"config file {path}: config field 'filter.ops[2]': 'image_size_filtr' is not a {DJ} op "
        "(did you mean image_size_filter, image_shape_filter, image_nsfw_filter?)"
    )


def test_an_unknown_parameter_is_refused_with_the_ops_close_parameters(tmp_path: Path) -> None:
    with pytest.raises(KoloraError) as caught:
        load_config("smoke", recipe(tmp_path, "image_shape_filter: {min_widht: 512}"))
    assert str(caught.value).endswith(
        f"config field 'filter.ops[0]': image_shape_filter has no parameter 'min_widht' in {DJ} "
        "(did you mean min_width, min_height, max_width?)"
    )


def test_without_a_close_name_the_refusal_says_what_there_is() -> None:
    with pytest.raises(KoloraError) as caught:
        load_config("smoke", overrides={"filter.ops": [{"image_deduplicator": {"hash": "phash"}}]})
    assert str(caught.value) == (
        f"command-line flags: config field 'filter.ops[0]': image_deduplicator has no parameter 'hash' in {DJ}: it takes "
        "consider_text, method, besides those every op takes (kolora_core/config/datajuicer_ops.json lists them)"
    )
    with pytest.raises(KoloraError, match=r"'filter\.ops\[1\]': 'dedupe' is not a Data-Juicer [\d.]+ op: name one of its ops"):
        load_config("smoke", overrides={"filter.ops": [{"image_deduplicator": {}}, {"dedupe": {}}]})
    with pytest.raises(KoloraError, match=r"'filter\.ops\[0\]': must map exactly one op name to its arguments"):
        load_config("smoke", overrides={"filter.ops": [{"image_deduplicator": {}, "image_shape_filter": {}}]})


def test_the_seed_recipe_and_the_parameters_every_op_takes_are_accepted(tmp_path: Path) -> None:
    """The base class's parameters (and a Filter's) are Data-Juicer's too: its preflight accepts them on every op."""
    common = "num_proc: 2, batch_size: 100, text_key: text, image_key: image, accelerator: cpu, mem_required: 1GB"
    seed = load_config("full", recipe(tmp_path, *SEED_OPS)).filter.ops
    assert seed == load_config("full").filter.ops, "the defaults are the seed recipe written out"
    path = recipe(tmp_path, f"image_shape_filter: {{min_width: 8, {common}, reversed_range: false}}")
    assert load_config("smoke", path).filter.ops[0]["image_shape_filter"]["num_proc"] == 2


def test_the_recipe_docs_data_md_shows_is_accepted(tmp_path: Path) -> None:
    docs = (ROOT / "docs" / "data.md").read_text(encoding="utf-8")
    example = re.search(r"Example \(`--config recipe\.yaml`\):\n\n```yaml\n(.*?)```", docs, re.S)
    assert example, "docs/data.md's recipe example moved: point this test at it"
    (tmp_path / "recipe.yaml").write_text(example.group(1), encoding="utf-8")
    ops = load_config("smoke", tmp_path / "recipe.yaml").filter.ops
    assert [next(iter(op)) for op in ops] == [next(iter(op)) for op in yaml.safe_load(example.group(1))["filter"]["ops"]]


def without_datajuicer(tmp_path: Path) -> dict[str, str]:
    """The environment of a laptop without Data-Juicer: `import data_juicer` fails as it does where it is absent."""
    (tmp_path / "absent" / "data_juicer").mkdir(parents=True)
    (tmp_path / "absent" / "data_juicer" / "__init__.py").write_text("raise ImportError('no data_juicer here')\n")
    return {"PYTHONPATH": f"{tmp_path / 'absent'}:{ROOT}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}


@pytest.mark.parametrize(
    ("command", "name"),
    [(["config", "--profile", "smoke"], "config"), (["submit", "--dry-run", "-p", "profile=smoke"], "submit")],
)
def test_kolora_config_and_submit_refuse_it_in_one_line_without_data_juicer(
    tmp_path: Path, command: list[str], name: str
) -> None:
    """What a user types on a laptop: exit 2, one line naming the file, the item and the close names, nothing else."""
    path = recipe(tmp_path, *SEED_OPS, "image_size_filtr: {max_size: 10MB}")
    argv = [sys.executable, "-m", "kolora_core.cli", *command, "--config", str(path)]
    done = subprocess.run(argv, cwd=tmp_path, env=without_datajuicer(tmp_path), capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr.splitlines() == [
        f"kolora {name}: error: {'--config ' if name == 'submit' else 'config file '}{path}: config field 'filter.ops[2]': "
        f"'image_size_filtr' is not a {DJ} op (did you mean image_size_filter, image_shape_filter, image_nsfw_filter?)"
    ]
