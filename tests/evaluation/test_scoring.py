"""The scorers load from model directories in the published layouts and compute what the reference models compute."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from kolora_core.errors import KoloraError
from kolora_core.evaluation.scoring import load_aesthetic, load_clip
from kolora_core.models.scorers import AESTHETIC, CLIP, CLIP_FAMILIES, check_aesthetic, clip_families
from tests.evaluation.conftest import head_weights, shard_weights, write_aesthetic_dir
from tests.models.broken_index import BROKEN, break_index, misplace_tensor


def _images() -> list[Image.Image]:
    noise = np.random.default_rng(0).integers(0, 256, (48, 40, 3), dtype=np.uint8)
    return [Image.new("RGB", (48, 40), (200, 40, 90)), Image.fromarray(noise)]


def _reference_aesthetic(directory: Path, images: list[Image.Image], relu: bool = False) -> torch.Tensor:
    """AestheticsPredictorV2Linear's forward, written out: normalised image_embeds through the layers."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    vision = CLIPVisionModelWithProjection.from_pretrained(str(directory)).eval()
    pixels = CLIPImageProcessor.from_pretrained(str(directory))(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        x = vision(pixel_values=pixels).image_embeds
        x = x / x.norm(dim=-1, keepdim=True)
        weights = head_weights(relu=relu)
        indices = sorted({int(k.split(".")[1]) for k in weights})
        for position, index in enumerate(indices):
            x = x @ weights[f"layers.{index}.weight"].T + weights[f"layers.{index}.bias"]
            if relu and position < len(indices) - 1:
                x = x.relu()
    return x.squeeze(-1)


def _family_classes(model_type: str) -> tuple[type, ...]:
    """What a CLIP family must load as: model, processor, image processor, tokenizer (docs/evaluation.md's table)."""
    import transformers as t

    return {
        "chinese_clip": (t.ChineseCLIPModel, t.ChineseCLIPProcessor, t.ChineseCLIPImageProcessor, t.BertTokenizerFast),
        "clip": (t.CLIPModel, t.CLIPProcessor, t.CLIPImageProcessor, t.CLIPTokenizerFast),
        "altclip": (t.AltCLIPModel, t.AltCLIPProcessor, t.CLIPImageProcessor, t.XLMRobertaTokenizerFast),
    }[model_type]


def _classes(scorer: Any) -> tuple[type, ...]:
    return tuple(type(p) for p in (scorer.model, scorer.processor, scorer.processor.image_processor, scorer.processor.tokenizer))


def test_predictor_snapshot_scores_like_the_reference(aesthetic_dir: Path) -> None:
    scorer = load_aesthetic(aesthetic_dir)
    assert [type(m).__name__ for m in scorer.head] == ["Linear"] * 5  # V2 "Linear": no activations
    scores = scorer.score(_images())
    torch.testing.assert_close(torch.tensor(scores), _reference_aesthetic(aesthetic_dir, _images()), atol=1e-5, rtol=1e-5)
    assert scores[0] != scores[1]


def test_clip_dir_plus_laion_head_file_gives_the_same_scores(aesthetic_dir: Path, tmp_path: Path) -> None:
    laion = write_aesthetic_dir(tmp_path / "laion", layout="laion")
    assert (laion / "sac+logos+ava1-l14-linearMSE.pth").exists()
    assert load_aesthetic(laion).score(_images()) == pytest.approx(load_aesthetic(aesthetic_dir).score(_images()), abs=1e-5)


def test_relu_variant_follows_its_architecture(tmp_path: Path) -> None:
    directory = write_aesthetic_dir(tmp_path / "relu", relu=True)
    scorer = load_aesthetic(directory)
    assert sum(isinstance(m, torch.nn.ReLU) for m in scorer.head) == 4
    expected = _reference_aesthetic(directory, _images(), relu=True)
    torch.testing.assert_close(torch.tensor(scorer.score(_images())), expected, atol=1e-5, rtol=1e-5)


def test_aesthetic_errors_name_the_problem(aesthetic_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(KoloraError, match=r"aesthetic model .*missing.* has no config.json: rerun fetch-models"):
        load_aesthetic(tmp_path / "missing")
    headless = write_aesthetic_dir(tmp_path / "headless", layout="laion")
    (headless / "sac+logos+ava1-l14-linearMSE.pth").unlink()
    with pytest.raises(KoloraError, match=r"no aesthetic head weights"):
        load_aesthetic(headless)
    wrong = write_aesthetic_dir(tmp_path / "wrong", layout="laion")
    torch.save(
        {"layers.0.weight": torch.zeros(1, 768), "layers.0.bias": torch.zeros(1)}, wrong / "sac+logos+ava1-l14-linearMSE.pth"
    )
    with pytest.raises(KoloraError, match=r"hf://x/y \(layers.0 in sac\+logos.*\.pth\) takes 768 inputs .* projects to 16"):
        load_aesthetic(wrong, source="hf://x/y")


def test_chinese_clip_similarity_reads_the_prompt_as_written(chinese_clip_dir: Path) -> None:
    from transformers import ChineseCLIPModel, ChineseCLIPProcessor

    scorer = load_clip(chinese_clip_dir)
    assert _classes(scorer) == _family_classes("chinese_clip")
    prompts = ["二次元,一个紫色短发小女孩", "黑色礼服,在台上唱歌"]
    tokens = scorer.processor.tokenizer(prompts[0])["input_ids"]
    assert scorer.processor.tokenizer.unk_token_id not in tokens and len(tokens) == 2 + len("二次元,一个紫色短发小女孩")
    got = scorer.similarity(_images(), prompts)
    model = ChineseCLIPModel.from_pretrained(str(chinese_clip_dir)).eval()
    processor = ChineseCLIPProcessor.from_pretrained(str(chinese_clip_dir))
    with torch.no_grad():  # Chinese-CLIP's definition: projected [CLS] state of the text tower vs projected image
        inputs = processor(text=prompts, images=_images(), return_tensors="pt", padding=True)
        image = model.get_image_features(pixel_values=inputs["pixel_values"])
        text_states = model.text_model(
            input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], token_type_ids=inputs["token_type_ids"]
        )[0]
        text = model.text_projection(text_states[:, 0, :])
    expected = torch.nn.functional.cosine_similarity(image, text)
    torch.testing.assert_close(torch.tensor(got), expected, atol=1e-5, rtol=1e-5)
    assert all(-1 <= s <= 1 for s in got)


@pytest.mark.parametrize("family", ["clip", "altclip"])
def test_the_other_clip_families_score_with_their_own_definition(request: pytest.FixtureRequest, family: str) -> None:
    """model_type clip (OpenAI's layout) and altclip (BAAI's) load with their family's classes, tokenise the prompts
    without [UNK], and score the cosine similarity of their models' image and text features."""
    directory = request.getfixturevalue({"clip": "openai_clip_dir", "altclip": "altclip_dir"}[family])
    scorer = load_clip(directory)
    classes = _family_classes(family)
    assert _classes(scorer) == classes
    prompts = ["二次元,一个紫色短发小女孩", "黑色礼服,在台上唱歌"]
    tokens = scorer.processor.tokenizer(prompts[0])["input_ids"]
    assert scorer.processor.tokenizer.unk_token_id not in tokens[1:-1]  # CLIP's [UNK] is its end token
    got = scorer.similarity(_images(), prompts)
    model = classes[0].from_pretrained(str(directory)).eval()
    inputs = classes[1].from_pretrained(str(directory))(text=prompts, images=_images(), return_tensors="pt", padding=True)
    with torch.no_grad():
        image = model.get_image_features(pixel_values=inputs["pixel_values"])
        text = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(torch.tensor(got), torch.nn.functional.cosine_similarity(image, text), atol=1e-5, rtol=1e-5)


def _with_json(source: Path, folder: Path, name: str, settings: dict[str, Any]) -> Path:
    """A copy of `source` whose JSON file `name` also holds `settings` (written where the folder has no such file)."""
    path = Path(shutil.copytree(source, folder)) / name
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    path.write_text(json.dumps(data | settings), encoding="utf-8")
    return folder


@pytest.mark.parametrize(
    "model_type",
    [
        "siglip",  # AutoModel built a SiglipModel and failed loading the weights into it: a RuntimeError traceback
        "bert",  # AutoModel loaded a BertModel, then it was refused as no CLIP
        None,  # no model_type: AutoModel's ValueError listing every type it knows
        ["chinese_clip"],  # a TypeError traceback (unhashable type: 'list')
    ],
    ids=["siglip", "bert", "missing", "a list"],
)
def test_a_clip_config_of_another_model_type_is_refused_before_loading(
    chinese_clip_dir: Path, tmp_path: Path, model_type: Any
) -> None:
    """config.json's model_type picked the transformers classes that loaded the folder; now only the families kolora
    knows load, and any other is one line: the file, the type, the families, what to do."""
    folder = Path(shutil.copytree(chinese_clip_dir, tmp_path / "clip"))
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in config.items() if k != "model_type"} | ({} if model_type is None else {"model_type": model_type})
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    message = (
        f"CLIP model hf://x/y@default: {folder / 'config.json'} has model_type {model_type!r}, not a CLIP family kolora loads "
        "(chinese_clip, clip, altclip): point evaluate.clip_repo at a model of one of them and rerun fetch-models"
    )
    with pytest.raises(KoloraError, match=rf"^{re.escape(message)}$") as caught:
        load_clip(folder, source="hf://x/y@default")
    assert caught.value.exit_code == 2


