"""What the embedded store (a SeaweedFS `weed server`) costs on this machine: start, stop, memory, throughput.

Starts the store `--starts` times on a fresh directory and as many times on one that already holds data (what
the second `kolora run` sees), then moves a `--mib` MiB file up and down through S3Store. Prints one JSON line:

    python bench/store_bench.py --starts 3 --mib 256
    {"bench": "store", "weed_version": "...", "binary_mib": 146.4, "start_fresh_s": [...], "start_existing_s": [...],
     "stop_s": [...], "rss_idle_mib": ..., "rss_after_transfer_mib": ..., "upload_mib_per_s": ..., ...}

A start is timed from `EmbeddedS3.start()` to its return, i.e. until an S3 write works (what a run waits for).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kolora_core.storage.embedded import EmbeddedS3, find_weed
from kolora_core.storage.s3 import S3Store


def rss_mib(server: EmbeddedS3) -> float:
    assert server.process is not None
    return round(psutil.Process(server.process.pid).memory_info().rss / 2**20, 1)


def timed_start(directory: Path) -> tuple[EmbeddedS3, float]:
    server = EmbeddedS3(directory)
    started = time.monotonic()
    server.start()
    return server, round(time.monotonic() - started, 2)


def timed_stop(server: EmbeddedS3) -> float:
    started = time.monotonic()
    server.stop()
    return round(time.monotonic() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--mib", type=int, default=256)
    args = parser.parse_args()
    weed = find_weed()
    out: dict[str, object] = {
        "bench": "store",
        "weed_version": subprocess.run([str(weed), "version"], capture_output=True, text=True).stdout.split("\n")[0],
        "binary_mib": round(weed.stat().st_size / 2**20, 1),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    fresh, existing, stops = [], [], []
    with tempfile.TemporaryDirectory(prefix="kolora-store-bench-") as tmp:
        for i in range(args.starts):
            server, seconds = timed_start(Path(tmp) / f"fresh-{i}")
            fresh.append(seconds)
            stops.append(timed_stop(server))
        keep = Path(tmp) / "kept"
        server, _ = timed_start(keep)
        payload = Path(tmp) / "payload.bin"
        payload.write_bytes(os.urandom(args.mib * 2**20))
        store = S3Store(server.settings)  # type: ignore[arg-type]
        out["rss_idle_mib"] = rss_mib(server)
        started = time.monotonic()
        store.upload_file(payload, "bench/payload.bin")
        out["upload_mib_per_s"] = round(args.mib / (time.monotonic() - started), 1)
        started = time.monotonic()
        store.download_file("bench/payload.bin", Path(tmp) / "back.bin")
        out["download_mib_per_s"] = round(args.mib / (time.monotonic() - started), 1)
        out["rss_after_transfer_mib"] = rss_mib(server)
        stops.append(timed_stop(server))
        for _ in range(args.starts):
            server, seconds = timed_start(keep)
            existing.append(seconds)
            stops.append(timed_stop(server))
        out["data_dir_mib"] = round(sum(p.stat().st_size for p in (keep / "data").rglob("*") if p.is_file()) / 2**20, 1)
    out.update(
        start_fresh_s=fresh,
        start_existing_s=existing,
        start_median_s=statistics.median(fresh + existing),
        stop_s=max(stops),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
