"""A small Dockerfile reader for the image tests: instructions per build stage, exec-form and ENV values."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    value: str  # continuation lines joined with single spaces
    text: str  # the instruction as written (continuations kept), to compare Dockerfiles byte for byte

    def exec_form(self) -> list[str]:
        """ENTRYPOINT/CMD in exec form (a JSON list); shell form is an error the tests report."""
        parsed = json.loads(self.value)
        if not isinstance(parsed, list) or not all(isinstance(p, str) for p in parsed):
            raise ValueError(f"{self.keyword} is not in exec form: {self.value}")
        return parsed

    def assignments(self) -> dict[str, str]:
        """ENV/LABEL/ARG `key=value` pairs (ARG without a default maps to '')."""
        pairs: dict[str, str] = {}
        for word in shlex.split(self.value):
            key, _, value = word.partition("=")
            pairs[key] = value
        return pairs


@dataclass
class BuildStage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            values.update(instruction.assignments())
        return values

    def args(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ARG"):
            values.update(instruction.assignments())
        return values


@dataclass
class Dockerfile:
    path: Path
    global_args: list[Instruction]
    stages: list[BuildStage]

    @property
    def final(self) -> BuildStage:
        return self.stages[-1]

    def stage(self, name: str) -> BuildStage:
        return next(s for s in self.stages if s.name == name)

    def inherited_env(self, stage: BuildStage) -> dict[str, str]:
        """ENV of a stage including what its `FROM <earlier stage>` chain set."""
        by_name = {s.name: s for s in self.stages if s.name}
        chain = [stage]
        while chain[-1].base in by_name:
            chain.append(by_name[chain[-1].base])
        env: dict[str, str] = {}
        for s in reversed(chain):
            env.update(s.env())
        return env


def _logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines; comment and blank lines dropped (also inside continuations)."""
    lines: list[str] = []
    current: list[str] = []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        current.append(raw.rstrip())
        if not stripped.endswith("\\"):
            lines.append("\n".join(current))
            current = []
    if current:
        lines.append("\n".join(current))
    return lines


def parse(path: Path) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[BuildStage] = []
    for text in _logical_lines(path.read_text(encoding="utf-8")):
        joined = " ".join(part.strip().removesuffix("\\").strip() for part in text.splitlines())
        keyword, _, value = joined.partition(" ")
        instruction = Instruction(keyword.upper(), value.strip(), text)
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(BuildStage(base=words[0], name=name))
        elif not stages:
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, global_args, stages)