_CHOSEN_BY_THE_FOLDER = {  # case -> (model_type, JSON file, what it adds); "{outside}" is a directory outside the folder
    "image processor": (
        "chinese_clip",
        "preprocessor_config.json",
        {
            "processor_class": "OneFormerProcessor",
            "image_processor_type": "OneFormerImageProcessor",
            "class_info_file": "{outside}/class_info.json",
        },
    ),
    "tokenizer": ("clip", "tokenizer_config.json", {"tokenizer_class": "GPT2Tokenizer"}),
    "audio tokenizer": (
        "chinese_clip",
        "processor_config.json",
        {"audio_tokenizer": {"audio_tokenizer_class": "AutoConfig", "audio_tokenizer_name_or_path": "{outside}"}},
    ),
    "audio tokenizer file": (
        "chinese_clip",
        "audio_tokenizer_config.json",
        {"audio_tokenizer_class": "AutoConfig", "audio_tokenizer_name_or_path": "{outside}"},
    ),
}


@pytest.mark.parametrize("case", list(_CHOSEN_BY_THE_FOLDER))
def test_the_folders_json_does_not_pick_the_classes_that_load_it(
    chinese_clip_dir: Path, openai_clip_dir: Path, tmp_path: Path, case: str
) -> None:
    """Through AutoProcessor the folder's JSON picked the classes: preprocessor_config.json's processor_class made
    OneFormer's image processor load and read the class_info_file it names from outside the folder (then a TypeError
    traceback: OneFormer's CLIP tokenizer finds no vocab.json), a CLIP's tokenizer_config.json picked the tokenizer
    class (GPT2TokenizerFast, through CLIPProcessor's AutoTokenizer), and processor_config.json or
    audio_tokenizer_config.json named a model to load as an audio tokenizer (refused until now). The family's classes
    load it, and it tokenises and scores as the folder without those entries."""
    from transformers import AutoConfig

    family, name, settings = _CHOSEN_BY_THE_FOLDER[case]
    source = {"chinese_clip": chinese_clip_dir, "clip": openai_clip_dir}[family]
    outside = tmp_path / "outside"
    AutoConfig.for_model("clip").save_pretrained(outside)  # a model the audio tokenizer entries could load
    (outside / "class_info.json").write_text(json.dumps({"0": {"name": "cat", "isthing": 1}}), encoding="utf-8")
    settings = json.loads(json.dumps(settings).replace("{outside}", str(outside)))
    folder = _with_json(source, tmp_path / "clip", name, settings)
    expected, scorer = load_clip(source), load_clip(folder)
    assert _classes(scorer) == _family_classes(family)
    prompts = ["二次元,一个紫色短发小女孩", "A cat"]
    assert scorer.processor.tokenizer(prompts)["input_ids"] == expected.processor.tokenizer(prompts)["input_ids"]
    assert scorer.similarity(_images(), prompts) == pytest.approx(expected.similarity(_images(), prompts), abs=1e-6)


