"""Model directories: tiny models round-trip exactly; damaged or foreign weights fail with the file's name."""

from __future__ import annotations

import importlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from kolora_core.config import load_config
from kolora_core.errors import KoloraError, TransientError
from kolora_core.models.fetch import KOLORS_PATTERNS, fetch_models
from kolora_core.models.layout import ModelDir
from kolora_core.models.loading import load_model_manager
from kolora_core.models.tiny import build_tiny_models
from tests.models.broken_index import BROKEN, break_index


def test_tiny_model_dir_loads_the_same_weights(tiny_models: Path) -> None:
    manager = load_model_manager(ModelDir(tiny_models), "cpu", torch.float32)
    for name, reference in build_tiny_models(seed=0).items():
        loaded = manager.fetch_model(name).state_dict()
        assert loaded.keys() == reference.state_dict().keys()
        assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items()), name


def test_tiny_unet_keeps_the_lora_target_names() -> None:
    unet = build_tiny_models(seed=0)["sdxl_unet"]
    names = {n.rsplit(".", 1)[-1] for n, m in unet.named_modules() if isinstance(m, torch.nn.Linear)}
    assert {"to_q", "to_k", "to_v", "to_out"} <= names


def test_truncated_weight_file_is_named(tiny_models: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(tiny_models, tmp_path / "m")
    unet = ModelDir(copy).unet
    unet.write_bytes(unet.read_bytes()[:1000])
    with pytest.raises(KoloraError, match=r"diffusion_pytorch_model\.safetensors has 1000 bytes, expected"):
        load_model_manager(ModelDir(copy), "cpu", torch.float32)


def test_wrong_shaped_weights_name_the_file(tiny_models: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_models, tmp_path / "m"))
    model_dir = ModelDir(copy)
    state = build_tiny_models(seed=0)["sdxl_unet"].state_dict()
    state["conv_in.weight"] = torch.zeros(8, 4, 3, 3)
    save_file({k: v.contiguous() for k, v in state.items()}, str(model_dir.unet))
    model_dir.write_manifest("tiny", {"architecture": "test"})
    with pytest.raises(KoloraError, match=r"weight file .*unet.*does not fit TinyKolorsUNet: .*conv_in\.weight"):
        load_model_manager(model_dir, "cpu", torch.float32)


def test_directory_without_manifest_says_run_fetch_models(tmp_path: Path) -> None:
    with pytest.raises(KoloraError, match="run the fetch-models stage"):
        ModelDir(tmp_path).read_manifest()


UNET = "kolors/unet/diffusion_pytorch_model.safetensors"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda m: "{not json", r"kolora_models\.json is not a JSON manifest \(JSONDecodeError\)"),
        (lambda m: [m], r"is not a kolora_models\.json manifest \(an object with 'files' and 'sources' mappings\)"),
        (lambda m: {k: v for k, v in m.items() if k != "files"}, r"an object with 'files' and 'sources' mappings"),
        (lambda m: m | {"files": m["files"] | {UNET: 5}}, rf"the entry of {UNET} is not {{size: integer, sha256: text}}"),
        (lambda m: m | {"files": m["files"] | {UNET: {"size": "9", "sha256": ""}}}, rf"the entry of {UNET} is not"),
        (lambda m: m | {"files": {k: v for k, v in m["files"].items() if k != UNET}}, rf"does not list {UNET}, which"),
        (
            lambda m: m | {"files": m["files"] | {"../outside": {"size": 4, "sha256": ""}}},
            r"names '\.\./outside', which is not a",
        ),
        (lambda m: m | {"files": m["files"] | {"/etc/hostname": {"size": 4, "sha256": ""}}}, r"names '/etc/hostname', which"),
        (lambda m: m | {"files": m["files"] | {f"./{UNET}": m["files"][UNET]}}, rf"names '\./{UNET}', which is not a"),
    ],
)
def test_a_manifest_not_as_fetch_models_writes_it_is_named(
    tiny_models: Path, tmp_path: Path, damage: Callable[[Any], Any], message: str
) -> None:
    """It comes through the artifact store: a damaged one is one line (it was a traceback: KeyError, TypeError,
    JSONDecodeError), and a name outside the directory is refused before anything there is stat'ed or hashed."""
    (tmp_path / "outside").write_text("four", encoding="utf-8")
    model_dir = ModelDir(Path(shutil.copytree(tiny_models, tmp_path / "m")))
    changed = damage(json.loads(model_dir.manifest_path.read_text(encoding="utf-8")))
    model_dir.manifest_path.write_text(changed if isinstance(changed, str) else json.dumps(changed), encoding="utf-8")
    with pytest.raises(KoloraError, match=message) as caught:
        model_dir.read_manifest(verify="sha256")
    assert str(caught.value).startswith(str(model_dir.manifest_path)) and str(caught.value).endswith("rerun fetch-models")


