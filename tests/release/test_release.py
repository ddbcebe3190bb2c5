"""Publishing: a release only behind a passed gate; published versions never overwritten; latest.json written last."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from jobs.publish import main as publish_main
from kolora_core.errors import KoloraError, TransientError
from kolora_core.lora.format import save_lora, save_safetensors
from kolora_core.release.assemble import RELEASE_MANIFEST, assemble_release, file_sha256
from kolora_core.release.intact import verify_release
from kolora_core.release.modelscope import upload_to_modelscope
from kolora_core.release.publish import CLAIM, CLAIM_LEASE_S, LATEST, publish_release
from kolora_core.storage.errors import PreconditionFailed
from kolora_core.storage.objects import LocalStorage, S3StoreStorage
from tests.conftest import mark_complete, write_story_images
from tests.lora.test_format import _reordered


def _lora_dir(root: Path, fill: float = 0.0, exports: bool = True, summary: bool = True) -> Path:
    """A train output; without `summary` the training identity is only in the LoRA's metadata (an older train's)."""
    root.mkdir(parents=True)
    identity = {"training_identity": "t" * 64, "dataset_sha256": "d" * 64}
    tensors = {"m.lora_A.default.weight": torch.full((16, 4), fill)}
    save_lora(root / "lora.safetensors", tensors, rank=16, alpha=4.0, extra={} if summary else identity)
    if summary:
        facts = {"steps": 4, "training_identity": "t" * 64, "trainset_sha256": "d" * 64, "training_inputs": {"steps": 4}}
        (root / "train_summary.json").write_text(json.dumps(facts))
    if exports:
        for name in ("lora_diffusers.safetensors", "lora_kohya.safetensors"):
            save_safetensors(root / name, {"unet.m.lora_A.weight": torch.full((16, 4), fill)}, {"export": name})
    return mark_complete(root)


REPORT = {
    "settings": {"base_model": "tiny", "base_model_sha256": "b" * 64},
    "training": {"rank": 16},
    "scores": {"aesthetic": {"status": "scored", "model": "fake-a", "stats": {"mean": 6.5}}, "clip_similarity": {}},
    "scorers": {"identity": "s" * 64, "kind": "tiny", "aesthetic": {"repo": "hf://a/b", "revision": None}, "clip": None},
    "images": [{"index": i, "aesthetic": 6.0 + i / 7} for i in range(8)],
}


def _report_dir(root: Path, lora: Path, result: str = "passed", mean: float = 6.5) -> Path:
    """evaluate's report of the LoRA in `lora` (its sha256 in `training`, as evaluate records it)."""
    root.mkdir(parents=True)
    gate = {"result": result, "reason": f"gate {result} for the test", "mean_aesthetic": mean, "min_aesthetic": 6.0}
    training = REPORT["training"] | {"lora_sha256": file_sha256(lora / "lora.safetensors")}
    (root / "report.json").write_text(json.dumps(REPORT | {"gate": gate, "training": training}))
    (root / "report.html").write_text("<html>report</html>")
    Image.new("RGB", (8, 16), (1, 2, 3)).save(root / "grid.png")
    (root / "gate.txt").write_text(result + "\n")
    return mark_complete(root)


def _release(
    tmp_path: Path, name: str = "rel", fill: float = 0.0, version: str | None = None, lora: Path | None = None, mean: float = 6.5
) -> Path:
    out = tmp_path / name
    out.mkdir()
    lora = lora or _lora_dir(tmp_path / f"{name}-lora", fill)
    images = write_story_images(tmp_path / f"{name}-images", shards=2, lora=lora)
    assemble_release("kolora", version, lora, _report_dir(tmp_path / f"{name}-report", lora, mean=mean), images, out)
    return out


def _stage(tmp_path: Path, lora: Path, report: Path, *extra: str) -> int:
    images = tmp_path / "images"
    if not images.exists():
        write_story_images(images, shards=2, lora=lora)
    argv = ["--profile", "smoke", "--lora", str(lora), "--report", str(report), "--images", str(images)]
    return publish_main([*argv, "--release", str(tmp_path / "release"), *extra])


