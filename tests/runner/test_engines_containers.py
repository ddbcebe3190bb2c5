"""The podman and docker engines: their command lines, built without running any container engine.

The last tests run `ContainerEngine.run` against a fake `podman` script on PATH, which proves the plumbing
(inspect, scratch preparation, streaming, exit code) without an engine; the real thing is
`make smoke-containers` (images/smoke.sh).
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from kolora_core.errors import KoloraError
from kolora_core.runner.containers import ContainerEngine, DockerEngine, ImageUser, PodmanEngine, image_registry
from kolora_core.runner.engine import SCRIPT_NAME, Engine, StepRun
from kolora_core.runner.engines import ENGINES, get_engine
from kolora_core.runner.local import RunOptions, run_workflow
from kolora_core.stages import STAGES, stage_of
from kolora_core.storage.s3 import S3Store

IMAGE = "localhost/kolora-filter:0.1.0"
USER = ImageUser.parse("10001:10001")


def _step(scratch: Path, stage: str = "filter", **kw) -> StepRun:
    argv = (*STAGES[stage].command, "--profile", "smoke", *STAGES[stage].io_args())
    image = f"localhost/kolora-{STAGES[stage].image}:0.1.0"
    traits = {"gpu": STAGES[stage].gpu, "network": "default" if STAGES[stage].downloads else "none"}  # as the executor does
    defaults = dict(node=stage, image=image, argv=argv, env={"PYTHONUNBUFFERED": "1"}, scratch=scratch, **traits)
    return StepRun(**{**defaults, **kw})


def _podman(environ: dict[str, str] | None = None, euid: int = 0) -> PodmanEngine:
    return PodmanEngine(environ=environ or {}, euid=euid)


def _docker(environ: dict[str, str] | None = None, euid: int = 0) -> DockerEngine:
    return DockerEngine(environ=environ or {}, euid=euid)


def _after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_registered() -> None:
    assert {"process", "podman", "docker"} <= set(ENGINES)
    assert ENGINES["podman"] is PodmanEngine and ENGINES["docker"] is DockerEngine
    # `make images` tags localhost/kolora-<image>:<version>; the process engine ignores images
    assert PodmanEngine.default_parameters == DockerEngine.default_parameters == {"image-registry": "localhost"}
    assert ENGINES["process"].default_parameters == {}


def test_podman_command_line(tmp_path: Path) -> None:
    engine = _podman({"KOLORA_PODMAN_FLAGS": "--cgroup-manager=cgroupfs --runtime /usr/sbin/runc"})
    step = _step(tmp_path)
    argv = engine.command(step, "kolora-filter-abc", USER)
    assert argv[:5] == ["podman", "--cgroup-manager=cgroupfs", "--runtime", "/usr/sbin/runc", "run"]
    assert "--rm" in argv and "--init" in argv and _after(argv, "--name") == ["kolora-filter-abc"]
    assert _after(argv, "--pull") == ["never"]
    assert _after(argv, "--volume") == [f"{tmp_path.resolve()}:/kolora:Z"]
    assert _after(argv, "--workdir") == ["/kolora"]
    assert _after(argv, "--network") == ["none"]  # filter reads inputs: it needs no network
    assert _after(argv, "--env") == ["PYTHONUNBUFFERED=1"]
    assert "--userns" not in argv and "--user" not in argv  # root runner: the image's own USER, scratch chowned
    # the template's command replaces ENTRYPOINT; the args follow the image, exactly as given
    i = argv.index(IMAGE)
    assert argv[i - 2 : i] == ["--entrypoint", "python"]
    assert argv[i + 1 :] == list(step.argv[1:])


def test_podman_rootless_maps_the_invoking_user_to_the_images_user(tmp_path: Path) -> None:
    engine = _podman(euid=1000)
    argv = engine.command(_step(tmp_path), "n", USER)
    assert _after(argv, "--userns") == ["keep-id:uid=10001,gid=10001"]
    assert _after(_podman(euid=1000).command(_step(tmp_path), "n", ImageUser.parse("")), "--userns") == []


def test_docker_command_line(tmp_path: Path) -> None:
    engine = _docker({"KOLORA_DOCKER_FLAGS": "--context ci"})
    step = _step(tmp_path, "train")
    argv = engine.command(step, "kolora-train-1", USER)
    assert argv[:4] == ["docker", "--context", "ci", "run"]
    assert _after(argv, "--volume") == [f"{tmp_path.resolve()}:/kolora"]
    assert "--gpus" not in argv and "--userns" not in argv
    assert argv[argv.index("localhost/kolora-train:0.1.0") - 1] == "python"


def test_network_only_for_stages_that_download(tmp_path: Path) -> None:
    for stage in STAGES.values():
        argv = _podman().command(_step(tmp_path, stage.name), "n", USER)
        assert _after(argv, "--network") == ([] if not stage.inputs else ["none"]), stage.name
    assert _after(_podman().command(_step(tmp_path, network="host"), "n", USER), "--network") == ["host"]
    override = _podman({"KOLORA_CONTAINER_NETWORK": "host"})
    assert _after(override.command(_step(tmp_path, "ingest"), "n", USER), "--network") == ["host"]
    assert _after(override.command(_step(tmp_path, "filter"), "n", USER), "--network") == ["host"]


def test_gpus_only_for_gpu_stages(tmp_path: Path) -> None:
    docker = _docker({"KOLORA_GPUS": "all"})
    assert _after(docker.command(_step(tmp_path, "train"), "n", USER), "--gpus") == ["all"]
    assert _after(docker.command(_step(tmp_path, "evaluate"), "n", USER), "--gpus") == []
    assert _after(_docker({"KOLORA_GPUS": "0,1"}).command(_step(tmp_path, "generate"), "n", USER), "--gpus") == ['"device=0,1"']
    podman = _podman({"KOLORA_GPUS": "0,1"})
    assert _after(podman.command(_step(tmp_path, "generate"), "n", USER), "--device") == ["nvidia.com/gpu=0", "nvidia.com/gpu=1"]
    assert _after(_podman().command(_step(tmp_path, "train"), "n", USER), "--device") == []


def test_script_templates_get_their_source_at_kolora(tmp_path: Path) -> None:
    step = _step(tmp_path, argv=("python",), script="print(open('/kolora/x').read())")
    engine = _podman(euid=1000)
    argv = engine.command(step, "n", USER)
    assert argv[-2:] == [IMAGE, f"/kolora/{SCRIPT_NAME}"]
    engine.prepare(step, ImageUser.parse("0"))
    assert (tmp_path / SCRIPT_NAME).read_text() == "print(open('/kolora/x').read())"  # /kolora kept: it is mounted


def test_root_runner_chowns_the_scratch_dir_to_the_images_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "inputs" / "dataset").mkdir(parents=True)
    (tmp_path / "inputs" / "dataset" / "a.png").write_bytes(b"x")
    calls: dict[str, tuple[int, int]] = {}
    monkeypatch.setattr(os, "lchown", lambda path, uid, gid: calls.__setitem__(str(path), (uid, gid)))
    _podman(euid=0).prepare(_step(tmp_path), USER)
    expected = {str(tmp_path), *(str(p) for p in tmp_path.rglob("*"))}
    assert set(calls) == expected and set(calls.values()) == {(10001, 10001)}


def test_non_root_docker_opens_the_scratch_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "f").write_text("x")
    (tmp_path / "inputs" / "f").chmod(0o600)
    monkeypatch.setattr(os, "lchown", lambda *a: pytest.fail("a non-root runner cannot chown"))
    _docker(euid=1000).prepare(_step(tmp_path), USER)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o777
    assert stat.S_IMODE((tmp_path / "inputs").stat().st_mode) == 0o777
    assert stat.S_IMODE((tmp_path / "inputs" / "f").stat().st_mode) == 0o644
    # rootless podman maps the user instead: nothing to change
    (tmp_path / "inputs").chmod(0o755)
    _podman(euid=1000).prepare(_step(tmp_path), USER)
    assert stat.S_IMODE((tmp_path / "inputs").stat().st_mode) == 0o755


def test_image_user_parsing() -> None:
    assert ImageUser.parse("10001:10001") == ImageUser(10001, 10001, "10001:10001")
    assert ImageUser.parse("10001").gid == 10001
    assert ImageUser.parse("").is_root and ImageUser.parse("root").is_root
    assert ImageUser.parse("kolora").uid is None


def test_helpers() -> None:
    assert image_registry("localhost/kolora-ingest:0.1.0") == "localhost"
    assert image_registry("ghcr.io/kolora/kolora-ingest:0.1.0") == "ghcr.io"
    assert image_registry("python:3.11") == "docker.io"


def test_unresolved_or_missing_images_are_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _podman()
    with pytest.raises(KoloraError, match="not a resolved image reference"):
        engine.run(_step(tmp_path, image="{{workflow.parameters.image-registry}}/kolora-filter:0.1.0"), lambda s, ln: None)
    monkeypatch.setattr(ContainerEngine, "inspect", lambda self, image: None)
    with pytest.raises(KoloraError, match="make images"):
        engine.run(_step(tmp_path), lambda s, ln: None)


def test_check_reports_a_missing_binary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(KoloraError, match="'docker' is not installed"):
        get_engine("docker")


FAKE_ENGINE = """#!/bin/sh
# a stand-in for podman: `image inspect` answers with a config, `run` prints its argv and exits 3, `info` works
for a in "$@"; do
  case "$a" in
    info) exit 0 ;;
    inspect) echo '{"User":"10001:10001","Entrypoint":["python","-m","jobs.filter"]}'; exit 0 ;;
    run) printf '%s\\n' "$@" > "$FAKE_LOG"; echo "to stdout"; echo "to stderr" >&2; exit 3 ;;
  esac
