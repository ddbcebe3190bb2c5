"""The conditional writes publishing relies on, with the same semantics on a directory and on a real S3 server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kolora_core.errors import KoloraError
from kolora_core.storage.objects import LocalStorage, PreconditionFailed, S3StoreStorage, Storage


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "bucket")
    return S3StoreStorage(request.getfixturevalue("store"))


def test_put_if_absent_creates_once(storage: Storage) -> None:
    etag = storage.put_if_absent("m/v1/release.json", b"one")
    assert storage.put_if_absent("m/v1/release.json", b"one") == etag  # the same bytes: a retry whose first try landed
    with pytest.raises(PreconditionFailed, match="already exists with other contents"):
        storage.put_if_absent("m/v1/release.json", b"two")
    assert storage.get_with_etag("m/v1/release.json") == (b"one", etag)
    assert storage.list("m/") == ["m/v1/release.json"]  # no temp or lock files listed


@pytest.mark.parametrize("key", ["m//v1/release.json", "m/./v1/release.json", "m/v1/", "../m", "/m", ""])
def test_a_key_that_is_no_plain_relative_key_is_refused_on_both(storage: Storage, key: str) -> None:
    """A directory wrote `m//v1/...` as `m/v1/...` (S3 keeps them apart): a release checked there was another on S3."""
    with pytest.raises(KoloraError, match=r"is not a (plain relative|valid object) key"):
        storage.put(key, b"x")
    with pytest.raises(KoloraError):
        storage.put_if_absent(key, b"x")
    assert storage.list("") == []


def test_put_if_match_is_a_compare_and_swap(storage: Storage) -> None:
    assert storage.get_with_etag("latest.json") is None
    with pytest.raises(PreconditionFailed):
        storage.put_if_match("latest.json", b"1", '"0123456789abcdef0123456789abcdef"')  # nothing there yet
    first = storage.put_if_absent("latest.json", b"1")
    second = storage.put_if_match("latest.json", b"2", first)
    with pytest.raises(PreconditionFailed, match="changed since it was read"):
        storage.put_if_match("latest.json", b"3", first)  # a stale ETag loses
    assert storage.get_with_etag("latest.json") == (b"2", second)


def test_concurrent_increments_lose_no_update(storage: Storage) -> None:
    storage.put_if_absent("counter", b"0")

    def bump() -> None:
        for _ in range(10):
            while True:
                data, etag = storage.get_with_etag("counter") or (b"", "")
                try:
                    storage.put_if_match("counter", str(int(data) + 1).encode(), etag)
                    break
                except PreconditionFailed:
                    continue

    threads = [threading.Thread(target=bump) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert storage.get("counter") == b"30"
