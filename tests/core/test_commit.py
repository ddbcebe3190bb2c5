"""Committed directories: staging outside the output, `_SUCCESS` last, inputs read only as far as they were committed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from kolora_core import commit
from kolora_core.errors import KoloraError
from kolora_core.stages import COMPLETE_MARKER


def _committed(root: Path, files: dict[str, str]) -> Path:
    staging = commit.begin(root, "test")
    for name, text in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    commit.commit(root, staging, {"stage": "test"})
    return root


def test_staging_is_beside_the_output_and_the_output_stays_empty_until_the_commit(tmp_path: Path) -> None:
    out = tmp_path / "outputs" / "images"
    staging = commit.begin(out, "test")
    assert staging == tmp_path / "outputs" / ".staging" / "images"
    assert out.is_dir() and not any(out.iterdir())
    (staging / "sub").mkdir()
    (staging / "sub" / "a.png").write_text("a")
    (staging / "generations.jsonl").write_text("{}\n")
    assert not any(out.iterdir()), "nothing reaches the output path before the commit"
    files = commit.commit(out, staging, {"stage": "generate"})
    assert files == ["generations.jsonl", "sub/a.png"]
    marker = json.loads((out / COMPLETE_MARKER).read_text())
    assert marker["stage"] == "generate" and marker["files"] == files and marker["finished"].endswith("Z")
    assert not (tmp_path / "outputs" / ".staging").exists()


def test_a_new_commit_replaces_the_previous_one_whole(tmp_path: Path) -> None:
    out = _committed(tmp_path / "lora", {"old.bin": "1", "keep.txt": "old"})
    staging = commit.begin(out, "test")
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE_MARKER, "keep.txt", "old.bin"], "untouched until the commit"
    (staging / "keep.txt").write_text("new")
    commit.commit(out, staging, {})
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE_MARKER, "keep.txt"] and (out / "keep.txt").read_text() == "new"


def test_an_uncommitted_directory_with_files_is_refused_not_emptied(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(KoloraError, match="holds files but no _SUCCESS"):
        commit.begin(tmp_path / "mine", "test")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_another_stages_commit_is_refused_not_replaced(tmp_path: Path) -> None:
    """ingest's --dataset pointed at the models directory fetch-models committed (18 GB) would have replaced it."""
    models = _committed(tmp_path / "models", {"unet.safetensors": "weights"})
    with pytest.raises(KoloraError, match=r"holds what stage test committed, and ingest would replace it: pass another"):
        commit.begin(models, "ingest")
    assert (models / "unet.safetensors").read_text() == "weights" and not (tmp_path / ".staging").exists()
    staging = commit.begin(models, "test")  # the same stage again: a rerun replaces its own output
    commit.commit(models, staging, {"stage": "test"})
    assert sorted(p.name for p in models.iterdir()) == [COMPLETE_MARKER]
    (models / COMPLETE_MARKER).write_text('{"files": []}')  # a marker naming no stage: a rerun's, as before
    commit.commit(models, commit.begin(models, "ingest"), {"stage": "ingest"})
    assert commit.committed_by(models) == "ingest"


