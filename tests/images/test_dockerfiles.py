"""The images and the workflow agree: names, entry commands, paths, user; and the Dockerfiles keep their promises.

No image is built here (that is `make smoke-containers`): the Dockerfiles are read as text, the workflow is
rendered in memory from the hera definitions, so a stage added to kolora_core.stages without an image, an image
whose ENTRYPOINT no longer matches the template's command, or a uid that drifts from the workflow's runAsUser
fails `make test`.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from kolora_core.stages import CONTAINER_ROOT, STAGES
from tests.images.dockerfile import Dockerfile, parse
from workflows.pipeline import RUN_UID
from workflows.render import render_all

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
IMAGE_NAMES = sorted({s.image for s in STAGES.values()})
DEFAULT_BASE = "python:3.11-slim-bookworm"
CACHE_VARS = ("HF_HOME", "MODELSCOPE_CACHE", "TORCH_HOME", "XDG_CACHE_HOME")
# how many instructions of the final stage every image shares (ARG PIP_CERT, ARG TORCH_INDEX_URL, COPY lock, RUN torch)
SHARED_FINAL_STEPS = 4


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@pytest.fixture(scope="module")
def dockerfiles() -> dict[str, Dockerfile]:
    return {path.parent.name: parse(path) for path in sorted(IMAGES.glob("*/Dockerfile"))}


@pytest.fixture(scope="module")
def templates() -> dict[str, dict]:
    """kolora-pipeline.yaml with and without GPUs, rendered from the current code."""
    return {f"gpu={gpu}": yaml.safe_load(render_all(gpu=gpu)["kolora-pipeline.yaml"]) for gpu in (True, False)}


def _containers(template: dict) -> dict[str, dict]:
    return {t["name"]: t for t in template["spec"]["templates"] if "container" in t}


def _stages_of(image: str) -> list[str]:
    return [s.name for s in STAGES.values() if s.image == image]


def _pip_installs(dockerfile: Dockerfile) -> list[list[str]]:
    """The words after every `pip install` in the final stage's RUN instructions."""
    found = []
    for run in dockerfile.final.all("RUN"):
        for command in re.split(r"&&|;", run.value):
            words = shlex.split(command)
            if words[:2] == ["pip", "install"]:
                found.append(words[2:])
    return found


def test_every_stage_has_an_image_and_every_image_a_stage(dockerfiles: dict[str, Dockerfile]) -> None:
    missing = [f"{s.name} (image {s.image})" for s in STAGES.values() if s.image not in dockerfiles]
    assert not missing, f"stages without images/<image>/Dockerfile: {missing}"
    assert sorted(dockerfiles) == IMAGE_NAMES, "images/ has a Dockerfile no stage uses (kolora_core/stages.py Stage.image)"


def _image_of(file: str, name: str, container: dict) -> str:
    """The kolora image a container template runs: `<registry param>/kolora-<image>:<tag param>`."""
    pattern = r"\{\{workflow\.parameters\.image-registry\}\}/kolora-([a-z0-9-]+):\{\{workflow\.parameters\.image-tag\}\}"
    found = re.fullmatch(pattern, container["image"])
    assert found, f"{file}: template {name} runs {container['image']}, not a kolora image with the registry/tag parameters"
    return found.group(1)


def _build_checks(dockerfile: Dockerfile) -> str:
    return " ".join(r.value for r in dockerfile.final.all("RUN"))


def test_workflow_images_are_the_dockerfiles(dockerfiles: dict[str, Dockerfile], templates: dict[str, dict]) -> None:
    for file, template in templates.items():
        for name, t in _containers(template).items():
            image = _image_of(file, name, t["container"])
            assert image in dockerfiles, f"{file}: template {name} runs kolora-{image}, which has no images/{image}/Dockerfile"
            if name in STAGES:
                assert image == STAGES[name].image, f"{file}: {name}"