def test_stage_assembles_the_release_behind_a_passed_gate(tmp_path: Path) -> None:
    lora = _lora_dir(tmp_path / "lora")
    assert _stage(tmp_path, lora, _report_dir(tmp_path / "report", lora)) == 0
    release_dir = tmp_path / "release"
    release = json.loads((release_dir / RELEASE_MANIFEST).read_text())
    expected = {
        "lora.safetensors",
        "lora_diffusers.safetensors",
        "lora_kohya.safetensors",
        "train_summary.json",
        "report.json",
        "report.html",
        "grid.png",
    }
    story = {f"images/{i:03d}.png" for i in range(8)} | {"images/generations.jsonl"}
    assert set(release["files"]) == expected | story
    assert {p.name for p in release_dir.iterdir()} == expected | {"images", RELEASE_MANIFEST, "_SUCCESS"}
    assert release["version"] == "lora-" + release["identity"][:12] and release["name"] == "kolora"
    assert release["gate"]["result"] == "passed" and release["base_model"] == "tiny"
    # what a later run compares with: training identity + trainset (check-changes), scorers, story and scores
    assert (release["training_identity"], release["trainset_sha256"]) == ("t" * 64, "d" * 64)
    assert release["scorers"] == REPORT["scorers"]
    assert release["scores"] == {"mean_aesthetic": 6.5, "mean_clip_similarity": None}
    assert [s["index"] for s in release["story"]] == list(range(8)) and release["story"][3] == {
        "index": 3, "file": "003.png", "prompt": "p3", "negative_prompt": "", "seed": 3, "cfg_scale": 4, "steps": 4,
        "width": 64, "height": 64, "lora_strength": 1, "aesthetic": 6.0 + 3 / 7, "clip_similarity": None,
    }  # fmt: skip
    records = (release_dir / "images" / "generations.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["index"] for line in records] == list(range(8))  # two shards merged, in story order
    assert all(len(release["files"][f]["content_sha256"]) == 64 for f in expected if f.endswith(".safetensors"))
    lora2 = _lora_dir(tmp_path / "lora2", exports=False)
    assert _stage(tmp_path, lora2, _report_dir(tmp_path / "r2", lora2), "--publish.version", "v1") == 0
    release = json.loads((release_dir / RELEASE_MANIFEST).read_text())
    assert release["version"] == "v1" and "lora_kohya.safetensors" not in release["files"]  # exports only where present


@pytest.mark.parametrize("result", ["failed", "skipped"])
def test_stage_refuses_unless_passed(tmp_path: Path, result: str, capsys: pytest.CaptureFixture[str]) -> None:
    lora = _lora_dir(tmp_path / "lora")
    assert _stage(tmp_path, lora, _report_dir(tmp_path / "report", lora, result)) == 2
    err = capsys.readouterr().err
    assert f"evaluate gate is '{result}' (gate {result} for the test): only a LoRA whose evaluation passed is published" in err
    assert not (tmp_path / "release" / RELEASE_MANIFEST).exists()


class RecordingStorage(LocalStorage):
    def __init__(self, root: Path, fail_on: str | None = None) -> None:
        super().__init__(root)
        self.puts: list[str] = []
        self.fail_on = fail_on

    def _record(self, key: str) -> None:
        if self.fail_on and key.endswith(self.fail_on):
            raise OSError("connection reset")
        self.puts.append(key)

    def put(self, key: str, data: bytes | Path) -> None:
        self._record(key)
        super().put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> str:
        self._record(key)
        return super().put_if_absent(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        self._record(key)
        return super().put_if_match(key, data, etag)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("another lora", r"report\.json is the evaluation of LoRA [0-9a-f]{12}, but --lora .*lora holds [0-9a-f]{12}: pass"),
        ("not json", r"report\.json is not valid JSON"),
        ("a list", r"report\.json must hold a JSON object"),
        ("gate text", r"report\.json is not an evaluate report \(gate, training, settings, scores, images\): rerun"),
        ("image text", r"report\.json: an entry of 'images' is not a JSON object: rerun evaluate"),
    ],
)
def test_stage_refuses_a_report_that_is_not_this_loras_evaluation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str, message: str
) -> None:
    """A passed gate of another LoRA published this one (exit 0, release.json with the other report's gate); a report
    that is no JSON object, or whose gate or images are not objects, was a traceback (JSONDecodeError, AttributeError)."""
    lora = _lora_dir(tmp_path / "lora")
    report = _report_dir(tmp_path / "report", _lora_dir(tmp_path / "other", fill=1.0) if damage == "another lora" else lora)
    data = json.loads((report / "report.json").read_text())
    changed = {"not json": "{", "a list": "[]", "gate text": json.dumps(data | {"gate": "passed"})}
    changed["image text"] = json.dumps(data | {"images": ["x"]})
    if damage in changed:
        (report / "report.json").write_text(changed[damage])
    assert _stage(tmp_path, lora, report) == 2
    assert re.search(message, capsys.readouterr().err.strip().splitlines()[-1])
    assert not (tmp_path / "release" / RELEASE_MANIFEST).exists()


