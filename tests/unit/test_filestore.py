"""The FileStore port's contract, run against every backend in `store` (real files here).

A second backend joins by adding a parameter to the `store` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batches.filestore import FileStore, FileTooLarge, FileWriter, LocalFileStore


@pytest.fixture(params=["local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileStore]:
    if request.param == "local":
        yield LocalFileStore(tmp_path / "data")


def test_backends_implement_the_port(store: FileStore) -> None:
    assert isinstance(store, FileStore)
    with store.writer("file-a") as w:
        assert isinstance(w, FileWriter)
        w.write(b"x\n")


def test_committed_file_reads_back_with_counts(store: FileStore) -> None:
    with store.writer("file-a") as w:
        w.write(b'{"a": 1}\n{"b"')
        w.write(b": 2}")
    assert (w.bytes, w.line_count) == (17, 2)
    assert store.exists("file-a") and store.size("file-a") == 17
    assert list(store.lines("file-a")) == [b'{"a": 1}\n', b'{"b": 2}']
    assert b"".join(store.chunks("file-a", size=4)) == b'{"a": 1}\n{"b": 2}'
    assert all(len(c) <= 4 for c in store.chunks("file-a", size=4))


def test_sha256_is_of_the_content(store: FileStore) -> None:
    import hashlib

    with store.writer("file-a") as w:
        w.write(b"hello\n")
    assert w.sha256 == hashlib.sha256(b"hello\n").hexdigest()


def test_an_error_inside_the_block_leaves_no_file(store: FileStore) -> None:
    with pytest.raises(RuntimeError), store.writer("file-a") as w:
        w.write(b"half")
        raise RuntimeError("client went away")
    assert not store.exists("file-a")


def test_too_large_is_refused_and_leaves_no_file(store: FileStore) -> None:
    with pytest.raises(FileTooLarge), store.writer("file-a", max_bytes=4) as w:
        w.write(b"12345")
    assert not store.exists("file-a")


def test_rewrite_replaces_and_delete_is_idempotent(store: FileStore) -> None:
    for content in (b"first\n", b"second\n"):
        with store.writer("file-a") as w:
            w.write(content)
    assert list(store.lines("file-a")) == [b"second\n"]
    store.delete("file-a")
    store.delete("file-a")
    assert not store.exists("file-a")


def test_local_location_is_relative_to_the_data_dir(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path)
    with store.writer("file-a") as w:
        w.write(b"x")
    assert (tmp_path / store.location("file-a")).read_bytes() == b"x"
    assert not list((tmp_path / "files").glob("*.tmp"))
