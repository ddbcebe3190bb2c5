"""images/Dockerfile, pyproject's extras, the stage table and the workflow agree: one image per Stage.image.

No image is built here (that is `make smoke-containers`): the Dockerfile is read as text (one instruction per
line once continuation lines are joined), the workflow is rendered in memory from the hera definitions, and the two
build scripts (images/requirements.py, images/kolora-install.py) are run in-process on this checkout. So a stage
added to kolora_core.stages without an extra, an extra that the lock does not pin, a package named in the
Dockerfile instead of pyproject.toml, a workflow command an image's build would not start, or a uid that drifts
from the workflow's runAsUser fails `make test`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from kolora_core.stages import CONTAINER_ROOT, STAGES
from workflows.pipeline import PROMOTE
from workflows.pods import RUN_UID
from workflows.render import DIST, render_all

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "images"
IMAGE_NAMES = sorted({s.image for s in STAGES.values()})
DEFAULT_BASE = "python:3.11-slim-bookworm"
CACHE_VARS = ("HF_HOME", "MODELSCOPE_CACHE", "TORCH_HOME", "XDG_CACHE_HOME")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _script(name: str) -> ModuleType:
    """An images/ build script (run by the image build, not a package), loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"kolora_images_{name.replace('-', '_')}", IMAGES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


extra_requirements = _script("requirements").extra_requirements
install_commands = _script("kolora-install").commands


def _stages() -> dict[str | None, list[tuple[str, str]]]:
    """Build stage name -> its instructions (KEYWORD, rest); None holds what comes before the first FROM."""
    text = re.sub(r"\\\n\s*", " ", (IMAGES / "Dockerfile").read_text(encoding="utf-8"))
    stages: dict[str | None, list[tuple[str, str]]] = {None: []}
    current = None
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "FROM":
            current = rest.split(" AS ")[1]
            stages[current] = []
        stages[current].append((keyword, rest))
    return stages


BUILD = _stages()


def _all(stage: str | None, keyword: str) -> list[str]:
    return [rest for k, rest in BUILD[stage] if k == keyword]


def _env() -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", " ".join(_all("base", "ENV"))))