def test_stage_refuses_images_of_another_lora(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The release's story must be the one its LoRA rendered (the records name the LoRA file), not another run's."""
    lora = _lora_dir(tmp_path / "lora")
    write_story_images(tmp_path / "images", shards=2, lora=_lora_dir(tmp_path / "other", fill=1.0))
    assert _stage(tmp_path, lora, _report_dir(tmp_path / "report", lora)) == 2
    assert "was rendered with LoRA" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "release" / RELEASE_MANIFEST).exists()


def test_stage_checks_the_copied_lora_not_the_source_it_read_before_copying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The LoRA file is what the evaluation's sha256 is checked against: a file that changes between the check and the
    copy (another run writing the directory) was released as if evaluated, with release.json naming the new bytes."""
    lora, other = _lora_dir(tmp_path / "lora"), _lora_dir(tmp_path / "other", fill=1.0)
    write_story_images(tmp_path / "images", shards=2, lora=lora)
    copy = shutil.copy2

    def copy_while_rewritten(source: Path, target: Path) -> object:
        return copy(other / source.name if source.name == "lora.safetensors" else source, target)

    monkeypatch.setattr("kolora_core.release.assemble.shutil.copy2", copy_while_rewritten)
    assert _stage(tmp_path, lora, _report_dir(tmp_path / "report", lora)) == 2
    assert "is the evaluation of LoRA" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "release" / RELEASE_MANIFEST).exists()


@pytest.mark.parametrize("summary", [True, False], ids=["train_summary", "lora-metadata"])
def test_stage_records_the_training_of_the_released_copy_not_of_the_source_rewritten_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, summary: bool
) -> None:
    """release.json's training identity and trainset fingerprint (what check-changes compares a later run with) were
    read from --lora after the copy: a directory rewritten in between gave the released bytes another training's."""
    lora = _lora_dir(tmp_path / "lora", summary=summary)
    report = _report_dir(tmp_path / "report", lora)
    copy = shutil.copy2

    def copy_then_rewrite_the_source(source: Path, target: Path) -> object:
        copied = copy(source, target)
        if source == lora / "train_summary.json":
            source.write_text(json.dumps({"training_identity": "x" * 64, "trainset_sha256": "y" * 64, "training_inputs": {}}))
        elif source == lora / "lora.safetensors":
            other = {"training_identity": "x" * 64, "dataset_sha256": "y" * 64}
            save_lora(source, {"m.lora_A.default.weight": torch.full((16, 4), 0.0)}, rank=16, alpha=4.0, extra=other)
        return copied

    monkeypatch.setattr("kolora_core.release.assemble.shutil.copy2", copy_then_rewrite_the_source)
    assert _stage(tmp_path, lora, report) == 0
    release_dir = tmp_path / "release"
    release = json.loads((release_dir / RELEASE_MANIFEST).read_text())
    assert (release["training_identity"], release["trainset_sha256"]) == ("t" * 64, "d" * 64)
    assert release["training_inputs"] == ({"steps": 4} if summary else None)
    assert release["files"]["lora.safetensors"]["sha256"] == file_sha256(release_dir / "lora.safetensors")


