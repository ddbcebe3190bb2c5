"""The scorers artifact: downloaded by the real hub clients' wrapper (a hub on 127.0.0.1, ModelScope faked), or built
tiny; only the files that are needed; failures sorted into config errors (exit 2) and retryable ones (exit 75)."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from kolora_core.config import RunConfig, load_config
from kolora_core.errors import KoloraError, TransientError
from kolora_core.evaluation.scoring import load_aesthetic, load_scorers
from kolora_core.models.fetch import fetch_scorers
from kolora_core.models.random_scorers import write_random_aesthetic, write_random_chinese_clip
from kolora_core.models.scorers import ScorersDir, scorer_identity
from tests.models.fake_hub import FakeHub, modelscope_snapshot, point_hf_client_at, serve

AESTHETIC_REPO = "shunk031/aesthetics-predictor-v2-sac-logos-ava1-l14-linearMSE"
CLIP_REPO = "OFA-Sys/chinese-clip-vit-base-patch16"
# what the real repos carry beside the files kolora needs (names from their hub file lists)
AESTHETIC_EXTRA = ["pytorch_model.bin", "vocab.json", "merges.txt", "tokenizer.json", "modeling_v2.py", ".gitattributes"]
CLIP_EXTRA = ["pytorch_model.bin", "clip_cn_vit-b-16.pt", "festival.jpg", "README.md", ".gitattributes"]


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny scorers in their repos' layouts: the files a snapshot of each real repo holds."""
    root = tmp_path_factory.mktemp("published")
    return {"aesthetic": write_random_aesthetic(root / "aesthetic", 3), "clip": write_random_chinese_clip(root / "clip", 3)}


