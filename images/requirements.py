"""One requirements file per pyproject extra: `python3 images/requirements.py pyproject.toml OUT_DIR`.

images/Dockerfile installs each image's extra from `OUT_DIR/<extra>.txt` (`pip install -c constraints.txt -r ...`)
before the kolora wheel exists, so its dependency layers change only when the dependencies do, not with the code
or the version. Each file holds the project's `dependencies` plus the extra's requirements, with the extra's
self-references (`kolora[diffusion]`) replaced by theirs: what `pip install kolora[<extra>]` would install. Standard
library only: it runs before anything is installed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def extra_requirements(project: dict, extra: str) -> list[str]:
    """The requirement strings `pip install <project>[extra]` installs, in order, without duplicates."""
    self_ref = re.compile(rf"{re.escape(project['name'])}\[([^\]]+)\]")
    out: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()

    def add(name: str) -> None:
        seen.add(name)
        for requirement in project["optional-dependencies"][name]:
            match = self_ref.fullmatch(requirement.strip())
            if match:
                for included in (e.strip() for e in match[1].split(",")):
                    if included not in seen:
                        add(included)
            elif requirement not in out:
                out.append(requirement)

    add(extra)
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    project = tomllib.loads(Path(argv[1]).read_text(encoding="utf-8"))["project"]
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    for extra in project["optional-dependencies"]:
        (out / f"{extra}.txt").write_text("\n".join(extra_requirements(project, extra)) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
