"""A 200 MB file through PgFileStore, both ways, in a fresh process: its peak RSS must
not grow by more than ~100 MB (the pieces are streamed, never gathered)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import psycopg

CHILD = textwrap.dedent(
    """
    import hashlib, json, resource, sys
    from batches.pgfilestore import PgFileStore

    url, schema, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = PgFileStore(url, schema=schema)
    line = (json.dumps({"custom_id": "x" * 40, "body": {"input": "y" * 400}}) + "\\n").encode()
    block = line * (65536 // len(line))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sha, written = hashlib.sha256(), 0
    with store.writer("big") as w:
        while written < total:
            w.write(block)
            sha.update(block)
            written += len(block)
    after_write = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    back, n = hashlib.sha256(), 0
    for chunk in store.chunks("big"):
        back.update(chunk)
        n += len(chunk)
    lines = sum(1 for _ in store.lines("big"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_kb": base, "after_write_kb": after_write, "peak_kb": peak,
                      "written": written, "read": n, "same": sha.hexdigest() == back.hexdigest(),
                      "lines": lines, "expected_lines": written // len(line)}))
    """
)


def test_200_mb_upload_and_download_in_bounded_memory(pg_server, tmp_path):
    schema = "files_memory"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, pg_server.url, schema, str(200 * 2**20)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        got = json.loads(out.strip().splitlines()[-1])
        assert got["same"] and got["read"] == got["written"] >= 200 * 2**20
        assert got["lines"] == got["expected_lines"]
        grew_mb = (got["peak_kb"] - got["base_kb"]) / 1024
        print(f"peak RSS grew by {grew_mb:.1f} MB", got)
        assert grew_mb < 100, got
    finally:
        with psycopg.connect(pg_server.url, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
