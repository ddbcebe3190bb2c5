"""The user's own images through the store: `dataset-key` names a prefix, the ingest pod reads it as `--source`.

Argo's executor treats an input artifact whose key is empty as not supplied (`HasLocationOrKey`): optional ones
are skipped, required ones fail; it never reads the bucket's root. The local runner does the same, and the ingest
template of workflows/dist/kolora-pipeline.yaml (what a cluster runs) is run here on the real stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from kolora_core.data.layout import INGEST_REPORT
from kolora_core.storage.s3 import S3Store

from .conftest import ingest_only

KEYED_INPUT = """
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata: {name: keyed}
spec:
  entrypoint: main
  arguments:
    parameters: [{name: k, value: ""}]
  templates:
    - name: main
      dag:
        tasks: [{name: look, template: look}]
    - name: look
      inputs:
        artifacts:
          - {name: given, path: /kolora/inputs/given, optional: OPTIONAL, s3: {key: "{{workflow.parameters.k}}"}}
      script:
        image: python
        command: [python]
        source: |
          import os
          p = "/kolora/inputs/given"
          print("saw", sorted(os.listdir(p)) if os.path.isdir(p) else None)
"""


def _template(tmp_path: Path, optional: bool) -> str:
    path = tmp_path / f"keyed-{optional}.yaml"
    path.write_text(KEYED_INPUT.replace("OPTIONAL", str(optional).lower()), encoding="utf-8")
    return str(path)


def test_an_empty_or_impossible_key_is_no_artifact(run: Any, store: S3Store, tmp_path: Path) -> None:
    """Optional: skipped, as Argo skips it (before, the runner stopped with an exception); required: the step fails."""
    store.put_text("uploads/mine/a.txt", "a")
    for key in ("", " ", "s3://bucket/uploads/mine", "uploads//mine", "../mine"):
        result, console = run(_template(tmp_path, optional=True), parameters={"k": key})
        assert result.ok, console
        assert result.node("look").result == "saw None", key
    result, console = run(_template(tmp_path, optional=True), parameters={"k": "uploads/mine/"})
    assert result.ok, console
    assert result.node("look").result == "saw ['a.txt']"
    result, console = run(_template(tmp_path, optional=False))
    assert not result.ok
    assert "input artifact 'given' has an empty key: set the parameter that names it" in console
    result, console = run(_template(tmp_path, optional=False), parameters={"k": "s3://bucket/uploads/mine"})
    assert not result.ok
    assert "input artifact 'given': no object can have the key 's3://bucket/uploads/mine'" in console


@pytest.fixture
def uploaded(store: S3Store, tmp_path: Path) -> str:
    """Three pictures and their captions, as `aws s3 sync my-images/ s3://<bucket>/datasets/mine/` leaves them."""
    folder = tmp_path / "my-images"
    folder.mkdir()
    rows = []
    for i, colour in enumerate(("red", "green", "blue")):
        Image.new("RGB", (160, 128), colour).save(folder / f"{colour}.png")
        rows.append(json.dumps({"file_name": f"{colour}.png", "text": f"a {colour} square {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    store.upload_tree(folder, "datasets/mine")
    return "datasets/mine/"


def test_ingest_reads_the_uploaded_images_instead_of_the_dataset(run: Any, uploaded: str, tmp_path: Path) -> None:
    template = ingest_only(tmp_path)
    result, console = run(template, parameters={"profile": "smoke", "dataset-key": uploaded, "caption": "null"})
    assert result.ok, console
    report = json.loads((result.run_dir / "ingest" / "dataset" / INGEST_REPORT).read_text(encoding="utf-8"))
    assert (report["source"], report["source_kind"], report["kept"]) == ("folder:source", "folder", 3)
    log = (result.run_dir / "logs" / "ingest.log").read_text(encoding="utf-8")
    assert "(ingest.source smoke:// is not read)" in log

    # a key under which nothing is stored: Argo skips the optional artifact, so the stage must say so (not train on
    # the profile's dataset instead)
    result, console = run(template, parameters={"profile": "smoke", "dataset-key": "datasets/mien"})
    assert not result.ok
    log = (result.run_dir / "logs" / "ingest.log").read_text(encoding="utf-8")
    last = log.strip().splitlines()[-1]
    assert "the upload 'datasets/mien' did not arrive" in last and "nothing is stored under that name" in last
    assert "exit 2" in console and "retry" not in console  # a user error, never retried

    result, console = run(template, parameters={"profile": "smoke"})  # no key: the profile's dataset, as before
    assert result.ok, console
    report = json.loads((result.run_dir / "ingest" / "dataset" / INGEST_REPORT).read_text(encoding="utf-8"))
    assert (report["source"], report["kept"]) == ("smoke://", 16)
    log = (result.run_dir / "logs" / "ingest.log").read_text(encoding="utf-8")  # the normal case, said as that
    assert "no --source upload named (--source-from is empty): ingest reads the source its config names" in log
    assert "does not exist" not in log and "WARNING" not in log


def test_a_kolora_upload_is_checked_in_the_ingest_pod(run: Any, store: S3Store, tmp_path: Path) -> None:
    """What `kolora upload` sent is read; the same key after another tool rewrote a file is refused on every attempt."""
    from kolora_core.cli.upload import upload_folder
    from kolora_core.upload_marker import scan_folder

    folder = tmp_path / "my-images"
    folder.mkdir()
    for colour in ("red", "green", "blue"):
        Image.new("RGB", (160, 128), colour).save(folder / f"{colour}.png")
    upload_folder(store, "datasets/checked", scan_folder(folder))
    template = ingest_only(tmp_path)
    result, console = run(template, parameters={"profile": "smoke", "dataset-key": "datasets/checked"})
    assert result.ok, console
    report = json.loads((result.run_dir / "ingest" / "dataset" / INGEST_REPORT).read_text(encoding="utf-8"))
    assert report["kept"] == 3  # the marker itself is no image, and nothing else is read
    log = (result.run_dir / "logs" / "ingest.log").read_text(encoding="utf-8")
    assert "the upload 'datasets/checked': 3 file(s) checked against the _SUCCESS of kolora upload" in log

    Image.new("RGB", (160, 128), "purple").save(tmp_path / "other.png")
    store.upload_file(tmp_path / "other.png", "datasets/checked/red.png")  # e.g. an `aws s3 cp` over it since
    result, console = run(template, parameters={"profile": "smoke", "dataset-key": "datasets/checked"})
    assert not result.ok
    last = (result.run_dir / "logs" / "ingest.log").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert "the upload 'datasets/checked': red.png differs from what kolora upload sent" in last
    assert "upload the folder again with kolora upload" in last
    # transient: a pod may have listed the key just before an upload over it began; a rewrite fails every attempt
    assert "exit 75; retry 2/2" in console and "(attempt 3/3)" in console, console
