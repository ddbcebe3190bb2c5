"""`kolora run` with its embedded store: what one run publishes the next one finds, and no store process outlives a run."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from kolora_core.runner.local import RunOptions, run_workflow
from kolora_core.storage.embedded import STORE_DIRNAME, EmbeddedS3
from kolora_core.storage.s3 import S3Store
from tests.runner.conftest import TEMPLATES
from tests.storage.test_embedded import REPO, store_processes, wait_gone

SLOW = """\
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: slow
spec:
  entrypoint: main
  templates:
    - name: main
      dag:
        tasks:
          - {name: wait, template: wait}
    - name: wait
      container:
        image: kolora/test
        command: [python, -c, "import time; print('waiting', flush=True); time.sleep(30)  # TOKEN"]
"""


def test_a_second_run_sees_what_the_first_published(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = run_workflow(RunOptions(template=TEMPLATES / "promote.yaml", runs_dir=runs, console=io.StringIO()))
    assert first.ok and "embedded" in first.store
    assert "published s3://kolora/models/kolora/v1/" in (first.node("promote").result or "")
    assert wait_gone(runs / STORE_DIRNAME) == []
    console = io.StringIO()
    second = run_workflow(RunOptions(template=TEMPLATES / "promote.yaml", runs_dir=runs, console=console))
    assert second.ok
    assert "already published s3://kolora/models/kolora/v1/ with the same LoRA" in console.getvalue()
    with EmbeddedS3(runs / STORE_DIRNAME) as settings:  # the run's own artifacts are gone, the release stays
        keys = S3Store(settings).list_keys("")
    assert keys and all(k.startswith("models/kolora/") for k in keys)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_no_store_process_outlives_an_interrupted_run(tmp_path: Path, sig: signal.Signals) -> None:
    token = f"kolora-test-{tmp_path.name}"
    template = tmp_path / "slow.yaml"
    template.write_text(SLOW.replace("TOKEN", token))
    runs = tmp_path / "runs"
    run = subprocess.Popen(
        [sys.executable, "-m", "kolora_core.cli", "run", "--template", str(template), "--runs-dir", str(runs)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not any("waiting" in log.read_text() for log in runs.glob("*/logs/*.log")):
            assert time.monotonic() < deadline and run.poll() is None, "the run did not reach its step"
            time.sleep(0.1)
        (server,) = store_processes(runs / STORE_DIRNAME)
        ports = json.loads((runs / STORE_DIRNAME / "server.json").read_text())["ports"].values()
        listening = [c for c in server.net_connections("inet") if c.status == psutil.CONN_LISTEN]
        assert len(listening) == 8 and {c.laddr.ip for c in listening} == {"127.0.0.1"}  # `ss -ltn` during a run
        run.send_signal(sig)
        run.wait(timeout=60)
        assert wait_gone(runs / STORE_DIRNAME) == []
        # both signals end the run in order: the step's process group stopped, the store stopped, sockets included
        assert not [p for p in ports if list(Path("/tmp").glob(f"seaweedfs-*-{p}.sock"))]
        assert not [p for p in psutil.process_iter(["cmdline"]) if any(token in a for a in p.info["cmdline"] or [])]
        with EmbeddedS3(runs / STORE_DIRNAME):  # the next start clears what a killed server left in /tmp
            pass
        assert not [p for p in ports if list(Path("/tmp").glob(f"seaweedfs-*-{p}.sock"))]
    finally:
        run.kill()
        for proc in psutil.process_iter(["cmdline"]):  # a step that survived (the assertion above failed)
            if any(token in part for part in proc.info["cmdline"] or []):
                proc.kill()
