"""Names relative to a root (a file listed in a marker or manifest, an object key, a key prefix): whether one stays
inside its root, by its text alone.

Why one rule: such names come from untrusted places (a `_SUCCESS` or manifest downloaded from the bucket, a key
someone else wrote, a `-p` parameter), and `root / name` opens whatever they say. `pathlib` normalises before it
compares (`PurePosixPath("a//b").parts` and `PurePosixPath("a/./b").parts` are both `('a', 'b')`, and
`PurePosixPath("a/")` is `a`), so a check over `.parts` lets a name through that aliases another one: a marker
listing `a//b` matched no file kolora found (`a/b`), an S3 key `a//b` is a different object from `a/b` but the same
file once downloaded. So the rule works on the text as written, part by part.

Two rules, because a backslash is a plain character on POSIX and a separator elsewhere:

* `is_relative_name`: what names one path below the root on the machines kolora runs on (POSIX); for names that
  only ever become POSIX paths or S3 keys (a committed directory's files, a model manifest, object keys);
* `is_portable_name`: that, and no backslash: for names that also leave for tools where '\\' separates (the files
  of a published release, the images a story lists, the keys `kolora upload` writes).

File systems (symbolic links, what really lies under the root) are `kolora_core.data.confine`'s, not these.
"""

from __future__ import annotations

_NOT_A_PART = ("", ".", "..")


def is_relative_name(name: str) -> bool:
    """Whether `name` is '/'-separated parts, none empty (so no leading, trailing or doubled '/'), '.' or '..', and
    holds no NUL (no file system takes one): joined to a root it names one path below it, and no other name does."""
    return "\0" not in name and all(part not in _NOT_A_PART for part in name.split("/"))


def is_portable_name(name: str) -> bool:
    """`is_relative_name`, and no backslash: the same path on a tool or system that takes '\\' as a separator."""
    return "\\" not in name and is_relative_name(name)