def test_entrypoint_is_the_templates_command(dockerfiles: dict[str, Dockerfile], templates: dict[str, dict]) -> None:
    """Kubernetes' `command` replaces ENTRYPOINT: for the image's own stage they are the same, so
    `docker run IMAGE --help` and the workflow run the same program; every other command the workflow gives an
    image (the other stages sharing it, the promote step) runs the same interpreter, and the build starts each
    one with `--help`, so an image that cannot run a template's command does not build."""
    for image, dockerfile in dockerfiles.items():
        entrypoint = dockerfile.final.last("ENTRYPOINT")
        assert entrypoint is not None, f"{image}: no ENTRYPOINT"
        assert dockerfile.final.last("CMD") is not None and dockerfile.final.last("CMD").exec_form() == ["--help"]
        assert entrypoint.exec_form() == STAGES[image].command, f"{image}: ENTRYPOINT is not stage {image}'s command"
        for stage in _stages_of(image):
            assert f"{shlex.join(STAGES[stage].command)} --help" in _build_checks(dockerfile), f"{image}: never starts {stage}"
    for file, template in templates.items():
        for name, t in _containers(template).items():
            command = t["container"]["command"]
            dockerfile = dockerfiles[_image_of(file, name, t["container"])]
            if name in STAGES:
                assert command == STAGES[name].command, f"{file}: {name}"
            assert command[:2] == dockerfile.final.last("ENTRYPOINT").exec_form()[:2], f"{file}: {name}"
            assert f"{shlex.join(command)} --help" in _build_checks(dockerfile), (
                f"{file}: the {dockerfile.path.parent.name} image's build never runs `{shlex.join(command)} --help`"
            )


def test_python_on_path_is_the_venv(dockerfiles: dict[str, Dockerfile]) -> None:
    for image, dockerfile in dockerfiles.items():
        env = dockerfile.inherited_env(dockerfile.final)
        assert env["PATH"].startswith("/opt/venv/bin:"), image
        runs = " ".join(r.value for r in dockerfile.final.all("RUN"))
        assert "python3 -m venv /opt/venv" in runs, image


def test_paths_and_user_match_the_workflow(dockerfiles: dict[str, Dockerfile], templates: dict[str, dict]) -> None:
    for file, template in templates.items():
        security = template["spec"]["securityContext"]
        assert security["runAsUser"] == RUN_UID and security["runAsGroup"] == RUN_UID, file
        for name, t in _containers(template).items():
            mounts = {m["mountPath"] for m in t["container"]["volumeMounts"]}
            assert CONTAINER_ROOT in mounts, f"{file}: {name} does not mount {CONTAINER_ROOT}"
    for image, dockerfile in dockerfiles.items():
        final = dockerfile.final
        assert final.last("WORKDIR").value == CONTAINER_ROOT, image
        user = final.last("USER")
        assert user is not None and user.value == f"{RUN_UID}:{RUN_UID}", f"{image}: USER must be the workflow's runAsUser"
        # the user exists in the image with that uid/gid, and owns the volume path's directories
        base = " ".join(r.value for r in dockerfile.stage("base").all("RUN"))
        assert f"useradd --uid {RUN_UID} --gid {RUN_UID}" in base and f"groupadd --gid {RUN_UID}" in base, image
        assert f"chown -R {RUN_UID}:{RUN_UID} {CONTAINER_ROOT}" in base, image


def test_runtime_environment(dockerfiles: dict[str, Dockerfile]) -> None:
    for image, dockerfile in dockerfiles.items():
        env = dockerfile.inherited_env(dockerfile.final)
        assert env["PYTHONUNBUFFERED"] == "1", image
        for var in CACHE_VARS:  # caches on the volume: writable by the non-root user, never in the image
            assert env[var].startswith(f"{CONTAINER_ROOT}/cache"), f"{image}: {var}={env[var]}"
        assert env["HOME"] == "/home/kolora", image


def test_base_image_and_build_args(dockerfiles: dict[str, Dockerfile]) -> None:
    for image, dockerfile in dockerfiles.items():
        assert [i.keyword for i in dockerfile.global_args] == ["ARG"], image
        assert dockerfile.global_args[0].assignments() == {"BASE_IMAGE": DEFAULT_BASE}, image
        assert dockerfile.stages[0].base == "${BASE_IMAGE}", image
        assert len(dockerfile.stages) >= 2, f"{image}: multi-stage build expected"
        for stage in dockerfile.stages:
            if any(re.search(r"(?<![\w-])pip (install|wheel)", r.value) for r in stage.all("RUN")):
                assert stage.args().get("PIP_CERT", None) == "", f"{image}: stage {stage.name or 'final'} runs pip: ARG PIP_CERT="
        assert dockerfile.final.args()["TORCH_INDEX_URL"] == "https://pypi.org/simple", image
        labels = {k: v for label in dockerfile.final.all("LABEL") for k, v in label.assignments().items()}
        assert labels["org.opencontainers.image.version"] == "${VERSION}", image
        assert labels["org.opencontainers.image.revision"] == "${GIT_COMMIT}", image
        assert labels["org.opencontainers.image.title"] == f"kolora-{image}", image
        assert labels["dev.kolora.stages"].split() == _stages_of(image), image
        gpu = any(STAGES[s].gpu for s in _stages_of(image))
        assert labels["dev.kolora.accelerator"] == ("gpu" if gpu else "cpu"), image
        # the label args come last: a new commit must not invalidate the dependency layers
        keywords = [i.keyword for i in dockerfile.final.instructions]
        assert keywords[-1] == "LABEL" and "RUN" not in keywords[keywords.index("CMD") :], image


