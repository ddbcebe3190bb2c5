"""generations.jsonl is read without the stage shell too (`kolora` tools, tests): the record checks stand on their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from kolora_core.errors import KoloraError
from kolora_core.inference.story import GENERATIONS, collect_generations
from tests.conftest import write_story_images


def test_a_symlinked_image_is_refused_without_the_commit_marker_checks(tmp_path: Path) -> None:
    images = write_story_images(tmp_path / "images")
    shard = images / "shard-0"
    Image.new("RGB", (64, 64)).save(tmp_path / "outside.png")
    (shard / "evil.png").symlink_to(tmp_path / "outside.png")
    lines = (shard / GENERATIONS).read_text().splitlines()
    first = json.loads(lines[0]) | {"file": "evil.png"}
    (shard / GENERATIONS).write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    escape = r"line 1 names the image 'evil\.png': a symlink to .*outside\.png outside the source root"
    with pytest.raises(KoloraError, match=escape):
        collect_generations(images)
    assert len(collect_generations(write_story_images(tmp_path / "clean"))) == 8
