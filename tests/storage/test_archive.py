"""tar.gz packing with Argo's rules: one top-level entry, unpacked by content, escaping members refused."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kolora_core.storage.archive import is_targz, pack_targz, unpack_targz


def test_unpack_follows_argo_rules_and_refuses_escaping_members(tmp_path: Path) -> None:
    several = tmp_path / "several.tgz"
    with tarfile.open(several, "w:gz") as tar:
        for name in ("one.txt", "two.txt"):
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    unpack_targz(several, tmp_path / "out")  # several top-level entries: the directory itself becomes the path
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["one.txt", "two.txt"]

    evil = tmp_path / "evil.tgz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.TarError):
        unpack_targz(evil, tmp_path / "evil-out")
    assert not (tmp_path / "escaped.txt").exists()

    (tmp_path / "plain.txt").write_text("not a tarball")
    pack_targz(tmp_path / "plain.txt", tmp_path / "plain.tgz")
    assert is_targz(tmp_path / "plain.tgz") and not is_targz(tmp_path / "plain.txt")