@pytest.fixture
def hub(published: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub()
    fake.add(AESTHETIC_REPO, published["aesthetic"], {name: b"not needed" for name in AESTHETIC_EXTRA})
    fake.add(CLIP_REPO, published["clip"], {name: b"not needed" for name in CLIP_EXTRA})
    with serve(fake) as endpoint:
        point_hf_client_at(endpoint, monkeypatch)
        yield fake


def _config(**evaluate: object) -> RunConfig:
    return load_config("full", overrides={f"evaluate.{k}": v for k, v in evaluate.items()})


def test_hub_download_takes_only_the_needed_files_and_evaluate_loads_them(
    hub: FakeHub, published: dict[str, Path], tmp_path: Path
) -> None:
    config = _config()
    scorers = fetch_scorers(config.evaluate, config.models, tmp_path / "scorers")
    assert sorted(hub.fetched) == sorted(
        [f"{AESTHETIC_REPO}/{name}" for name in ("config.json", "model.safetensors", "preprocessor_config.json")]
        + [f"{CLIP_REPO}/{p.name}" for p in published["clip"].iterdir()]
    )  # one weight file each (safetensors), no tokenizer of the predictor's CLIP text tower, no original .pt
    files = sorted(str(p.relative_to(scorers.root)) for p in scorers.root.rglob("*") if p.is_file())
    assert ".cache" not in " ".join(files)  # huggingface_hub's local_dir bookkeeping is not part of the artifact
    manifest = scorers.read_manifest(verify="sha256")
    assert manifest["kind"] == "hub" and sorted(manifest["files"]) == [f for f in files if f != "kolora_models.json"]
    assert manifest["sources"] == {
        "aesthetic": {"repo": f"hf://{AESTHETIC_REPO}", "revision": None},
        "clip": {"repo": f"hf://{CLIP_REPO}", "revision": None},
    }
    loaded = load_scorers(scorers.root, config.evaluate, "cpu")
    assert loaded.facts == {
        "identity": scorer_identity(scorers.root),
        "kind": "hub",
        "aesthetic": {"repo": f"hf://{AESTHETIC_REPO}", "revision": None},
        "clip": {"repo": f"hf://{CLIP_REPO}", "revision": None},
    }
    assert loaded.aesthetic is not None and loaded.aesthetic.name == f"hf://{AESTHETIC_REPO}@default"
    assert load_file(str(scorers.part("aesthetic") / "model.safetensors")).keys() >= {"layers.7.weight"}


def test_revision_is_passed_and_recorded(hub: FakeHub, tmp_path: Path) -> None:
    config = _config(aesthetic_revision="main", clip_repo=None)
    scorers = fetch_scorers(config.evaluate, config.models, tmp_path / "scorers")
    assert scorers.present() == ["aesthetic"]  # clip_repo null: no clip/ at all
    assert scorers.read_manifest()["sources"] == {
        "aesthetic": {"repo": f"hf://{AESTHETIC_REPO}", "revision": "main"},
        "clip": None,
    }
    loaded = load_scorers(scorers.root, config.evaluate, "cpu")
    assert loaded.clip is None and loaded.not_scored == {"clip": "evaluate.clip_repo is null: not scored"}


def test_pytorch_bin_is_the_fallback_when_a_repo_has_no_safetensors(
    published: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Read with weights_only (tensors, never code); it scores exactly as the safetensors copy does."""
    fake = FakeHub()
    fake.add(AESTHETIC_REPO, published["aesthetic"])
    files = fake.repos[AESTHETIC_REPO]
    state = load_file(str(published["aesthetic"] / "model.safetensors"))
    torch.save(state, tmp_path / "bin")
    files["pytorch_model.bin"] = (tmp_path / "bin").read_bytes()
    del files["model.safetensors"]
    config = _config(clip_repo=None)
    with serve(fake) as endpoint:
        point_hf_client_at(endpoint, monkeypatch)
        scorers = fetch_scorers(config.evaluate, config.models, tmp_path / "scorers")
    assert sorted(p.name for p in scorers.part("aesthetic").iterdir()) == [
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    ]
    from_bin = load_scorers(scorers.root, config.evaluate, "cpu").aesthetic

    images = [Image.new("RGB", (40, 40), (200, 40, 90)), Image.new("RGB", (40, 40), (10, 200, 90))]
    assert from_bin is not None and from_bin.score(images) == pytest.approx(load_aesthetic(published["aesthetic"]).score(images))


def test_hub_going_down_between_configs_and_weights_stays_retryable(
    published: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A repo without safetensors needs a second snapshot; the hub answers 503 to it. Not "the repo has no weights"."""
    fake = FakeHub()
    fake.add(AESTHETIC_REPO, published["aesthetic"])
    del fake.repos[AESTHETIC_REPO]["model.safetensors"]
    fake.api_calls_before_outage = 1
    config = _config(clip_repo=None)
    with serve(fake) as endpoint, pytest.raises(TransientError, match=r"pytorch_model.bin of hf://shunk031/.*LocalEntryNotFound"):
        point_hf_client_at(endpoint, monkeypatch)
        fetch_scorers(config.evaluate, config.models, tmp_path / "s")


def test_unknown_repo_and_revision_are_config_errors_naming_repo_and_files(hub: FakeHub, tmp_path: Path) -> None:
    config = _config(aesthetic_repo="hf://nobody/nothing")
    with pytest.raises(KoloraError) as caught:
        fetch_scorers(config.evaluate, config.models, tmp_path / "a")
    assert not isinstance(caught.value, TransientError) and caught.value.exit_code == 2
    message = str(caught.value)
    assert "config.json, preprocessor_config.json, model.safetensors of hf://nobody/nothing" in message
    assert "evaluate.aesthetic_repo" in message and "no such repo (or it is private: set HF_TOKEN)" in message
    assert "RepositoryNotFoundError" in message and "\n" not in message
    config = _config(clip_revision="v9")
    with pytest.raises(KoloraError, match=r"hf://OFA-Sys/chinese-clip-vit-base-patch16 \(revision v9, evaluate.clip_repo\)"):
        fetch_scorers(config.evaluate, config.models, tmp_path / "b")


def test_unreachable_hub_is_retryable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real client against a closed port: exit 75, which the workflow's retryStrategy retries (it skips 2)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    point_hf_client_at(f"http://127.0.0.1:{port}", monkeypatch)
    config = _config()
    with pytest.raises(TransientError, match=r"hf://shunk031/.* failed \(LocalEntryNotFoundError: .*\); check network") as caught:
        fetch_scorers(config.evaluate, config.models, tmp_path / "s")
    assert caught.value.exit_code == 75


def test_a_repo_without_weights_is_named(published: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = FakeHub()
    fake.add(CLIP_REPO, published["clip"])
    del fake.repos[CLIP_REPO]["model.safetensors"]
    config = _config(aesthetic_repo=None)
    with (
        serve(fake) as endpoint,
        pytest.raises(KoloraError, match=r"hf://OFA-Sys/.*evaluate.clip_repo\) has no model.safetensors or"),
    ):
        point_hf_client_at(endpoint, monkeypatch)
        fetch_scorers(config.evaluate, config.models, tmp_path / "s")


def test_a_head_that_does_not_fit_its_clip_fails_fetch_naming_repo_and_file(
    published: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong"
    write_random_aesthetic(wrong, 3)
    state = load_file(str(wrong / "model.safetensors"))
    state["layers.0.weight"] = torch.zeros(12, 768)  # LAION's real head on a CLIP that projects to 16
    save_file(state, str(wrong / "model.safetensors"))
    fake = FakeHub()
    fake.add(AESTHETIC_REPO, wrong)
    config = _config(clip_repo=None)
    with serve(fake) as endpoint:
        point_hf_client_at(endpoint, monkeypatch)
        with pytest.raises(KoloraError, match=rf"hf://{AESTHETIC_REPO}@default \(layers.0 in model.safetensors\) takes 768"):
            fetch_scorers(config.evaluate, config.models, tmp_path / "s")


@contextmanager
def _serve_changed(
    published: Path, repo: str, name: str, content: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The hub with `repo` publishing `published` but `name` holding `content`."""
    changed = tmp_path / "changed"
    shutil.copytree(published, changed)
    (changed / name).write_text(content, encoding="utf-8")
    fake = FakeHub()
    fake.add(repo, changed)
    with serve(fake) as endpoint:
        point_hf_client_at(endpoint, monkeypatch)
        yield


@pytest.mark.parametrize("model_type", ["siglip", None])
def test_a_clip_of_another_family_fails_fetch_naming_repo_file_and_field(
    published: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_type: str | None
) -> None:
    """evaluate.clip_repo at a SigLIP was downloaded and only refused by evaluate, after train and generate had run
    on GPUs; now fetch-models refuses it right after the download."""
    config = json.loads((published["clip"] / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in config.items() if k != "model_type"} | ({} if model_type is None else {"model_type": model_type})
    run = _config(aesthetic_repo=None)
    with _serve_changed(published["clip"], CLIP_REPO, "config.json", json.dumps(config), tmp_path, monkeypatch):
        out = tmp_path / "s"
        message = (
            f"CLIP model hf://{CLIP_REPO}@default: {out / 'clip' / 'config.json'} has model_type {model_type!r}, not a "
            "CLIP family kolora loads (chinese_clip, clip, altclip): point evaluate.clip_repo at a model of one of them "
            "and rerun fetch-models"
        )
        with pytest.raises(KoloraError, match=rf"^{re.escape(message)}$") as caught:
            fetch_scorers(run.evaluate, run.models, out)
    assert caught.value.exit_code == 2


def _hub_fix(repo: str, field: str) -> str:
    """How a refusal of a file the hub repo publishes ends: a rerun of fetch-models would download it again."""
    return f"the file is as hf://{repo}@default publishes it: point {field} at another repo or revision"


def test_an_aesthetic_config_that_is_not_a_json_object_fails_fetch_in_one_line(
    published: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """check_aesthetic handed `[]` to CLIPVisionConfig: a TypeError traceback out of fetch-models."""
    run = _config(clip_repo=None)
    with _serve_changed(published["aesthetic"], AESTHETIC_REPO, "config.json", "[]", tmp_path, monkeypatch):
        out = tmp_path / "s"
        message = f"aesthetic model hf://{AESTHETIC_REPO}@default: {out / 'aesthetic' / 'config.json'} is not a JSON object"
        fix = _hub_fix(AESTHETIC_REPO, "evaluate.aesthetic_repo")
        with pytest.raises(KoloraError, match=rf"^{re.escape(message)}: {re.escape(fix)}$"):
            fetch_scorers(run.evaluate, run.models, out)


_PUBLISHED_BROKEN = {  # case -> (part, file, the change the repo publishes or None for `[]`, the refusal before the hint)
    "aesthetic preprocessor not an object": ("aesthetic", "preprocessor_config.json", None, "{path} is not a JSON object"),
    "aesthetic preprocessor shadowing a method": (
        "aesthetic",
        "preprocessor_config.json",
        {"preprocess": 1},
        "{path}: 'preprocess' is not a setting but a method or property of CLIPImageProcessor, which transformers "
        "would replace with the file's value",
    ),
    "clip preprocessor shadowing a method": (
        "clip",
        "preprocessor_config.json",
        {"resize": 1},
        "{path}: 'resize' is not a setting but a method or property of ChineseCLIPImageProcessor, which transformers "
        "would replace with the file's value",
    ),
    "clip tokenizer reading another vocabulary": (
        "clip",
        "tokenizer_config.json",
        {"vocab_file": "/etc/passwd"},
        "{path}: vocab_file names '/etc/passwd', which the tokenizer would read instead of the folder's own file",
    ),
}


@pytest.mark.parametrize("case", list(_PUBLISHED_BROKEN))
def test_a_processor_file_the_repo_publishes_broken_fails_fetch_telling_to_change_the_repo(
    published: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: str
) -> None:
    """fetch-models checked the head and the CLIP family only, so a repo whose preprocessor_config.json or
    tokenizer_config.json evaluate refuses downloaded fine, train and generate spent GPU time, and evaluate refused
    it with "rerun fetch-models", which downloads the same file. Now fetch-models gives evaluate's line right after
    the download, ending in what helps: another repo or revision."""
    part, name, change, says = _PUBLISHED_BROKEN[case]
    repo, field = {"aesthetic": (AESTHETIC_REPO, "evaluate.aesthetic_repo"), "clip": (CLIP_REPO, "evaluate.clip_repo")}[part]
    content = "[]" if change is None else json.dumps(json.loads((published[part] / name).read_text(encoding="utf-8")) | change)
    run = _config(**{("clip_repo" if part == "aesthetic" else "aesthetic_repo"): None})
    out = tmp_path / "s"
    with _serve_changed(published[part], repo, name, content, tmp_path, monkeypatch):
        message = f"{says.format(path=out / part / name)}: {_hub_fix(repo, field)}"
        with pytest.raises(KoloraError, match=rf"^{re.escape(message)}$") as caught:
            fetch_scorers(run.evaluate, run.models, out)
    assert caught.value.exit_code == 2


def _republish(scorers: ScorersDir, name: str, change: dict[str, object]) -> Path:
    """`scorers` with `change` in the file `name` and a manifest hashing it: what a kolora that did not check the
    file at fetch time (or the repo itself, for a hub part) handed to evaluate, past the sha256 check."""
    path, manifest = scorers.root / name, scorers.read_manifest()
    path.write_text(json.dumps(json.loads(path.read_text(encoding="utf-8")) | change), encoding="utf-8")
    scorers.write_manifest(manifest["kind"], manifest["sources"])
    return path


def test_evaluate_tells_to_change_a_hub_repo_and_to_rerun_fetch_for_a_stand_in(hub: FakeHub, tmp_path: Path) -> None:
    """The same checks in evaluate: a hub part's file (its sha256 matched) is the repo's, so the line says to point
    the field elsewhere; a tiny stand-in is kolora's own, and evaluate's line for it is unchanged."""
    config = _config(aesthetic_repo=None)
    hub_scorers = fetch_scorers(config.evaluate, config.models, tmp_path / "hub")
    path = _republish(hub_scorers, "clip/preprocessor_config.json", {"resize": 1})
    shadow = f"{path}: 'resize' is not a setting but a method or property of ChineseCLIPImageProcessor, which "
    shadow += "transformers would replace with the file's value"
    with pytest.raises(KoloraError, match=rf"^{re.escape(shadow)}: {re.escape(_hub_fix(CLIP_REPO, 'evaluate.clip_repo'))}$"):
        load_scorers(hub_scorers.root, config.evaluate, "cpu")
    smoke = load_config("smoke", overrides={"evaluate.aesthetic_repo": None})
    tiny = fetch_scorers(smoke.evaluate, smoke.models, tmp_path / "tiny")
    path = _republish(tiny, "clip/preprocessor_config.json", {"resize": 1})
    with pytest.raises(KoloraError, match=rf"^{re.escape(str(path))}: 'resize' is not a setting.*: rerun fetch-models$"):
        load_scorers(tiny.root, smoke.evaluate, "cpu")


def test_modelscope_scheme(published: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list = []
    repos = {"AI-ModelScope/chinese-clip-vit-base-patch16": published["clip"]}
    monkeypatch.setattr(
        importlib.import_module("modelscope.hub.snapshot_download"), "snapshot_download", modelscope_snapshot(repos, calls)
    )
    mirror = "modelscope://AI-ModelScope/chinese-clip-vit-base-patch16"
    config = _config(aesthetic_repo=None, clip_repo=mirror, clip_revision="v1")
    scorers = fetch_scorers(config.evaluate, config.models, tmp_path / "s")
    assert [c[:2] for c in calls] == [("AI-ModelScope/chinese-clip-vit-base-patch16", "v1")]  # safetensors found: one call
    assert not (scorers.part("clip") / "._____temp").exists()
    loaded = load_scorers(scorers.root, config.evaluate, "cpu")
    assert loaded.facts["clip"] == {"repo": mirror, "revision": "v1"}
    with pytest.raises(KoloraError, match=r"modelscope://AI-ModelScope/missing .*no such repo or revision") as caught:
        missing = _config(aesthetic_repo=None, clip_repo="modelscope://AI-ModelScope/missing")
        fetch_scorers(missing.evaluate, missing.models, tmp_path / "m")
    assert caught.value.exit_code == 2


def test_modelscope_network_failure_is_retryable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from modelscope.hub.errors import NetworkError

    def offline(*args: object, **kwargs: object) -> str:
        raise NetworkError("Unable to connect to www.modelscope.cn")

    monkeypatch.setattr(importlib.import_module("modelscope.hub.snapshot_download"), "snapshot_download", offline)
    config = _config(aesthetic_repo=None, clip_repo="modelscope://AI-ModelScope/chinese-clip-vit-base-patch16")
    with pytest.raises(TransientError, match=r"from ModelScope failed \(NetworkError"):
        fetch_scorers(config.evaluate, config.models, tmp_path / "s")


def test_tiny_scorers_follow_the_config(tmp_path: Path) -> None:
    smoke = load_config("smoke", overrides={"evaluate.aesthetic_repo": None})
    scorers = fetch_scorers(smoke.evaluate, smoke.models, tmp_path / "s")
    manifest = scorers.read_manifest()
    assert scorers.present() == ["clip"] and manifest["kind"] == "tiny" and manifest["sources"]["aesthetic"] is None
    assert manifest["sources"]["clip"]["stands_in_for"] == f"hf://{CLIP_REPO}"
    again = fetch_scorers(smoke.evaluate, smoke.models, tmp_path / "again")
    assert scorer_identity(again.root) == scorer_identity(scorers.root)  # same seed, same bytes, same identity


def test_evaluate_refuses_scorers_that_are_not_what_the_config_names(hub: FakeHub, tmp_path: Path) -> None:
    config = _config(clip_repo=None)
    scorers = fetch_scorers(config.evaluate, config.models, tmp_path / "s")
    other = _config(aesthetic_repo="hf://shunk031/aesthetics-predictor-v2-ava-logos-l14-linearMSE", clip_repo=None)
    with pytest.raises(KoloraError, match=r"evaluate.aesthetic_repo is hf://shunk031/.*-ava-logos-.* holds hf://shunk031/.*sac"):
        load_scorers(scorers.root, other.evaluate, "cpu")
    with pytest.raises(KoloraError, match=r"evaluate.clip_repo names hf://OFA-Sys/.* holds no clip model: rerun fetch-models"):
        load_scorers(scorers.root, _config().evaluate, "cpu")
    weights = scorers.part("aesthetic") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only the sha256 check sees it
    weights.write_bytes(bytes(data))
    with pytest.raises(KoloraError, match=r"model.safetensors does not match its sha256"):
        load_scorers(scorers.root, config.evaluate, "cpu")


def test_manifest_format_is_the_base_models_one(tmp_path: Path, tiny_models: Path) -> None:
    smoke = load_config("smoke")
    scorers = fetch_scorers(smoke.evaluate, smoke.models, tmp_path / "s")
    base = json.loads((tiny_models / "kolora_models.json").read_text())
    ours = json.loads(scorers.manifest_path.read_text())
    assert ours.keys() == base.keys() == {"kind", "sources", "files"}
    assert all(entry.keys() == {"size", "sha256"} for entry in [*ours["files"].values(), *base["files"].values()])
    assert ScorersDir(scorers.root).fingerprint() == scorer_identity(scorers.root)