def test_shared_layers_are_identical(dockerfiles: dict[str, Dockerfile]) -> None:
    """base, build and the torch layer are byte-identical everywhere, so the images share them (one torch
    download per build machine, one pull per node); the diffusion layer is identical wherever it appears."""
    first_name, first = next(iter(dockerfiles.items()))

    def shared(d: Dockerfile) -> list[str]:
        texts = [i.text for s in d.stages[:-1] for i in s.instructions]
        return [*(f"FROM {s.base} AS {s.name}" for s in d.stages[:-1]), *texts] + [
            i.text for i in d.final.instructions[:SHARED_FINAL_STEPS]
        ]

    for image, dockerfile in dockerfiles.items():
        assert [s.name for s in dockerfile.stages] == ["base", "build", None], image
        assert shared(dockerfile) == shared(first), f"{image} and {first_name} differ in their shared stages/steps"
    diffusion = {i.text for d in dockerfiles.values() for i in d.final.all("RUN") if "diffsynth" in i.value}
    assert len(diffusion) == 1, f"the diffsynth layer differs between images: {diffusion}"


def test_installed_packages_are_locked(dockerfiles: dict[str, Dockerfile]) -> None:
    """Every package an image installs is a project dependency, pinned by constraints.txt (the one lock)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {_canonical(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) for d in pyproject["project"]["dependencies"]}
    locked = {
        _canonical(line.split("==")[0])
        for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    for image, dockerfile in dockerfiles.items():
        installs = _pip_installs(dockerfile)
        assert installs, image
        for words in installs:
            if "--no-deps" in words:  # the kolora wheel itself
                assert words[-1].startswith("/tmp/wheels/kolora-"), f"{image}: {words}"
                continue
            assert words[:2] == ["-c", "/opt/kolora/constraints.txt"], f"{image}: pip install without the lock: {words}"
            names = [w for w in words[2:] if not w.startswith("-") and "://" not in w and w != '"$TORCH_INDEX_URL"']
            names = [n for n in names if not n.startswith("$")]
            for name in names:
                package = _canonical(name.split("[")[0])
                assert package in declared, f"{image}: {name} is not a dependency in pyproject.toml"
                assert package in locked, f"{image}: {name} is not pinned in constraints.txt"


def test_build_context_holds_what_the_dockerfiles_copy(dockerfiles: dict[str, Dockerfile]) -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allowlist: everything out, then what the images need"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for image, dockerfile in dockerfiles.items():
        for stage in dockerfile.stages:
            for copy in stage.all("COPY"):
                words = copy.value.split()
                if any(w.startswith("--from=") for w in words):
                    continue
                for source in [w for w in words if not w.startswith("--")][:-1]:
                    assert source.rstrip("/") in allowed, f"{image}: COPY {source} is excluded by .dockerignore"
                    assert (REPO / source).exists(), f"{image}: COPY {source} does not exist"


def test_build_script_is_executable() -> None:
    for script in ("build.sh", "smoke.sh"):
        path = IMAGES / script
        assert path.is_file() and path.stat().st_mode & 0o111, f"images/{script} must be executable"
        assert ":latest" not in path.read_text(encoding="utf-8"), f"images/{script} uses a latest tag"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_prints_its_help(stage: str) -> None:
    """What each image's build runs (`python -m jobs.<stage> --help`), in-process: a help text argparse cannot
    format (e.g. a bare `%` in a config field's description) fails every image build, so `make test` says so first."""
    from kolora_core.stage_cli import build_parser

    assert build_parser(STAGES[stage]).format_help().startswith(f"usage: python -m {STAGES[stage].module}")