def test_a_head_not_768_wide_on_clip_vit_l14_names_the_repo_and_file(tmp_path: Path) -> None:
    """Checked from config.json and the head tensors alone (fetch-models runs it before any weights are loaded)."""
    from transformers import CLIPVisionConfig

    directory = tmp_path / "l14"
    vit_l14 = {"hidden_size": 1024, "patch_size": 14, "projection_dim": 768, "image_size": 224, "num_attention_heads": 16}
    CLIPVisionConfig(**vit_l14, num_hidden_layers=24, intermediate_size=4096).save_pretrained(directory)
    save_file({"layers.0.weight": torch.zeros(1, 512), "layers.0.bias": torch.zeros(1)}, str(directory / "model.safetensors"))
    with pytest.raises(KoloraError, match=r"hf://a/b \(layers.0 in model.safetensors\) takes 512 inputs .*ViT-L/14 takes 768"):
        check_aesthetic(directory, "hf://a/b")
    chain = {"layers.0.weight": torch.zeros(8, 768), "layers.1.weight": torch.zeros(1, 4)}
    save_file(chain, str(directory / "model.safetensors"))
    with pytest.raises(KoloraError, match=r"hf://a/b \(model.safetensors\): layers.1 takes 4 inputs, the layer before gives 8"):
        check_aesthetic(directory, "hf://a/b")


