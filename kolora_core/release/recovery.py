"""What a person does about a damaged champion: the commands that get the next run going, as they would type them.

Why the commands are spelled out: the champion step fails every run until latest.json changes, and the fix is a
command the user runs where they are (a shell on the cluster's store, or the `--runs-dir` of `kolora run`), not
in the pod that failed. The caller passes the store flags that reach the same store from that shell
(`kolora_core.cli.store_args.store_flags`); this module adds the rest: which model, which prefix, and which
version to roll back to where the store tells (the champion the damaged release itself replaced, or the only
other published version).
"""

from __future__ import annotations

import shlex
from typing import Any

from kolora_core.errors import name_some
from kolora_core.release.intact import INCOMPLETE, DamagedRelease, published_versions, release_base
from kolora_core.release.pointer import LATEST
from kolora_core.release.promote import DEFAULT_PREFIX
from kolora_core.storage.objects import Storage


def kolora_command(*words: str) -> str:
    """A command line to paste, in backquotes as kolora's messages quote commands: every word quoted as a POSIX shell
    needs it ('' for an empty --s3-endpoint), nothing of the sentence around it inside."""
    return f"`{shlex.join(['kolora', *words])}`"


def _replaced(release: dict[str, Any] | None) -> str | None:
    """The champion the damaged release was evaluated against (its gate's record), if it had one."""
    champion = ((release or {}).get("gate") or {}).get("champion") or {}
    return champion.get("version") if isinstance(champion, dict) and champion.get("status") == "found" else None


def rollback_target(storage: Storage, base: str, damaged: DamagedRelease) -> tuple[str | None, list[str]]:
    """(the version to advise, every other published version): the one the damaged release replaced, else the only
    other one, else None (the user picks from the list). Listed, not checked: the rollback itself checks."""
    others = [v for v in published_versions(storage, base) if v != damaged.version]
    replaced = _replaced(damaged.release)
    if replaced in others:
        return replaced, others
    return (others[0] if len(others) == 1 else None), others


def _where(prefix: str, store_flags: list[str]) -> list[str]:
    """The flags naming the store and (where it is not the default) the prefix."""
    return [*(["--prefix", prefix] if prefix != DEFAULT_PREFIX else []), *store_flags]


def reset_command(prefix: str, name: str, store_flags: list[str]) -> str:
    """`kolora champion --reset` for this model and store, to paste."""
    return kolora_command("champion", "--reset", "--name", name, *_where(prefix, store_flags))


def champion_advice(storage: Storage, prefix: str, name: str, damaged: DamagedRelease, store_flags: list[str]) -> str:
    """One line: what is damaged, why the run stops there, and the commands that fix it."""
    base = release_base(prefix, name)
    where = _where(prefix, store_flags)
    model = ["--name", name, *where]
    latest = f"{base}/{LATEST}"
    what = f"the champion {name} {damaged.version}" if damaged.version else f"the champion pointer {latest}"
    steps: list[str] = []
    target, others = rollback_target(storage, base, damaged)
    if others:
        pick = "" if target else f" (VERSION: one of {name_some(others, 5)}; the rollback checks every file first)"
        rollback = kolora_command("publish", "--rollback", target or "VERSION", *model)
        steps.append(f"to point {latest} back at an intact version: {rollback}{pick}")
    if damaged.version and damaged.problem == INCOMPLETE:
        complete = kolora_command("publish", "--release", "DIR", *where)
        steps.append(
            f"to complete {damaged.version} from the release folder DIR of the run that published it (locally "
            f"runs/<run-id>/publish/release): {complete}"
        )
    steps.append(f"to clear {latest}, so that the next run has no champion: {reset_command(prefix, name, store_flags)}")
    todo = "; or ".join(steps)
    return (
        f"{what} is damaged: {damaged}. A damaged champion is neither compared with nor promoted over "
        f"(published versions are never rewritten). {todo[0].upper()}{todo[1:]}"
    )
