"""A real `kolora run` stopped by Ctrl-C in the middle of generate's story, then `kolora run --retry`: the retry renders
only the images the stopped step had not finished (the kept ones are the very files it saved, not rendered again),
renders again the kept ones that were damaged in the store since (never trusted), and ends with the images of an
uninterrupted run. The generate template of workflows/dist/kolora-pipeline.yaml (what a cluster runs) is the only task,
on the tiny models, with the process engine; Ctrl-C makes the runner stop the step with SIGTERM, as `argo stop` does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from jobs.generate import main as generate_main
from kolora_core.cli import main
from kolora_core.inference.story import GENERATIONS, image_name, read_png_record
from kolora_core.models.layout import ModelDir
from kolora_core.models.prompt_embeddings import write_prompt_embeddings
from kolora_core.runner.run_record import RECORD_FILE
from kolora_core.storage.s3 import S3Store
from tests.conftest import mark_complete
from tests.inference.conftest import write_tiny_lora
from tests.runner.conftest import REPO, ctrl_c_when_logged

# slow: the generate stage three times (two of them step processes: ~7 s of imports each)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("store_credentials")]

PIPELINE = REPO / "workflows" / "dist" / "kolora-pipeline.yaml"
STORY = 8  # the smoke profile's story prompts, all in one shard
# One image a batch: the stop falls between images, and an image does not depend on its batch-mates, so a resumed
# story renders the same pixels as a whole one. 20 steps make an image ~0.2 s here, time for the stop to land mid-story.
CONFIG = json.dumps({"generate": {"batch_size": 1, "steps": 20}})
PARAMETERS = {"profile": "smoke", "config": CONFIG}
STOP_AFTER = 3  # finished images before Ctrl-C: two to damage in the store, at least one to keep
INPUTS = {"models": "inputs/models", "lora": "inputs/lora", "prompt-embeddings": "inputs/prompt-embeddings"}


def _generate_only(tmp_path: Path) -> Path:
    """The dist pipeline's own generate template as the only task, its inputs from the store under INPUTS (the rest
    of the spec unchanged)."""
    spec = yaml.safe_load(PIPELINE.read_text(encoding="utf-8"))
    generate = next(t for t in spec["spec"]["templates"] if t["name"] == "generate")
    artifacts = [{"name": name, "s3": {"key": key}} for name, key in INPUTS.items()]
    arguments = {"parameters": [{"name": "shard", "value": "0"}], "artifacts": artifacts}
    task = {"name": "generate", "template": "generate", "arguments": arguments}
    spec["spec"]["templates"] = [{"name": "main", "dag": {"tasks": [task]}}, generate]
    spec["spec"]["entrypoint"] = "main"
    spec["spec"].pop("onExit", None)
    path = tmp_path / "generate-only.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def _put_inputs(store: S3Store, models: Path, tmp_path: Path) -> dict[str, Path]:
    """What fetch-models and train leave in the store: the tiny models, a LoRA, and prompt-embeddings that train
    skipped (so generate encodes the story itself, as after a bf16 train); returns the local copies."""
    embeddings = tmp_path / "prompt-embeddings"
    write_prompt_embeddings(embeddings, {}, ModelDir(models).text_encoder_fingerprint(), skipped="not made by this test")
    given = {"models": models, "lora": write_tiny_lora(tmp_path / "lora"), "prompt-embeddings": mark_complete(embeddings)}
    for name, key in INPUTS.items():
        store.upload_tree(given[name], key)
    return given


def _uninterrupted(given: dict[str, Path], tmp_path: Path) -> Path:
    """The images an uninterrupted run commits: the same stage, inputs and config in one go. Run in this process,
    which has torch and diffsynth imported already: a third `kolora run` would start them again (~7 s)."""
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "uninterrupted"
    argv = ["--profile", "smoke", "--config", str(config), "--images", str(out)]
    assert generate_main(argv + [arg for name, path in given.items() for arg in (f"--{name}", str(path))]) == 0
    return out


def _stop_in_generate(store: S3Store, runs: Path, template: Path) -> Path:
    """A real `kolora run`, Ctrl-C once generate has logged its STOP_AFTER-th image; returns the run's directory."""
    logged = rf"image {STOP_AFTER}/{STORY} "
    return ctrl_c_when_logged(store, runs, template, PARAMETERS, "generate", logged, reach_s=120, stop_s=60)[0]


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _without_seconds(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "seconds": 0}  # how long an image took is the one thing a rerun may change