def _scores(part: str, directory: Path) -> list[float]:
    if part == AESTHETIC:
        return load_aesthetic(directory).score(_images())
    return load_clip(directory).similarity(_images(), ["二次元,一个紫色短发小女孩", "黑色礼服,在台上唱歌"])


@pytest.mark.parametrize("part", [AESTHETIC, CLIP])
def test_sharded_scorers_score_as_one_file_does(scorers_dir: Path, tmp_path: Path, part: str) -> None:
    sharded = Path(shutil.copytree(scorers_dir / part, tmp_path / part))
    shard_weights(sharded)
    assert _scores(part, sharded) == pytest.approx(_scores(part, scorers_dir / part), abs=1e-6)


@pytest.mark.parametrize("how", BROKEN)
@pytest.mark.parametrize("part", [AESTHETIC, CLIP])
def test_a_scorer_index_naming_a_file_outside_its_folder_is_refused_before_transformers(
    scorers_dir: Path, tmp_path: Path, part: str, how: str
) -> None:
    """The scorers come through the artifact store; transformers opened whatever their index named (a shard outside
    the folder loaded as the scorer's weights without a word, a missing one failed inside loading, `[]` was a
    TypeError traceback). Refused with the text encoder's message: exit 2, the index, the name, what to do."""
    folder = Path(shutil.copytree(scorers_dir / part, tmp_path / part))
    message = break_index(shard_weights(folder), how, tmp_path)
    with pytest.raises(KoloraError, match=message) as caught:
        _scores(part, folder)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("part", [AESTHETIC, CLIP])