def _sharded_text_encoder(tiny_models: Path, copy: Path) -> tuple[ModelDir, Path]:
    """A copy of the tiny models whose text encoder is saved as real ChatGLM3 is: shards and a safetensors index."""
    model_dir = ModelDir(Path(shutil.copytree(tiny_models, copy)))
    shutil.rmtree(model_dir.text_encoder)
    build_tiny_models(seed=0)["kolors_text_encoder"].save_pretrained(
        model_dir.text_encoder, safe_serialization=True, max_shard_size="100KB"
    )
    index = model_dir.text_encoder / "model.safetensors.index.json"
    assert len(set(json.loads(index.read_text())["weight_map"].values())) > 1
    model_dir.write_manifest("tiny", json.loads(model_dir.manifest_path.read_text())["sources"])
    return model_dir, index


def test_a_sharded_text_encoder_loads(tiny_models: Path, tmp_path: Path) -> None:
    model_dir, _ = _sharded_text_encoder(tiny_models, tmp_path / "m")
    loaded = load_model_manager(model_dir, "cpu", torch.float32).fetch_model("kolors_text_encoder").state_dict()
    reference = build_tiny_models(seed=0)["kolors_text_encoder"].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.items())


@pytest.mark.parametrize("how", BROKEN)
def test_a_text_encoder_index_naming_a_file_outside_its_folder_is_refused_before_transformers(
    tiny_models: Path, tmp_path: Path, how: str
) -> None:
    """The index comes with the folder through the artifact store; transformers opened whatever its weight_map named
    (a shard outside the model directory loaded as the text encoder's weights; a missing one was its traceback)."""
    model_dir, index = _sharded_text_encoder(tiny_models, tmp_path / "m")
    message = break_index(index, how, tmp_path)
    model_dir.write_manifest("tiny", json.loads(model_dir.manifest_path.read_text())["sources"])
    with pytest.raises(KoloraError, match=message):
        load_model_manager(model_dir, "cpu", torch.float32)


def test_modelscope_download_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real code path calls modelscope's snapshot_download per repo into the layout; the hub is faked."""
    calls = []
    tiny = build_tiny_models(seed=1)

    def fake_snapshot_download(
        repo: str, revision: str | None = None, allow_patterns: list[str] | None = None, local_dir: str = ""
    ) -> str:
        calls.append((repo, revision, allow_patterns))
        root = Path(local_dir)
        if repo == "Kwai-Kolors/Kolors":
            tiny["kolors_text_encoder"].save_pretrained(root / "text_encoder", safe_serialization=True)
            (root / "unet").mkdir(parents=True)
            save_file(
                {k: v.contiguous() for k, v in tiny["sdxl_unet"].state_dict().items()},
                str(root / "unet/diffusion_pytorch_model.safetensors"),
            )
        else:
            root.mkdir(parents=True, exist_ok=True)
            save_file({"decoder.conv_in.weight": torch.zeros(1)}, str(root / "diffusion_pytorch_model.safetensors"))
        return local_dir

    monkeypatch.setattr(importlib.import_module("modelscope.hub.snapshot_download"), "snapshot_download", fake_snapshot_download)
    config = load_config("full", overrides={"models.revision": "v1.0"}).models
    model_dir = fetch_models(config, tmp_path / "m")
    assert calls[0] == ("Kwai-Kolors/Kolors", "v1.0", KOLORS_PATTERNS)
    assert calls[1][0] == "AI-ModelScope/sdxl-vae-fp16-fix"
    manifest = model_dir.read_manifest(verify="sha256")
    assert manifest["kind"] == "kolors" and "kolors/unet/diffusion_pytorch_model.safetensors" in manifest["files"]


def test_failed_download_is_one_line_and_retryable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: object, **kwargs: object) -> str:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(importlib.import_module("modelscope.hub.snapshot_download"), "snapshot_download", offline)
    with pytest.raises(TransientError, match=r"of modelscope://Kwai-Kolors/Kolors .* failed \(ConnectionError") as caught:
        fetch_models(load_config("full").models, tmp_path / "m")
    assert caught.value.exit_code == 75 and "\n" not in str(caught.value)


def test_missing_base_model_repo_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelscope.hub.errors import NotExistError

    def missing(*args: object, **kwargs: object) -> str:
        raise NotExistError("The model: Kwai-Kolors/Kolorz not exists", status_code=404)

    monkeypatch.setattr(importlib.import_module("modelscope.hub.snapshot_download"), "snapshot_download", missing)
    config = load_config("full", overrides={"models.kolors_repo": "Kwai-Kolors/Kolorz"}).models
    with pytest.raises(KoloraError, match=r"modelscope://Kwai-Kolors/Kolorz .*models.kolors_repo.*no such repo") as caught:
        fetch_models(config, tmp_path / "m")
    assert caught.value.exit_code == 2
