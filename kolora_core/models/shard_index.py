"""The files a folder that transformers' `from_pretrained` loads names in its own JSON: transformers opens them
wherever they are, so each is checked here, before transformers reads the folder.

The folders kolora loads this way (the base model's text encoder, the evaluation scorers) come through the artifact
store, and their manifest checks the files it lists, not the names those files give:

* a sharded checkpoint's `*.index.json` (`model.safetensors.index.json`, `pytorch_model.bin.index.json`) maps each
  tensor to the file that holds it, and transformers opens `<folder>/<name>` for every name its weight_map lists:
  `../x` or an absolute path loads a file outside the folder as the model's weights, without a word, and a missing
  one fails deep inside loading (`check_shard_indexes`);
* a tokenizer's JSON file (the CLIP scorer's) can make it read another vocabulary than the folder's own, any of
  the processor's JSON files that is not a JSON object fails inside transformers with a traceback, and a key of the
  image processor's settings that names one of its methods replaces that method (`check_processor_files`).
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kolora_core.errors import KoloraError
from kolora_core.relative_names import is_relative_name

REDO = "rerun fetch-models"  # what a refusal says to do by default: the folder's files are not as fetch-models wrote them


def _is_file(path: Path) -> bool:
    """`Path.is_file`, False where the name cannot be a file (`Path.is_file` raises on a name too long for the system)."""
    try:
        return path.is_file()
    except OSError:
        return False


def json_object(path: Path) -> dict[str, Any] | None:
    """`path`'s JSON object; None where it is unreadable, not UTF-8 or JSON, or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def check_shard_indexes(folder: Path, fix: str = REDO) -> None:
    """Refuse a shard index in `folder` that is not a JSON object with a weight_map, or whose weight_map names
    anything but a file inside `folder`: one line naming the index, the name and the tensor, ending in `fix` (what
    to do: rerunning fetch-models does not help where the hub repo itself publishes the file)."""
    for index in sorted(folder.glob("*.index.json")):
        weight_map = (json_object(index) or {}).get("weight_map")
        if not isinstance(weight_map, dict):
            raise KoloraError(f"{index} is not a shard index (a JSON object with a 'weight_map' mapping): {fix}")
        for tensor, shard in weight_map.items():
            if not (isinstance(shard, str) and is_relative_name(shard) and _is_file(folder / shard)):
                raise KoloraError(f"{index}: weight_map names {shard!r} for {tensor}, which is not a file in {folder}: {fix}")


