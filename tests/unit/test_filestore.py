"""The FileStore port's contract, run against every backend in `store` (real files here).

A second backend joins by adding a parameter to the `store` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batches.filestore import FileStore, FileTooLarge, FileWriter, LocalFileStore


@pytest.fixture(params=["local", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FileStore]:
    if request.param == "local":
        yield LocalFileStore(tmp_path / "data")
    else:
        import psycopg

        from batches.pgfilestore import PgFileStore

        url = request.getfixturevalue("pg_server").url
        schema = f"files_{tmp_path.name.lower().replace('-', '_')[-30:]}"
        pg = PgFileStore(url, schema=schema)
        yield pg
        pg.close()
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


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


@pytest.mark.parametrize("limit", [1, 3, 4, 5, 6, 9])
def test_long_lines_are_cut_at_the_limit_plus_one(store: FileStore, limit: int) -> None:
    content = b"abcd\n" + b"x" * 10 + b"\n" + b"ef\n" + b"y" * 7
    with store.writer("file-a") as w:
        w.write(content)
    import io

    expected = []  # the reference: LocalFileStore's readline() semantics
    fh = io.BytesIO(content)
    while line := fh.readline(limit + 1):
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := fh.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
        expected.append(line)
    assert list(store.lines("file-a", max_line_bytes=limit)) == expected


def test_pieces_cross_line_boundaries(store: FileStore) -> None:
    from batches.pgfilestore import PIECE

    line = b"z" * 1000 + b"\n"
    n = (3 * PIECE) // len(line) + 1  # a little over three stored pieces
    with store.writer("file-a") as w:
        for _ in range(n):
            w.write(line)
    assert store.size("file-a") == n * len(line)
    got = 0
    for x in store.lines("file-a"):
        assert x == line
        got += 1
    assert got == n
    assert sum(len(c) for c in store.chunks("file-a", size=PIECE // 3)) == n * len(line)


def test_local_location_is_relative_to_the_data_dir(tmp_path: Path) -> None:
    store = LocalFileStore(tmp_path)
    with store.writer("file-a") as w:
        w.write(b"x")
    assert (tmp_path / store.location("file-a")).read_bytes() == b"x"
    assert not list((tmp_path / "files").glob("*.tmp"))