def test_a_scorer_index_sending_a_tensor_to_a_shard_without_it_names_the_tensor(
    scorers_dir: Path, tmp_path: Path, part: str
) -> None:
    """Every name a file of the folder, but the shard named does not hold the tensor: transformers left it on the meta
    device, and moving the model was a `NotImplementedError: Cannot copy out of meta tensor` traceback."""
    folder = Path(shutil.copytree(scorers_dir / part, tmp_path / part))
    tensor = misplace_tensor(shard_weights(folder))
    reason = f"its shard index sends {tensor} to files that do not hold them; rerun fetch-models"
    expected = {
        AESTHETIC: f"aesthetic model {folder} ({folder}): no CLIP vision weights could be loaded ({reason})",
        CLIP: f"CLIP model {folder} ({folder}) could not be loaded: {reason}",
    }[part]
    with pytest.raises(KoloraError, match=rf"^{re.escape(expected)}$") as caught:
        _scores(part, folder)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("model_type", ["own", "chinese_clip"])
def test_a_clip_folder_with_code_of_its_own_never_runs_it(
    chinese_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model_type: str
) -> None:
    """config.json naming a model_type transformers lacks and an auto_map into a .py file of the folder: transformers
    asked "Do you wish to run the custom code? [y/N]" on stdin and, answered "y", imported the folder's code. Such a
    type is refused before transformers reads the folder; a family's own type loads with its classes, which read no
    auto_map."""
    auto_map = {"AutoConfig": "own.OwnConfig", "AutoModel": "own.OwnModel"}
    folder = _with_json(chinese_clip_dir, tmp_path / "clip", "config.json", {"model_type": model_type, "auto_map": auto_map})
    ran = tmp_path / "the folder's code ran"
    (folder / "own.py").write_text(f"import pathlib\npathlib.Path({str(ran)!r}).touch()\n", encoding="utf-8")
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or "y")
    if model_type == "own":
        with pytest.raises(KoloraError, match=r"has model_type 'own', not a CLIP family kolora loads") as caught:
            load_clip(folder)
        assert caught.value.exit_code == 2
    else:
        assert load_clip(folder).similarity(_images(), ["一个", "两个"]) == pytest.approx(
            load_clip(chinese_clip_dir).similarity(_images(), ["一个", "两个"]), abs=1e-6
        )
    assert not asked and not ran.exists()


def _clip_with_tokenizer_config(chinese_clip_dir: Path, folder: Path, settings: dict[str, Any], fast: bool) -> Path:
    """A copy of the tiny CLIP whose tokenizer_config.json also holds `settings`; `fast`: with a tokenizer.json."""
    _with_json(chinese_clip_dir, folder, "tokenizer_config.json", settings)
    if fast:
        load_clip(chinese_clip_dir).processor.tokenizer.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return folder


_ESCAPES = {  # key -> (value, with a tokenizer.json); "{outside}" is a directory outside the folder
    "vocab_file": ("{outside}/vocab.txt", False),
    "vocab_file (relative)": ("vocab.txt", False),  # read from the working directory, not the folder
    "tokenizer_file": ("{outside}/tokenizer.json", True),
}


