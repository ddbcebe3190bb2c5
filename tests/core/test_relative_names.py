"""The one rule for a name that must stay inside its root, by its text (`kolora_core.relative_names`)."""

from __future__ import annotations

import pytest

from kolora_core.relative_names import is_portable_name, is_relative_name

# name, is_relative_name, is_portable_name
TABLE = [
    ("a", True, True),
    ("a/b/c.png", True, True),
    ("shard-0/_SUCCESS", True, True),
    (".hidden", True, True),  # a dot file is a name, not '.'
    ("a..b", True, True),
    ("...", True, True),
    ("二次元/图.png", True, True),  # unicode names are names
    ("café/ﬁle", True, True),  # not normalised: the text is the name
    ("a b", True, True),
    ("a\\b", True, False),  # one file on POSIX; a folder and a file where '\' separates
    ("..\\x", True, False),
    ("", False, False),
    ("/", False, False),
    ("/etc/passwd", False, False),  # absolute: an empty first part
    ("..", False, False),
    ("../x", False, False),
    ("a/../b", False, False),
    ("a/..", False, False),
    (".", False, False),
    ("./a", False, False),  # pathlib reads it as 'a'
    ("a/./b", False, False),  # pathlib reads it as 'a/b'
    ("a//b", False, False),  # a legal S3 key, but the same file as 'a/b' once on disk
    ("a/", False, False),  # trailing slash: pathlib reads it as 'a'
    ("//a", False, False),
    ("a\0b", False, False),  # no file system takes a NUL; Python raises ValueError
]


@pytest.mark.parametrize(("name", "relative", "portable"), TABLE)
def test_the_table(name: str, relative: bool, portable: bool) -> None:
    assert is_relative_name(name) is relative
    assert is_portable_name(name) is portable
