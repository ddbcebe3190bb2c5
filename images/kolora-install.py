"""Last step of every kolora image build (images/Dockerfile): `python kolora-install.py IMAGE WHEEL_DIR PIPELINE_YAML`.

Installs the kolora wheel of WHEEL_DIR without dependencies (the image's extra brought them in the step before) and
removes WHEEL_DIR; fails on any broken requirement (`pip check`, kolora's own included: the image holds its whole
extra); then starts with --help the image's own stage (its ENTRYPOINT, `jobs.<IMAGE>`) and every other command the
workflow (the committed kolora-pipeline.yaml) runs in kolora-IMAGE: the other stages sharing the image, the promote
step. So an image that cannot run one of its steps does not build, and no list of commands is kept by hand.
Needs the standard library and PyYAML (a kolora dependency, in every image).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

IMAGE_REF = re.compile(r"/kolora-(?P<image>[a-z0-9-]+):")


def commands(image: str, workflow: dict[str, Any]) -> list[list[str]]:
    """The image's own stage command, then each other container command of `workflow` that runs kolora-<image>."""
    from kolora_core.stages import STAGES

    if image not in STAGES or STAGES[image].image != image:
        raise SystemExit(f"kolora-install: IMAGE={image!r} is not an image of kolora_core/stages.py")
    found = [STAGES[image].command]
    for template in workflow["spec"]["templates"]:
        container = template.get("container") or {}
        ref = IMAGE_REF.search(container.get("image", ""))
        if ref and ref["image"] == image and container["command"] not in found:
            found.append(container["command"])
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    import yaml

    image, wheels, pipeline = argv[1], Path(argv[2]), Path(argv[3])
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", *map(str, sorted(wheels.glob("kolora-*.whl")))], check=True
    )
    shutil.rmtree(wheels)
    subprocess.run([sys.executable, "-m", "pip", "check"], check=True)
    for command in commands(image, yaml.safe_load(pipeline.read_text(encoding="utf-8"))):
        print(f"kolora-install: {' '.join(command)} --help", flush=True)
        subprocess.run([*command, "--help"], check=True, stdout=subprocess.DEVNULL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