@pytest.mark.parametrize("case", sorted(_ESCAPES))
def test_a_tokenizer_config_naming_its_vocabulary_elsewhere_is_refused(
    chinese_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """transformers took these keys of tokenizer_config.json over the folder's own files: the tokenizer read another
    vocabulary (a file outside the folder, or one of the working directory) without a word, and CLIP scored prompts
    tokenised by it. Refused before loading: exit 2, the file, the key and its value, what to do."""
    outside = tmp_path / "outside"
    shutil.copytree(chinese_clip_dir, outside)
    monkeypatch.chdir(outside)
    value, fast = _ESCAPES[case]
    key, value = case.split()[0], value.format(outside=outside)
    folder = _clip_with_tokenizer_config(chinese_clip_dir, tmp_path / "clip", {key: value}, fast)
    if fast:
        shutil.copyfile(folder / "tokenizer.json", outside / "tokenizer.json")
    config = folder / "tokenizer_config.json"
    message = f"{config}: {key} names {value!r}, which the tokenizer would read instead of the folder's own file"
    with pytest.raises(KoloraError, match=rf"^{re.escape(message)}: rerun fetch-models$") as caught:
        load_clip(folder)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("absolute", [False, True])
def test_versioned_fast_tokenizer_files_outside_the_folder_are_refused(
    chinese_clip_dir: Path, tmp_path: Path, absolute: bool
) -> None:
    """transformers joined each fast_tokenizer_files name to the folder and loaded the newest one that exists as
    the tokenizer, wherever it lies (there need be no tokenizer.json in the folder)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    load_clip(chinese_clip_dir).processor.tokenizer.backend_tokenizer.save(str(outside / "tokenizer.1.0.json"))
    names = [str(outside / "tokenizer.1.0.json") if absolute else "../outside/tokenizer.1.0.json"]
    folder = _clip_with_tokenizer_config(chinese_clip_dir, tmp_path / "clip", {"fast_tokenizer_files": names}, False)
    message = re.escape(f"{folder / 'tokenizer_config.json'}: fast_tokenizer_files names {names!r}, not files in {folder}")
    with pytest.raises(KoloraError, match=rf"^{message}: rerun fetch-models$") as caught:
        load_clip(folder)
    assert caught.value.exit_code == 2


def test_file_keys_transformers_ignores_still_load(chinese_clip_dir: Path, tmp_path: Path) -> None:
    """Real repos carry stale paths of the uploader's machine under keys transformers does not open (the tokenizer
    reads the folder's own files): they load and tokenise as the folder's files say."""
    stale = {
        "special_tokens_map_file": "/home/uploader/.cache/special_tokens_map.json",
        "added_tokens_file": "./added_tokens.json",
        "name_or_path": "/home/uploader/chinese-roberta-wwm-ext",
        "tokenizer_file": "/home/uploader/tokenizer.json",  # no tokenizer.json in the folder: transformers drops it
        "tokenizer_config_file": "/home/uploader/tokenizer_config.json",
    }
    folder = _clip_with_tokenizer_config(chinese_clip_dir, tmp_path / "clip", stale, False)
    prompts = ["二次元,一个紫色短发小女孩"]
    tokens = load_clip(folder).processor.tokenizer(prompts)["input_ids"]
    assert tokens == load_clip(chinese_clip_dir).processor.tokenizer(prompts)["input_ids"]


@pytest.mark.parametrize("name", ["config.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json"])
def test_a_clip_json_file_that_is_not_a_json_object_is_refused(chinese_clip_dir: Path, tmp_path: Path, name: str) -> None:
    """`[]` in any of them was a traceback from inside transformers (AttributeError, TypeError)."""
    folder = Path(shutil.copytree(chinese_clip_dir, tmp_path / "clip"))
    (folder / name).write_text("[]", encoding="utf-8")
    message = re.escape(f"{folder / name} is not a JSON object")
    with pytest.raises(KoloraError, match=rf"^{message}: rerun fetch-models$") as caught:
        load_clip(folder)
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("content", ["[]", '"x"', "{"])
def test_an_aesthetic_preprocessor_config_that_is_not_a_json_object_is_refused(
    aesthetic_dir: Path, tmp_path: Path, content: str
) -> None:
    """load_aesthetic handed it to CLIPImageProcessor unchecked: `[]` or `"x"` was an AttributeError traceback
    ('list' object has no attribute 'get'), `{` an OSError traceback; now the CLIP scorer's line."""
    folder = Path(shutil.copytree(aesthetic_dir, tmp_path / "aesthetic"))
    (folder / "preprocessor_config.json").write_text(content, encoding="utf-8")
    message = re.escape(f"{folder / 'preprocessor_config.json'} is not a JSON object")
    with pytest.raises(KoloraError, match=rf"^{message}: rerun fetch-models$") as caught:
        load_aesthetic(folder)
    assert caught.value.exit_code == 2


def test_evaluate_loads_exactly_the_families_fetch_models_lets_through() -> None:
    """fetch-models refuses a download by CLIP_FAMILIES and checks its processor files against clip_families' image
    processor, evaluate loads with clip_families' classes: the same names, each with docs/evaluation.md's classes."""
    families = clip_families()
    assert list(families) == list(CLIP_FAMILIES)
    for model_type, family in families.items():
        assert (family.model, family.processor, family.image_processor, family.tokenizer) == _family_classes(model_type)


@pytest.mark.parametrize("content", ["[]", '"x"', "1", "{"])
def test_an_aesthetic_config_that_is_not_a_json_object_is_one_line(aesthetic_dir: Path, tmp_path: Path, content: str) -> None:
    """CLIPVisionConfig.from_pretrained failed on `[]` with a TypeError traceback (broken JSON: an OSError one), in
    evaluate and in fetch-models' head check alike."""
    folder = Path(shutil.copytree(aesthetic_dir, tmp_path / "aesthetic"))
    (folder / "config.json").write_text(content, encoding="utf-8")
    message = re.escape(f"aesthetic model hf://x/y: {folder / 'config.json'} is not a JSON object: rerun fetch-models")
    with pytest.raises(KoloraError, match=rf"^{message}$") as caught:
        load_aesthetic(folder, source="hf://x/y")
    assert caught.value.exit_code == 2
    with pytest.raises(KoloraError, match=rf"^{message}$"):
        check_aesthetic(folder, "hf://x/y")


_IMAGE_PROCESSORS = {AESTHETIC: "CLIPImageProcessor", CLIP: "ChineseCLIPImageProcessor"}  # the class each loader builds


@pytest.mark.parametrize("part", [AESTHETIC, CLIP])
@pytest.mark.parametrize(
    ("key", "nested"),
    [
        ("preprocess", False),  # scoring: TypeError: 'int' object is not callable
        ("to_dict", False),  # the same TypeError while loading (transformers logs the processor's repr)
        ("is_fast", False),  # a property: AttributeError traceback ("has no setter")
        ("__class__", False),  # TypeError traceback: __class__ must be set to a class
        ("preprocess", True),  # in an `image_processor` entry, which transformers reads in place of the whole file
    ],
    ids=["preprocess", "to_dict", "is_fast", "__class__", "image_processor entry"],
)
def test_a_preprocessor_key_naming_a_method_of_the_image_processor_is_refused(
    scorers_dir: Path, tmp_path: Path, part: str, key: str, nested: bool
) -> None:
    """transformers sets every preprocessor_config.json key its image processor's __init__ does not take as an
    attribute (ImageProcessingMixin.__init__), so `"preprocess": 1` replaced the method: now one line before loading."""
    folder = Path(shutil.copytree(scorers_dir / part, tmp_path / part))
    path = folder / "preprocessor_config.json"
    settings = json.loads(path.read_text(encoding="utf-8")) | {key: 1}
    path.write_text(json.dumps({"image_processor": settings} if nested else settings), encoding="utf-8")
    message = re.escape(
        f"{path}: {key!r} is not a setting but a method or property of {_IMAGE_PROCESSORS[part]}, "
        "which transformers would replace with the file's value: rerun fetch-models"
    )
    with pytest.raises(KoloraError, match=rf"^{message}$") as caught:
        {AESTHETIC: load_aesthetic, CLIP: load_clip}[part](folder)
    assert caught.value.exit_code == 2


def test_a_clip_processor_config_read_as_image_processor_settings_is_checked_too(chinese_clip_dir: Path, tmp_path: Path) -> None:
    """Without preprocessor_config.json the image processor reads processor_config.json (its image_processor entry)."""
    folder = Path(shutil.copytree(chinese_clip_dir, tmp_path / "clip"))
    settings = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    (folder / "preprocessor_config.json").unlink()
    path = folder / "processor_config.json"
    path.write_text(json.dumps({"image_processor": settings | {"resize": 1}}), encoding="utf-8")
    with pytest.raises(KoloraError, match=rf"^{re.escape(str(path))}: 'resize' is not a setting but a method"):
        load_clip(folder)
    path.write_text(json.dumps({"image_processor": []}), encoding="utf-8")
    with pytest.raises(KoloraError, match=rf"^{re.escape(str(path))}: its image_processor entry is not a JSON object"):
        load_clip(folder)


_MEAN, _STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
_PUBLISHED_PREPROCESSOR_CONFIGS = {  # the real repos' files (as transformers' to_dict wrote them), sizes 224 -> 32
    "LAION predictor (shunk031/aesthetics-predictor-v2-*)": (
        AESTHETIC,
        {
            "crop_size": {"height": 32, "width": 32},
            "do_center_crop": True,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": _MEAN,
            "image_processor_type": "CLIPImageProcessor",
            "image_std": _STD,
            "processor_class": "CLIPProcessor",
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
            "size": {"shortest_edge": 32},
        },
    ),
    "openai/clip-vit-large-patch14 (feature extractor era)": (
        AESTHETIC,
        {
            "crop_size": 32,
            "do_center_crop": True,
            "do_normalize": True,
            "do_resize": True,
            "feature_extractor_type": "CLIPFeatureExtractor",
            "image_mean": _MEAN,
            "image_std": _STD,
            "resample": 3,
            "size": 32,
        },
    ),
    "OFA-Sys/chinese-clip-vit-base-patch16": (
        CLIP,
        {
            "crop_size": {"height": 32, "width": 32},
            "do_center_crop": False,
            "do_convert_rgb": True,
            "do_normalize": True,
            "do_rescale": True,
            "do_resize": True,
            "feature_extractor_type": "ChineseCLIPFeatureExtractor",
            "image_mean": _MEAN,
            "image_processor_type": "ChineseCLIPImageProcessor",
            "image_std": _STD,
            "processor_class": "ChineseCLIPProcessor",
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
            "size": {"height": 32, "width": 32},
        },
    ),
}


def _fast_processor_settings(part: str) -> dict[str, Any]:
    """What a repo saved with the fast image processor carries (data_format, default_to_square, device, ...)."""
    from transformers import ChineseCLIPImageProcessorFast, CLIPImageProcessorFast

    fast = {AESTHETIC: CLIPImageProcessorFast, CLIP: ChineseCLIPImageProcessorFast}[part]
    size = {AESTHETIC: {"shortest_edge": 32}, CLIP: {"height": 32, "width": 32}}[part]
    return json.loads(fast(size=size, crop_size={"height": 32, "width": 32}).to_json_string())


@pytest.mark.parametrize("case", [*_PUBLISHED_PREPROCESSOR_CONFIGS, "fast processor's (aesthetic)", "fast processor's (clip)"])
def test_published_preprocessor_configs_load_and_score_as_the_stand_ins_do(scorers_dir: Path, tmp_path: Path, case: str) -> None:
    """The keys real repos carry are settings, not members: they load and preprocess as the tiny scorers' own file."""
    if case.startswith("fast"):
        part = AESTHETIC if "aesthetic" in case else CLIP
        settings = _fast_processor_settings(part)
    else:
        part, settings = _PUBLISHED_PREPROCESSOR_CONFIGS[case]
    folder = Path(shutil.copytree(scorers_dir / part, tmp_path / part))
    (folder / "preprocessor_config.json").write_text(json.dumps(settings), encoding="utf-8")
    assert _scores(part, folder) == pytest.approx(_scores(part, scorers_dir / part), abs=1e-6)