def test_stage_names_the_copied_train_summary_and_its_source_when_it_is_not_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The file read is the release's copy; the line says it is --lora's file, and where a good one comes from."""
    lora = _lora_dir(tmp_path / "lora")
    (lora / "train_summary.json").write_text("{")
    assert _stage(tmp_path, lora, _report_dir(tmp_path / "report", mark_complete(lora))) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"release\S*/train_summary\.json is not valid JSON: .* \(copied from --lora \S*lora\): pass the train", line)
    assert not (tmp_path / "release" / RELEASE_MANIFEST).exists()


def test_publish_writes_release_json_then_latest_last_and_is_idempotent(tmp_path: Path) -> None:
    release_dir = _release(tmp_path)
    version = json.loads((release_dir / RELEASE_MANIFEST).read_text())["version"]
    storage = RecordingStorage(tmp_path / "bucket")
    first = publish_release(storage, release_dir)
    assert first.status == "published" and first.version_prefix == f"models/kolora/{version}/"
    assert storage.puts[-2:] == [f"models/kolora/{version}/{RELEASE_MANIFEST}", f"models/kolora/{LATEST}"]
    assert len(storage.list(first.version_prefix)) == 8 + 9 + 1  # + the story (8 images, generations.jsonl), claim.json
    latest = json.loads(storage.get(f"models/kolora/{LATEST}"))
    manifest = json.loads((release_dir / RELEASE_MANIFEST).read_text())
    assert latest == {"name": "kolora", "version": version, "prefix": first.version_prefix} | {
        k: manifest[k] for k in ("lora_sha256", "identity")
    }
    storage.puts.clear()
    again = publish_release(storage, release_dir)
    assert (again.status, again.uploaded, storage.puts) == ("already-published", [], [])


def test_a_published_version_is_never_overwritten(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    lora = _lora_dir(tmp_path / "lora", fill=0.0)
    publish_release(storage, _release(tmp_path, "one", version="v1", lora=lora))
    before = {k: storage.get(k) for k in storage.list("models/")}
    with pytest.raises(KoloraError, match=r"kolora version v1 is already published .* never overwritten"):
        publish_release(storage, _release(tmp_path, "two", fill=1.0, version="v1"))
    assert {k: storage.get(k) for k in storage.list("models/")} == before
    # A new version moves latest.json; republishing v1 afterwards is a no-op for v1 and points latest back (last call wins).
    publish_release(storage, _release(tmp_path, "three", fill=1.0, version="v2"))
    assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == "v2"
    # Same LoRA file, freshly evaluated (a report may differ in timings): the same model, so nothing is written to v1.
    assert publish_release(storage, _release(tmp_path, "four", version="v1", lora=lora)).status == "already-published"
    assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == "v1"


@pytest.mark.parametrize("damage", ["not json {", "[1, 2]"])
def test_a_published_release_json_that_is_no_json_object_is_damage_with_its_way_out(tmp_path: Path, damage: str) -> None:
    storage = LocalStorage(tmp_path / "bucket")
    release_dir = _release(tmp_path, version="v1")
    publish_release(storage, release_dir)
    storage.put(f"models/kolora/v1/{RELEASE_MANIFEST}", damage.encode())
    before = {k: storage.get(k) for k in storage.list("models/")}
    with pytest.raises(
        KoloraError,
        match=r"published at models/kolora/v1/ but damaged \(models/kolora/v1/release.json "
        r"(is not valid JSON|does not hold a JSON object)\).*publish.version",
    ):
        publish_release(storage, release_dir)
    assert {k: storage.get(k) for k in storage.list("models/")} == before


def test_the_release_identity_is_the_content_not_the_file_bytes(tmp_path: Path) -> None:
    """The same weights and metadata written in another header order: the same identity, version and model."""
    first = _lora_dir(tmp_path / "first")
    second = tmp_path / "second"
    shutil.copytree(first, second)
    for name in ("lora.safetensors", "lora_kohya.safetensors"):
        _reordered(first / name, second / name)
    one, two = _release(tmp_path, "one", lora=first), _release(tmp_path, "two", lora=second)
    a, b = (json.loads((d / RELEASE_MANIFEST).read_text()) for d in (one, two))
    assert a["lora_sha256"] != b["lora_sha256"] and a["identity"] == b["identity"] and a["version"] == b["version"]
    storage = LocalStorage(tmp_path / "bucket")
    assert publish_release(storage, one).status == "published"
    assert publish_release(storage, two).status == "already-published"  # not refused as "other contents"
    third = _release(tmp_path, "three", fill=1.0, version=a["version"])
    with pytest.raises(KoloraError, match=r"already published .* with other contents"):
        publish_release(storage, third)


def test_a_crash_before_release_json_leaves_an_unpublished_version_that_a_retry_completes(tmp_path: Path) -> None:
    release_dir = _release(tmp_path, version="v1")
    broken = RecordingStorage(tmp_path / "bucket", fail_on=RELEASE_MANIFEST)
    with pytest.raises(OSError, match="connection reset"):
        publish_release(broken, release_dir)
    assert not broken.exists(f"models/kolora/v1/{RELEASE_MANIFEST}") and not broken.exists(f"models/kolora/{LATEST}")
    retry = publish_release(LocalStorage(tmp_path / "bucket"), release_dir)
    assert retry.status == "published" and retry.uploaded[-1] == f"models/kolora/{LATEST}"


def _die_after_claim(tmp_path: Path, release_dir: Path) -> None:
    """A publisher that dies after its claim and some files (an evicted pod)."""
    with pytest.raises(OSError, match="connection reset"):
        publish_release(RecordingStorage(tmp_path / "bucket", fail_on="grid.png"), release_dir)


def _age_claim(storage: LocalStorage, key: str, seconds: float) -> None:
    claim = json.loads(storage.get(key))
    storage.put(key, json.dumps(claim | {"claimed_at": round(time.time() - seconds)}).encode())


def test_a_claim_never_published_is_taken_over_by_another_release_of_the_lora_once_its_lease_is_over(tmp_path: Path) -> None:
    lora = _lora_dir(tmp_path / "lora")
    first, second = (
        _release(tmp_path, "one", version="v1", lora=lora),
        _release(tmp_path, "two", version="v1", lora=lora, mean=6.6),
    )
    assert (first / RELEASE_MANIFEST).read_bytes() != (second / RELEASE_MANIFEST).read_bytes()  # two evaluations
    _die_after_claim(tmp_path, first)
    storage, claim_key = LocalStorage(tmp_path / "bucket"), f"models/kolora/v1/{CLAIM}"
    with pytest.raises(KoloraError, match=r"being published by another run with the same LoRA .* taken over 60 min after"):
        publish_release(storage, second)
    _age_claim(storage, claim_key, CLAIM_LEASE_S - 60)
    with pytest.raises(KoloraError, match="being published by another run"):
        publish_release(storage, second)
    _age_claim(storage, claim_key, CLAIM_LEASE_S + 1)
    assert publish_release(storage, second).status == "published"
    assert verify_release(storage, "models/kolora", "kolora", "v1")["version"] == "v1"  # whole: the first's files rewritten
    assert storage.get(f"models/kolora/v1/{RELEASE_MANIFEST}") == (second / RELEASE_MANIFEST).read_bytes()
    assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == "v1"
    assert publish_release(storage, first).status == "already-published"  # the first one's retry, much later


def test_a_retried_publish_holds_its_own_claim_however_old(tmp_path: Path) -> None:
    release_dir = _release(tmp_path, version="v1")
    _die_after_claim(tmp_path, release_dir)
    storage = LocalStorage(tmp_path / "bucket")
    _age_claim(storage, f"models/kolora/v1/{CLAIM}", 5)  # the retry comes later: its claim's bytes differ
    assert publish_release(storage, release_dir).status == "published"


def test_a_changed_release_dir_is_refused(tmp_path: Path) -> None:
    release_dir = _release(tmp_path)
    (release_dir / "report.html").write_text("edited")
    with pytest.raises(KoloraError, match=r"report.html does not match its sha256"):
        publish_release(LocalStorage(tmp_path / "bucket"), release_dir)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", r"rel/lora.safetensors is missing, though release.json lists it: pass the publish stage's release"),
        ("outside", r"release.json lists file '../outside.txt', which is not a plain relative path: pass the publish"),
        ("alias", r"release.json lists file './lora.safetensors', which is not a plain relative path: pass the publish"),
        ("name", r"release.json names no model, version and files \(name '../kolora', version"),
        ("no-json", r"release.json is not valid JSON: pass the publish stage's release directory"),
        ("list", r"release.json does not hold a JSON object"),
    ],
)
def test_a_release_dir_whose_release_json_is_not_as_assembled_is_one_line_and_sends_nothing(
    tmp_path: Path, damage: str, message: str
) -> None:
    """A champion directory (release.json, no LoRA) was a FileNotFoundError traceback; a release.json listing '../x'
    (a run's output from the bucket, `--run-release`) was read from outside the directory, and a name with '/' was
    keyed outside <prefix>/<name>/."""
    release_dir = _release(tmp_path)
    manifest = json.loads((release_dir / RELEASE_MANIFEST).read_text())
    (tmp_path / "outside.txt").write_text("not the release's")
    if damage == "missing":
        (release_dir / "lora.safetensors").unlink()
    elif damage == "outside":
        manifest["files"]["../outside.txt"] = {"sha256": hashlib.sha256(b"not the release's").hexdigest(), "size": 17}
    elif damage == "alias":  # pathlib read it as lora.safetensors: the same file listed twice
        manifest["files"]["./lora.safetensors"] = manifest["files"]["lora.safetensors"]
    elif damage == "name":
        manifest["name"] = "../kolora"
    text = {"no-json": "{", "list": "[]"}.get(damage, json.dumps(manifest))
    (release_dir / RELEASE_MANIFEST).write_text(text)
    with pytest.raises(KoloraError, match=message):
        publish_release(LocalStorage(tmp_path / "bucket"), release_dir)
    assert not (tmp_path / "bucket").exists() or not any((tmp_path / "bucket").rglob("*"))


def test_s3_adapter_against_the_embedded_store(tmp_path: Path) -> None:
    from kolora_core.storage.embedded import EmbeddedS3
    from kolora_core.storage.s3 import S3Store

    with EmbeddedS3() as settings:
        store = S3Store(settings)
        store.ensure_bucket()
        storage = S3StoreStorage(store)
        release_dir = _release(tmp_path, version="v1")
        assert publish_release(storage, release_dir).status == "published"
        assert publish_release(storage, release_dir).status == "already-published"
        assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == "v1"
        assert len(storage.list("models/kolora/v1/")) == 8 + 9 + 1


class FakeHubApi:
    def __init__(self, existing: list[str] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.existing = existing

    def login(self, token: str) -> None:
        self.calls.append(("login", {"token": token}))

    def repo_exists(self, repo_id: str, **kwargs: object) -> bool:
        return self.existing is not None

    def get_model_files(self, repo_id: str, **kwargs: object) -> list[dict[str, str]]:
        return [{"Path": p} for p in self.existing or []]

    def create_repo(self, repo_id: str, **kwargs: object) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs: object) -> None:
        if kwargs.get("repo_id") == "me/broken":
            raise RuntimeError(f"401 for token {kwargs.get('token')}")
        self.calls.append(("upload_folder", kwargs))


def test_modelscope_upload_takes_the_token_from_the_environment_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    release_dir = _release(tmp_path, version="v3")
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    with pytest.raises(KoloraError, match="MODELSCOPE_API_TOKEN is not"):
        upload_to_modelscope(release_dir, "me/kolora", api=FakeHubApi())
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-secret-123")
    api = FakeHubApi()
    assert upload_to_modelscope(release_dir, "me/kolora", api=api) == "me/kolora: version v3 uploaded under v3/"
    upload = dict(api.calls)["upload_folder"]
    assert (upload["repo_id"], upload["folder_path"], upload["path_in_repo"]) == ("me/kolora", str(release_dir), "v3")
    assert api.calls[0] == ("login", {"token": "ms-secret-123"}) and api.calls[1][0] == "create_repo"
    skipped = FakeHubApi(existing=[f"v3/{RELEASE_MANIFEST}"])
    assert "already uploaded" in upload_to_modelscope(release_dir, "me/kolora", api=skipped)
    assert [c[0] for c in skipped.calls] == ["login"]
    with pytest.raises(KoloraError) as caught:
        upload_to_modelscope(release_dir, "me/broken", api=FakeHubApi())
    assert "ms-secret-123" not in str(caught.value) and "401 for token ***" in str(caught.value)


def test_stage_uploads_to_modelscope_when_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    api = FakeHubApi()
    # modelscope's lazy top-level module refuses attribute access here; patch the real submodule object.
    monkeypatch.setattr(importlib.import_module("modelscope.hub.api"), "HubApi", lambda: api)
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "ms-secret-123")
    lora = _lora_dir(tmp_path / "lora")
    report = _report_dir(tmp_path / "report", lora)
    assert _stage(tmp_path, lora, report, "--publish.modelscope_repo", "me/kolora") == 0
    assert dict(api.calls)["upload_folder"]["path_in_repo"].startswith("lora-")


class _ContestedLatest(LocalStorage):
    """Another writer replaces latest.json just before each of this process's conditional writes of it."""

    def _lose(self, key: str) -> None:
        self.put(key, json.dumps({"name": "kolora", "version": f"other-{time.monotonic_ns()}"}).encode())
        raise PreconditionFailed(f"{key} changed")

    def put_if_absent(self, key: str, data: bytes) -> str:
        if key.endswith(LATEST):
            self._lose(key)
        return super().put_if_absent(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> str:
        if key.endswith(LATEST):
            self._lose(key)
        return super().put_if_match(key, data, etag)


def test_latest_json_lost_to_other_writers_every_time_is_a_transient_failure(tmp_path: Path) -> None:
    """Exit 75: the promote step's retry, 30 s later, may find latest.json still (exit 2 would never be retried)."""
    with pytest.raises(TransientError, match=r"models/kolora/latest\.json kept changing under \d+ attempts"):
        publish_release(_ContestedLatest(tmp_path / "bucket"), _release(tmp_path))