def test_a_run_stopped_in_generate_and_retried_renders_only_what_is_missing(
    store: S3Store, tiny_models: Path, tmp_path: Path
) -> None:
    given = _put_inputs(store, tiny_models, tmp_path)
    whole = _uninterrupted(given, tmp_path)

    runs = tmp_path / "runs"
    run_dir = _stop_in_generate(store, runs, _generate_only(tmp_path))
    rid = run_dir.name
    log = (run_dir / "logs" / "generate.log").read_text(encoding="utf-8")
    prefix = f"{rid}/generate-progress/shard-0/"
    finished = sorted(int(key[len(prefix) : -len(".json")]) for key in store.list_keys(prefix) if key.endswith(".json"))
    assert STOP_AFTER <= len(finished) < STORY, f"stopped mid-story: {finished}"
    assert "uploaded the stopped step's outputs, as Argo does:" in log and "progress (" in log
    assert json.loads((run_dir / RECORD_FILE).read_text(encoding="utf-8"))["status"] == "Failed"

    # since the stop, two kept images were damaged in the store: one PNG cut short, one record with another sha256
    truncated, wrong_sha, *intact = finished
    png = store.get_with_etag(f"{prefix}{image_name(truncated)}")[0]
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    store.upload_file(tmp_path / "cut.png", f"{prefix}{image_name(truncated)}")
    sidecar = prefix + Path(image_name(wrong_sha)).with_suffix(".json").name
    store.put_text(sidecar, json.dumps({**json.loads(store.get_with_etag(sidecar)[0]), "sha256": "0" * 64}))
    kept = {index: store.get_with_etag(f"{prefix}{image_name(index)}")[0] for index in intact}

    assert main(["run", "--retry", rid, "--runs-dir", str(runs)]) == 0
    record = json.loads((run_dir / RECORD_FILE).read_text(encoding="utf-8"))
    assert record["status"] == "Succeeded" and record["retries"] == 1
    retried = (run_dir / "logs" / "generate.log").read_text(encoding="utf-8")[len(log) :]
    assert "retry 1 of the run: generate runs again (interrupted before)" in retried
    assert f"({len(intact)} finished by an earlier attempt)" in retried
    rendered = re.findall(r"image \d+/(\d+) \(story #(\d+),", retried)
    missing = [index for index in range(STORY) if index not in intact]
    assert [int(story) for _, story in rendered] == missing, "only what was not finished, or no longer whole"
    assert {int(total) for total, _ in rendered} == {len(missing)}
    for damaged in (truncated, wrong_sha):
        assert f"progress: {image_name(damaged)} does not match this run's job {damaged}; rendering it again" in retried

    images = run_dir / "generate" / "images"
    for index, data in kept.items():
        assert (images / image_name(index)).read_bytes() == data, "the stopped step's own image, not rendered again"
    for index in range(STORY):
        name = image_name(index)
        assert np.array_equal(_pixels(images / name), _pixels(whole / name)), name
        assert _without_seconds(read_png_record(images / name)) == _without_seconds(read_png_record(whole / name))
    assert _records(images) == _records(whole)


def _records(images: Path) -> list[dict[str, Any]]:
    """generations.jsonl, in story order, less the seconds each image took."""
    lines = (images / GENERATIONS).read_text(encoding="utf-8").splitlines()
    return [_without_seconds(json.loads(line)) for line in lines]
