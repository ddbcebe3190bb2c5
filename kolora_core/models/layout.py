"""The on-disk layout of a base-model directory, and the manifest every weight directory carries.

A model directory is what `fetch-models` writes and what train/generate read, locally or as an S3
artifact. It mirrors the ModelScope repos (Kwai-Kolors/Kolors and AI-ModelScope/sdxl-vae-fp16-fix)
so a directory downloaded by hand works too, plus `kolora_models.json`: the kind (real Kolors or
tiny), where each file came from, and its size and sha256. Loading checks sizes against it, so a
truncated download fails with the file's name instead of a shape error deep inside torch. The
evaluation scorers (`kolora_core.models.scorers`) are a second directory of the same kind (`ManifestDir`).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kolora_core.errors import KoloraError
from kolora_core.relative_names import is_relative_name

MANIFEST = "kolora_models.json"
TEXT_ENCODER_DIR = "kolors/text_encoder"
UNET_FILE = "kolors/unet/diffusion_pytorch_model.safetensors"
VAE_FILE = "sdxl-vae-fp16-fix/diffusion_pytorch_model.safetensors"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ManifestDir(ABC):
    """A directory of weight files whose manifest (kind, sources, files {size, sha256}) is written last.

    The manifest is the proof the directory is complete; base models (`ModelDir`) and the evaluation
    scorers (`kolora_core.models.scorers.ScorersDir`) share it, so both are checked, hashed and
    fingerprinted the same way. Subclasses say which files are weights and which must exist.
    """

    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @abstractmethod
    def weight_files(self) -> list[Path]:
        """Every file the manifest records."""

    @abstractmethod
    def required_files(self) -> list[Path]:
        """Files without which the directory cannot be complete (checked before the manifest is written)."""

    def write_manifest(self, kind: str, sources: dict[str, Any]) -> dict[str, Any]:
        """Record every weight file's size and hash; written last, so its presence means complete."""
        missing = [p for p in self.required_files() if not p.exists()]
        if missing:
            raise KoloraError(f"model directory {self.root} is missing {missing[0].relative_to(self.root)} after download")
        manifest = {
            "kind": kind,
            "sources": sources,
            "files": {
                str(p.relative_to(self.root)): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in self.weight_files()
            },
        }
        tmp = self.manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(self.manifest_path)
        return manifest

    def read_manifest(self, verify: Literal["size", "sha256"] = "size") -> dict[str, Any]:
        """The manifest, after checking that every listed file is present with the recorded size (or hash)."""
        if not self.manifest_path.exists():
            raise KoloraError(
                f"{self.manifest_path} not found: {self.root} is not a complete model directory; run the fetch-models stage"
            )
        manifest = self._parsed_manifest()
        for rel, expected in manifest["files"].items():
            path = self.root / rel
            if not path.exists():
                raise KoloraError(f"weight file {path} is missing; rerun fetch-models to download it again")
            size = path.stat().st_size
            if size != expected["size"]:
                raise KoloraError(
                    f"weight file {path} has {size} bytes, expected {expected['size']}: truncated or replaced; rerun fetch-models"
                )
            if verify == "sha256" and sha256_file(path) != expected["sha256"]:
                raise KoloraError(f"weight file {path} does not match its sha256 in {MANIFEST}; rerun fetch-models")
        return manifest

    def _parsed_manifest(self) -> dict[str, Any]:
        """The manifest, refused unless it has the form `write_manifest` gives it: it comes through the artifact store,
        so its names must stay inside the directory (none is stat'ed or hashed outside it) and cover every file the
        loaders open by name (the UNet's sha256 is read from it)."""
        path, redo = self.manifest_path, "rerun fetch-models"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            raise KoloraError(f"{path} is not a JSON manifest ({type(exc).__name__}): {redo}") from None
        if not isinstance(manifest, dict) or not all(isinstance(manifest.get(k), dict) for k in ("files", "sources")):
            raise KoloraError(f"{path} is not a {MANIFEST} manifest (an object with 'files' and 'sources' mappings): {redo}")
        for rel, entry in manifest["files"].items():
            if not is_relative_name(rel):
                raise KoloraError(f"{path} names {rel!r}, which is not a file inside {self.root}: {redo}")
            if not isinstance(entry, dict) or type(entry.get("size")) is not int or not isinstance(entry.get("sha256"), str):
                raise KoloraError(f"{path}: the entry of {rel} is not {{size: integer, sha256: text}}: {redo}")
        unlisted = [p.relative_to(self.root).as_posix() for p in self.required_files()]
        unlisted = [rel for rel in unlisted if rel not in manifest["files"]]
        if unlisted:
            raise KoloraError(f"{path} does not list {unlisted[0]}, which the model directory needs: {redo}")
        return manifest

    def fingerprint(self, verify: Literal["size", "sha256"] = "size") -> str:
        """One hash for the whole directory (over the per-file hashes): which weights, not where they came from."""
        files = self.read_manifest(verify)["files"]
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class ModelDir(ManifestDir):
    """A base-model directory; paths are derived, the manifest is the proof it is complete."""

    @property
    def text_encoder(self) -> Path:
        return self.root / TEXT_ENCODER_DIR

    @property
    def unet(self) -> Path:
        return self.root / UNET_FILE

    @property
    def vae(self) -> Path:
        return self.root / VAE_FILE

    def text_encoder_fingerprint(self) -> str:
        """sha256 over the manifest's hashes of the text encoder's files: which ChatGLM bytes, wherever they lie
        (what `prompt_embeddings` keys reusable prompt embeddings by)."""
        prefix = f"{TEXT_ENCODER_DIR}/"
        files = {rel: entry for rel, entry in self.read_manifest()["files"].items() if rel.startswith(prefix)}
        return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()

    def text_encoder_width(self) -> int:
        """ChatGLM's hidden size (its config.json): the width of every prompt embedding it makes, and the UNet takes."""
        config = self.text_encoder / "config.json"
        try:
            width = json.loads(config.read_text(encoding="utf-8")).get("hidden_size")
        except (OSError, ValueError, AttributeError):  # missing, not UTF-8 or JSON, not an object
            width = None
        if not isinstance(width, int) or width < 1:
            raise KoloraError(f"{config} gives no hidden_size (a whole number above 0): rerun fetch-models")
        return width

    def weight_files(self) -> list[Path]:
        files = [self.unet, self.vae]
        if self.text_encoder.is_dir():
            files += sorted(p for p in self.text_encoder.rglob("*") if p.is_file())
        return files

    def required_files(self) -> list[Path]:
        return [self.unet, self.vae, self.text_encoder / "config.json"]