done
exit 99
"""


def test_run_streams_and_returns_the_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "podman"
    fake.write_text(FAKE_ENGINE)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "argv.txt"))
    monkeypatch.setenv("KOLORA_PODMAN_FLAGS", "--log-level=error")
    monkeypatch.setattr(os, "lchown", lambda *a: None)
    engine = get_engine("podman")  # check() runs `podman info`
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    lines: list[tuple[str, str]] = []
    code = engine.run(_step(scratch), lambda stream, line: lines.append((stream, line)))
    assert code == 3
    assert ("stdout", "to stdout") in lines and ("stderr", "to stderr") in lines
    recorded = (tmp_path / "argv.txt").read_text().splitlines()
    assert recorded[:2] == ["--log-level=error", "run"] and IMAGE in recorded


STAGE_STEPS = """\
apiVersion: argoproj.io/v1alpha1
kind: WorkflowTemplate
metadata:
  name: stage-steps
spec:
  entrypoint: main
  templates:
    - name: main
      dag:
        tasks:
          - {name: train, template: train}
          - {name: ingest, template: ingest}
          - {name: other, template: other}
    - name: train
      container: {image: kolora/train, command: [python, -m, jobs.train, --profile, smoke]}
    - name: ingest
      container: {image: kolora/ingest, command: [python, -m, jobs.ingest]}
    - name: other
      container: {image: kolora/x, command: [python, -m, kolora_core.cli, publish]}
"""


def test_the_executor_marks_gpu_stages_and_downloads(tmp_path: Path, store: S3Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """What decides `--gpus` and `--network` is the stage table, applied by the executor, not by the engine."""
    seen: dict[str, StepRun] = {}

    class Recording(Engine):
        name, description = "recording", "records the steps it is given"

        def run(self, step: StepRun, sink: object) -> int:
            seen[step.node] = step
            return 0

    monkeypatch.setitem(ENGINES, "recording", Recording)
    template = tmp_path / "stage-steps.yaml"
    template.write_text(STAGE_STEPS)
    options = RunOptions(
        template=template, engine="recording", s3=store.settings, runs_dir=tmp_path / "runs", console=io.StringIO()
    )
    assert run_workflow(options).ok
    by_image = {step.image: (step.gpu, step.network) for step in seen.values()}
    # a step that is not a stage (promote, champion) talks to the run's store on this machine: the host's network
    assert by_image == {"kolora/train": (True, "none"), "kolora/ingest": (False, "default"), "kolora/x": (False, "host")}
    assert stage_of(["python", "-m", "jobs.fetch_models", "--x"]) is STAGES["fetch-models"]
    assert stage_of(["python", "-c", "print(1)"]) is None