def test_inputs_lose_what_their_marker_does_not_list(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for shard in (0, 1):
        _committed(images / f"shard-{shard}", {f"00{shard}.png": "png", "generations.jsonl": "{}\n"})
    # what a failed attempt uploaded beside the retry's committed files (the issue-11 duplicate story index)
    (images / "shard-1" / ".partial").mkdir()
    (images / "shard-1" / ".partial" / "generations.jsonl").write_text("{}\n")
    (images / "shard-1" / "009.png").write_text("half")
    (images / "stray.txt").write_text("loose file beside the shards")
    removed = commit.accept_input("images", images)
    assert removed == ["stray.txt", "shard-1/.partial/generations.jsonl", "shard-1/009.png"]
    left = sorted(p.relative_to(images).as_posix() for p in images.rglob("*"))
    assert left == [
        "shard-0", "shard-0/000.png", f"shard-0/{COMPLETE_MARKER}", "shard-0/generations.jsonl",
        "shard-1", "shard-1/001.png", f"shard-1/{COMPLETE_MARKER}", "shard-1/generations.jsonl",
    ]  # fmt: skip
    assert commit.accept_input("images", images) == []


def test_symbolic_links_are_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("do not touch")
    root = _committed(tmp_path / "ds", {"a.txt": "a"})
    (root / "link").symlink_to(outside)
    (root / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    assert sorted(commit.accept_input("ds", root)) == ["dirlink", "link"]
    assert outside.read_text() == "do not touch" and not (root / "link").is_symlink()
    (root / "a.txt").unlink()
    (root / "a.txt").symlink_to(outside)
    with pytest.raises(KoloraError, match="is a symbolic link"):
        commit.accept_input("ds", root)
    (root / "a.txt").unlink()
    os.mkfifo(root / "a.txt")  # listed, but a read of it would wait for a writer for ever
    with pytest.raises(KoloraError, match=r"a\.txt is not a regular file \(a pipe, socket or device\)"):
        commit.accept_input("ds", root)


def test_a_marker_that_is_a_symbolic_link_is_refused_not_followed(tmp_path: Path) -> None:
    """A `_SUCCESS` linked to another commit's marker made whatever that one lists the input's commit (it was read
    through the link and accepted)."""
    other = _committed(tmp_path / "other", {"a.txt": "a"})
    for root in (tmp_path / "ds", tmp_path / "images" / "shard-0"):
        root.mkdir(parents=True)
        (root / "a.txt").write_text("not what other committed", encoding="utf-8")
        (root / COMPLETE_MARKER).symlink_to(other / COMPLETE_MARKER)
    for name in ("ds", "images"):
        with pytest.raises(KoloraError, match=rf"{COMPLETE_MARKER} is a symbolic link; committed outputs hold plain files"):
            commit.accept_input(name, tmp_path / name)


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("not json", "is not a JSON commit marker"),
        ('{"stage": "x"}', "lists no files"),
        ('{"files": ["../outside.txt"]}', "is not a file inside"),
        ('{"files": ["/etc/passwd"]}', "is not a file inside"),
        ('{"files": ["a.txt", "./a.txt"]}', "names './a.txt', which is not a file inside"),  # pathlib read it as a.txt
        ('{"files": ["a.txt", "a.txt/"]}', "names 'a.txt/', which is not a file inside"),
        ('{"files": ["sub//a.txt"]}', "names 'sub//a.txt', which is not a file inside"),
        ('{"files": ["a.txt", "gone.txt"]}', "lists 1 missing file"),
    ],
)
def test_untrusted_markers_are_refused(tmp_path: Path, marker: str, message: str) -> None:
    root = _committed(tmp_path / "ds", {"a.txt": "a"})
    (root / COMPLETE_MARKER).write_text(marker)
    with pytest.raises(KoloraError, match=message):
        commit.accept_input("ds", root)


def test_missing_or_uncommitted_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(KoloraError, match="does not exist"):
        commit.accept_input("lora", tmp_path / "absent")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "lora.safetensors").write_text("x")
    with pytest.raises(KoloraError, match="has no _SUCCESS marker"):
        commit.accept_input("lora", tmp_path / "half")
    _committed(tmp_path / "shards" / "shard-0", {"a": "a"})
    (tmp_path / "shards" / "shard-1").mkdir()
    with pytest.raises(KoloraError, match="has no _SUCCESS marker"):
        commit.accept_input("images", tmp_path / "shards")


def test_a_commit_cut_short_is_cleared_by_the_next_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _committed(tmp_path / "models", {"a.bin": "old"})
    staging = commit.begin(out, "test")
    (staging / "b.bin").write_text("new")
    monkeypatch.setattr(commit, "_move", lambda source, target: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        commit.commit(out, staging, {})
    monkeypatch.undo()
    assert not (out / COMPLETE_MARKER).exists() and (out / commit.COMMITTING).exists()
    with pytest.raises(KoloraError, match="has no _SUCCESS marker"):
        commit.accept_input("models", out)  # nobody reads it
    staging = commit.begin(out, "test")  # kolora's own half-commit: cleared, not refused
    assert not any(out.iterdir())
    (staging / "b.bin").write_text("new")
    commit.commit(out, staging, {})
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE_MARKER, "b.bin"]


def test_an_output_that_is_a_mount_stages_inside_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The models PVC is mounted at the fetch step's output path: no artifact upload, and a rename beats 18 GB of copying."""
    out = tmp_path / "models"
    out.mkdir()
    monkeypatch.setattr(commit.os.path, "ismount", lambda path: Path(path) == out)
    staging = commit.begin(out, "test")
    assert staging == out / commit.STAGING
    (staging / "unet.safetensors").write_text("w")
    assert commit.commit(out, staging, {}) == ["unet.safetensors"]
    assert sorted(p.name for p in out.iterdir()) == [COMPLETE_MARKER, "unet.safetensors"]
    staging = commit.begin(out, "test")  # a later attempt's leftovers sit inside, beside the previous commit
    (staging / "half").write_text("x")
    assert commit.accept_input("models", out) == [".staging/half"], "a reader never takes them for the commit"