def _build_sh_images() -> list[list[str]]:
    """images/lib.sh's image_table: IMAGE ACCELERATOR STAGE... per image."""
    out = subprocess.run(
        ["bash", "-c", f"source {IMAGES / 'lib.sh'} && image_table"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split() for line in out.splitlines()]


@pytest.fixture(scope="module")
def templates() -> dict[str, dict]:
    """kolora-pipeline.yaml with and without GPUs, rendered from the current code."""
    return {f"gpu={gpu}": yaml.safe_load(render_all(gpu=gpu)["kolora-pipeline.yaml"]) for gpu in (True, False)}


def _containers(template: dict) -> dict[str, dict]:
    return {t["name"]: t for t in template["spec"]["templates"] if "container" in t}


def _image_of(file: str, name: str, container: dict) -> str:
    """The kolora image a container template runs: `<registry param>/kolora-<image>:<tag param>`."""
    pattern = r"\{\{workflow\.parameters\.image-registry\}\}/kolora-([a-z0-9-]+):\{\{workflow\.parameters\.image-tag\}\}"
    found = re.fullmatch(pattern, container["image"])
    assert found, f"{file}: template {name} runs {container['image']}, not a kolora image with the registry/tag parameters"
    return found.group(1)


def test_every_image_has_its_extra_and_runs_its_own_stage() -> None:
    """The Dockerfile's ENTRYPOINT runs `jobs.<IMAGE>` and installs `kolora[<IMAGE>]`: both must exist per image."""
    for image in IMAGE_NAMES:
        assert image in PYPROJECT["optional-dependencies"], f"pyproject.toml has no extra {image!r} for kolora-{image}"
        assert image in STAGES and STAGES[image].image == image, f"kolora-{image}: no stage of that name runs in it"
        assert STAGES[image].command == ["python", "-m", f"jobs.{image}"], image
    assert _all("image", "ENV") == ["KOLORA_STAGE_MODULE=jobs.${IMAGE}"]
    (entrypoint,) = _all("image", "ENTRYPOINT")
    assert json.loads(entrypoint) == ["/bin/sh", "-c", 'exec python -m "$KOLORA_STAGE_MODULE" "$@"', "kolora"]
    assert _all("image", "CMD") == ['["--help"]']


def test_build_sh_labels_images_from_the_stage_table() -> None:
    table = {row[0]: row for row in _build_sh_images()}
    assert sorted(table) == IMAGE_NAMES
    for image, (_, accelerator, *stages) in table.items():
        assert stages == [s.name for s in STAGES.values() if s.image == image], image
        assert accelerator == ("gpu" if any(STAGES[s].gpu for s in stages) else "cpu"), image
    build = (IMAGES / "build.sh").read_text(encoding="utf-8")
    for label in ("version", "revision", "source"):
        assert f'--label "org.opencontainers.image.{label}=' in build, label
    assert '--label "dev.kolora.stages=$(image_stages "$image")"' in build and '"dev.kolora.accelerator=$accelerator"' in build
    assert '--target image --build-arg "IMAGE=$image"' in build and "-f images/Dockerfile" in build


def test_every_pip_install_is_a_pyproject_extra_under_the_lock() -> None:
    """No hand-kept package list: each dependency step installs one extra's requirements file, pinned by the lock."""
    installed = []
    for stage in [s for s in BUILD if s]:
        for run in _all(stage, "RUN"):
            for command in re.split(r"&&|;", run):
                if not command.strip().startswith("pip install"):
                    continue
                words = shlex.split(command)
                assert words[2:4] == ["-c", "/opt/kolora/constraints.txt"], f"{stage}: pip install without the lock"
                extra = re.fullmatch(r"/opt/kolora/requirements/(.+)\.txt", words[-1])[1]
                assert words[-2] == "-r" and extra == ("${IMAGE}" if stage == "image" else stage), f"{stage}: {command}"
                installed.append(extra)
    assert installed == ["torch", "diffusion", "${IMAGE}"]
    for extra in ("torch", "diffusion"):
        assert f"--from=requirements /requirements/{extra}.txt /opt/kolora/requirements/" in _all(extra, "COPY")
    assert "--from=requirements /requirements/${IMAGE}.txt /opt/kolora/requirements/" in _all("image", "COPY")


def test_image_layers_share_the_stack() -> None:
    parents = {stage: _all(stage, "FROM")[0].split(" AS ")[0] for stage in BUILD if stage}
    assert parents == {"base": "${BASE_IMAGE}", "requirements": "base", "wheel": "base", "torch": "base",
                       "diffusion": "torch", "image": "diffusion"}  # fmt: skip


def test_extras_are_locked_and_dev_holds_them_all() -> None:
    locked = {
        canonicalize_name(line.split("==")[0])
        for line in (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if "==" in line and not line.startswith("#")
    }
    for extra in PYPROJECT["optional-dependencies"]:
        for requirement in extra_requirements(PYPROJECT, extra):
            name = canonicalize_name(Requirement(requirement).name)
            assert name != "kolora", f"{extra}: self-reference left in {requirement}"
            assert name in locked, f"extra {extra}: {requirement} is not pinned in constraints.txt (make lock)"
    dev = {canonicalize_name(Requirement(r).name) for r in extra_requirements(PYPROJECT, "dev")}
    for extra in [*IMAGE_NAMES, "cli"]:
        assert {canonicalize_name(Requirement(r).name) for r in extra_requirements(PYPROJECT, extra)} <= dev, extra


def test_requirements_expand_self_references_like_pip() -> None:
    project = {
        "name": "kolora",
        "dependencies": ["pydantic"],
        "optional-dependencies": {"a": ["x>=1", "kolora[b]"], "b": ["y", "kolora[a]"], "c": ["kolora[a,b]", "x>=1"]},
    }
    assert extra_requirements(project, "a") == ["pydantic", "x>=1", "y"]
    assert extra_requirements(project, "c") == ["pydantic", "x>=1", "y"]


def test_each_image_build_starts_every_command_the_workflow_gives_it(templates: dict[str, dict]) -> None:
    """kolora-install.py reads the committed kolora-pipeline.yaml; every container command of any render (GPU or not)
    is started in its image's build, the image's own stage first (its ENTRYPOINT)."""
    committed = yaml.safe_load((DIST / "kolora-pipeline.yaml").read_text(encoding="utf-8"))
    started = {image: install_commands(image, committed) for image in IMAGE_NAMES}
    for image in IMAGE_NAMES:
        assert started[image][0] == STAGES[image].command
        for stage in STAGES.values():
            assert (stage.command in started[image]) == (stage.image == image), f"{image}: {stage.name}"
    for file, template in templates.items():
        for name, t in _containers(template).items():
            image = _image_of(file, name, t["container"])
            assert image in IMAGE_NAMES, f"{file}: template {name} runs kolora-{image}, which is no image"
            if name in STAGES:
                assert image == STAGES[name].image and t["container"]["command"] == STAGES[name].command, f"{file}: {name}"
            assert t["container"]["command"] in started[image], f"{file}: the {image} build never starts {name}'s command"
    assert ["python", "-m", "kolora_core.cli", "publish"] in started["evaluate"], f"the {PROMOTE} step's command"
    with pytest.raises(SystemExit, match="not an image"):
        install_commands("publish", committed)
    run = _all("image", "RUN")[-1]
    assert run == 'python /opt/kolora/kolora-install.py "$IMAGE" /tmp/wheels /opt/kolora/kolora-pipeline.yaml'
    assert "images/kolora-install.py workflows/dist/kolora-pipeline.yaml /opt/kolora/" in _all("image", "COPY")


def test_python_on_path_is_the_venv() -> None:
    assert _env()["PATH"].startswith("/opt/venv/bin:")
    assert any(r.startswith("python3 -m venv /opt/venv ") for r in _all("torch", "RUN"))


def test_paths_and_user_match_the_workflow(templates: dict[str, dict]) -> None:
    for file, template in templates.items():
        security = template["spec"]["securityContext"]
        assert security["runAsUser"] == RUN_UID and security["runAsGroup"] == RUN_UID, file
        for name, t in _containers(template).items():
            mounts = {m["mountPath"] for m in t["container"]["volumeMounts"]}
            assert CONTAINER_ROOT in mounts, f"{file}: {name} does not mount {CONTAINER_ROOT}"
    assert _all("base", "WORKDIR") == [CONTAINER_ROOT]
    base = " ".join(_all("base", "RUN"))
    assert f"useradd --uid {RUN_UID} --gid {RUN_UID}" in base and f"groupadd --gid {RUN_UID}" in base
    assert f"chown -R {RUN_UID}:{RUN_UID} {CONTAINER_ROOT}" in base
    assert _all("image", "USER") == [f"{RUN_UID}:{RUN_UID}"], "USER must be the workflow's runAsUser"


def test_runtime_environment() -> None:
    env = _env()
    assert env["PYTHONUNBUFFERED"] == "1" and env["HOME"] == "/home/kolora"
    for var in CACHE_VARS:  # caches on the volume: writable by the non-root user, never in the image
        assert env[var].startswith(f"{CONTAINER_ROOT}/cache"), f"{var}={env[var]}"


def test_base_image_and_build_args() -> None:
    assert _all(None, "ARG") == [f"BASE_IMAGE={DEFAULT_BASE}"]
    for stage in [s for s in BUILD if s]:
        if any(re.search(r"(?<![\w-])pip (install|wheel)", r) for r in _all(stage, "RUN")):
            assert "PIP_CERT=" in _all(stage, "ARG"), f"stage {stage} runs pip: ARG PIP_CERT="
    assert "TORCH_INDEX_URL=https://pypi.org/simple" in _all("torch", "ARG")
    assert "IMAGE" in _all("image", "ARG")
    keywords = [k for k, _ in BUILD["image"]]  # nothing after CMD but the title label: no layer depends on labels
    assert keywords[-2:] == ["CMD", "LABEL"] and _all("image", "LABEL") == ['org.opencontainers.image.title="kolora-${IMAGE}"']


def test_build_context_holds_what_the_dockerfile_copies() -> None:
    lines = [ln.strip() for ln in (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", ".dockerignore is an allowlist: everything out, then what the images need"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for stage in [s for s in BUILD if s]:
        for copy in _all(stage, "COPY"):
            words = copy.split()
            if any(w.startswith("--from=") for w in words):
                continue
            for source in [w for w in words if not w.startswith("--")][:-1]:
                assert source.rstrip("/") in allowed, f"{stage}: COPY {source} is excluded by .dockerignore"
                assert (REPO / source).exists(), f"{stage}: COPY {source} does not exist"


def test_scripts_are_executable() -> None:
    for script in ("build.sh", "smoke.sh", "standin-base.sh"):
        path = IMAGES / script
        assert path.is_file() and path.stat().st_mode & 0o111, f"images/{script} must be executable"
        assert ":latest" not in path.read_text(encoding="utf-8"), f"images/{script} uses a latest tag"


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_prints_its_help(stage: str) -> None:
    """What each image's build runs (`python -m jobs.<stage> --help`), in-process: a help text argparse cannot
    format (e.g. a bare `%` in a config field's description) fails every image build, so `make test` says so first."""
    from kolora_core.stage_cli import build_parser

    assert build_parser(STAGES[stage]).format_help().startswith(f"usage: python -m {STAGES[stage].module}")
