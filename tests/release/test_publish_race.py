"""Two real `kolora publish` processes at once against the real S3 server: exactly one winner, one clear error.

Each process imports everything first and then waits at a file barrier, so both really start publishing
at the same moment (without the barrier, interpreter start-up skew hides the race). Repeated over several
versions: the old HEAD-then-PUT publishing let both exit 0 "published" in every trial.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kolora_core.release.assemble import RELEASE_MANIFEST
from kolora_core.release.publish import LATEST, publish_release
from kolora_core.storage.objects import S3StoreStorage
from kolora_core.storage.s3 import S3Store
from tests.release.test_release import _release

ROOT = Path(__file__).parents[2]
AT_BARRIER = """
import pathlib, sys, time
from kolora_core.cli import main
import kolora_core.cli.publish, kolora_core.release.promote  # everything imported before the barrier
barrier = pathlib.Path(sys.argv[1])
pathlib.Path(sys.argv[2]).touch()  # ready
while not barrier.exists():
    time.sleep(0.001)
sys.exit(main(sys.argv[3:]))
"""
TRIALS = 4


def _race(store: S3Store, tmp_path: Path, releases: list[Path]) -> list[tuple[int, str, str]]:
    """Run `kolora publish --release R` for every release at once; (exit code, stdout, stderr) per process."""
    barrier = tmp_path / f"go-{time.monotonic_ns()}"
    env = os.environ | {
        "PYTHONPATH": str(ROOT),
        "AWS_ACCESS_KEY_ID": store.settings.access_key_id or "",
        "AWS_SECRET_ACCESS_KEY": store.settings.secret_access_key or "",
    }
    endpoint = ["--s3-endpoint", store.settings.endpoint_url, "--bucket", store.bucket]
    ready = [barrier.with_name(f"{barrier.name}-ready-{i}") for i in range(len(releases))]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", AT_BARRIER, str(barrier), str(flag), "publish", "--release", str(r), *endpoint],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r, flag in zip(releases, ready, strict=True)
    ]
    deadline = time.monotonic() + 120
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    barrier.touch()
    return [(p.wait(timeout=120), *p.communicate()) for p in procs]


def _bucket_matches(storage: S3StoreStorage, prefix: str, release_dir: Path) -> None:
    """Every object of the published version is the winner's file (no mixture of the two uploads)."""
    release = json.loads(storage.get(prefix + RELEASE_MANIFEST))
    assert release == json.loads((release_dir / RELEASE_MANIFEST).read_text())
    for rel in release["files"]:
        assert storage.get(prefix + rel) == (release_dir / rel).read_bytes(), rel


@pytest.mark.slow
def test_two_processes_one_version_exactly_one_winner(store: S3Store, tmp_path: Path) -> None:
    storage = S3StoreStorage(store)
    for trial in range(TRIALS):
        version = f"v{trial}"
        a = _release(tmp_path, f"a{trial}", fill=0.0, version=version)
        b = _release(tmp_path, f"b{trial}", fill=1.0, version=version)
        results = _race(store, tmp_path, [a, b])
        codes = sorted(code for code, _, _ in results)
        assert codes == [0, 2], results
        (_, won_out, _), (_, _, lost_err) = sorted(results, key=lambda r: r[0])
        assert f"published s3://{store.bucket}/models/kolora/{version}/" in won_out
        lines = lost_err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"kolora publish: error: kolora version {version} is "), lost_err
        assert "with other contents" in lines[0] and "set publish.version to a new version" in lines[0]
        published = storage.get(f"models/kolora/{version}/{RELEASE_MANIFEST}")
        winner = a if published == (a / RELEASE_MANIFEST).read_bytes() else b
        _bucket_matches(storage, f"models/kolora/{version}/", winner)
        assert json.loads(storage.get(f"models/kolora/{LATEST}"))["version"] == version


def _evaluated_against(release_dir: Path, champion: dict[str, object]) -> Path:
    """The same release as if its gate had compared it with `champion` (release.json rewritten, hashes kept)."""
    manifest = json.loads((release_dir / RELEASE_MANIFEST).read_text())
    manifest["gate"]["champion"] = champion
    (release_dir / RELEASE_MANIFEST).write_text(json.dumps(manifest))
    return release_dir


@pytest.mark.slow
def test_two_promotions_over_one_champion_move_latest_once(store: S3Store, tmp_path: Path) -> None:
    """v2 and v3 were both evaluated against champion v1: the first swap of latest.json wins, the other is refused."""
    storage = S3StoreStorage(store)
    publish_release(storage, _release(tmp_path, "one", fill=0.0, version="v1"))
    champion = {"status": "found", "version": "v1", "comparable": True}
    two = _evaluated_against(_release(tmp_path, "two", fill=1.0, version="v2"), champion)
    three = _evaluated_against(_release(tmp_path, "three", fill=2.0, version="v3"), champion)
    results = _race(store, tmp_path, [two, three])
    assert sorted(code for code, _, _ in results) == [0, 2], results
    lost = next(err for code, _, err in results if code == 2).strip()
    assert "was evaluated against v1: another promotion moved it meanwhile; start a new run to compare with it" in lost
    assert "\n" not in lost
    latest = json.loads(storage.get(f"models/kolora/{LATEST}"))["version"]
    winner_out = next(out for code, out, _ in results if code == 0)
    assert latest in {"v2", "v3"} and f"/models/kolora/{latest}/" in winner_out
    # both versions are published (their own prefixes): only the pointer is contested
    assert storage.exists(f"models/kolora/v2/{RELEASE_MANIFEST}") and storage.exists(f"models/kolora/v3/{RELEASE_MANIFEST}")