@functools.cache
def _tokenizer_file_arguments() -> frozenset[str]:
    """The tokenizer_config.json keys that transformers opens as files: every tokenizer class's `vocab_files_names`.

    Why those: transformers finds each of them in the folder under its standard name, but a key in
    tokenizer_config.json takes precedence (`PreTrainedTokenizerBase._from_pretrained`), and a relative value is read
    from the working directory, not the folder; `save_pretrained` never writes them, so a folder it saved has none.
    Why every class: the check does not depend on which class the loader picks (the CLIP scorer's loader picks it by
    config.json's model_type, never by the folder's `tokenizer_class`), and the classes' own declarations follow
    transformers upgrades where a list written here would not (Marian's
    `source_spm` or LUKE's `entity_vocab_file` end in no common suffix). Not `tokenizer_config_file` (a few classes
    declare it: transformers reads tokenizer_config.json by its own name), nor the other `*_file` keys real repos
    carry with stale paths of the uploader's machine (`special_tokens_map_file`, `added_tokens_file`): transformers
    opens the folder's files for those and ignores the keys. A class whose backend is not installed is a dummy that
    raises ImportError: transformers cannot load it either.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES, tokenizer_class_from_name

    keys = set(PreTrainedTokenizerFast.vocab_files_names)
    for name in {name for names in TOKENIZER_MAPPING_NAMES.values() for name in names if name}:
        try:
            keys |= set(getattr(tokenizer_class_from_name(name), "vocab_files_names", None) or {})
        except ImportError:
            continue
    return frozenset(keys - {"tokenizer_config_file"})


def _check_tokenizer_config(folder: Path, path: Path, config: dict[str, Any], fix: str) -> None:
    """Refuse tokenizer_config.json keys that send the tokenizer to files other than the folder's own.

    `tokenizer_file` counts only where the folder holds a fast tokenizer file (tokenizer.json, or the versioned ones
    `fast_tokenizer_files` names): without one transformers drops the key, and real repos carry stale ones.
    `fast_tokenizer_files` names files that transformers joins to the folder (an absolute or `../` name escapes it).
    """
    fast_files = config.get("fast_tokenizer_files")
    if fast_files is not None and not (
        isinstance(fast_files, list) and all(isinstance(name, str) and is_relative_name(name) for name in fast_files)
    ):
        raise KoloraError(f"{path}: fast_tokenizer_files names {fast_files!r}, not files in {folder}: {fix}")
    followed = _tokenizer_file_arguments()
    if fast_files is None and not _is_file(folder / "tokenizer.json"):
        followed -= {"tokenizer_file"}
    for key in sorted(followed & config.keys()):
        if config[key] is not None:
            raise KoloraError(
                f"{path}: {key} names {config[key]!r}, which the tokenizer would read instead of the folder's own file: {fix}"
            )


_PROCESSOR_CONFIGS: dict[str, Callable[[Path, Path, dict[str, Any], str], None] | None] = {
    "tokenizer_config.json": _check_tokenizer_config,
    "preprocessor_config.json": None,  # the image processor's settings (`_check_image_processor_settings`)
    "processor_config.json": None,  # read by the image processor (its `image_processor` entry) where the one above is absent
}
# where `ImageProcessingMixin.get_image_processor_dict` reads the image processor's settings: the first file present
_IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


@functools.cache
def _image_processor_members(image_processor: type[Any]) -> frozenset[str]:
    """The names of `image_processor`'s methods, properties and other descriptors (`__class__`, `__dict__` ...).

    Why: `ImageProcessingMixin.__init__` (transformers 4.57 image_processing_base.py) sets every settings key its
    class's `__init__` does not take as an attribute of the instance, so `"preprocess": 1` replaced the method and
    scoring failed with "TypeError: 'int' object is not callable", and a property (`is_fast`), `__class__` or
    `__dict__` was a traceback while loading. Read from the class, so the methods a transformers upgrade adds are
    covered too; the settings real repos carry (`size`, `crop_size`, `image_mean`, `processor_class`,
    `image_processor_type`, `feature_extractor_type`, ...) are data, not members.
    """
    return frozenset(
        name
        for klass in image_processor.__mro__
        for name, member in vars(klass).items()
        if callable(member) or isinstance(member, classmethod) or inspect.isdatadescriptor(member)
    )


def _check_image_processor_settings(folder: Path, image_processor: type[Any], fix: str) -> None:
    """Refuse settings that would replace a member of `image_processor` (the class the loader builds), in the file and
    the entry transformers reads them from: a JSON object's `image_processor` entry where it has one, else the object."""
    path = next((folder / name for name in _IMAGE_PROCESSOR_FILES if _is_file(folder / name)), None)
    if path is None:
        return
    config = json_object(path) or {}
    settings = config.get("image_processor", config)
    if not isinstance(settings, dict):
        raise KoloraError(f"{path}: its image_processor entry is not a JSON object: {fix}")
    shadowed = sorted(_image_processor_members(image_processor) & settings.keys())
    if shadowed:
        raise KoloraError(
            f"{path}: {shadowed[0]!r} is not a setting but a method or property of {image_processor.__name__}, "
            f"which transformers would replace with the file's value: {fix}"
        )


def check_processor_files(folder: Path, image_processor: type[Any], fix: str = REDO) -> None:
    """Refuse the processor's JSON files in `folder` (tokenizer, image processor, processor) where one is
    not a JSON object (transformers fails on it with a traceback), names a file that transformers would open in
    place of the folder's own, or holds an image processor setting that names a method of `image_processor` (the
    class the loader builds from them): one line naming the file, the key and what to do (`fix`)."""
    for name, check in _PROCESSOR_CONFIGS.items():
        path = folder / name
        if not _is_file(path):
            continue
        config = json_object(path)
        if config is None:
            raise KoloraError(f"{path} is not a JSON object: {fix}")
        if check is not None:
            check(folder, path, config, fix)
    _check_image_processor_settings(folder, image_processor, fix)
