"""notebooks/analytics.ipynb runs top to bottom (nbclient, the venv's python3 kernel)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from eventlog import EventStore
from tests.analytics.synth import Writer, outcome, upload

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "analytics.ipynb"


def execute() -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=300,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()  # a cell error raises CellExecutionError
    return nb


def text_of(nb: nbformat.NotebookNode) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", ""))
    return "".join(out)


def images_of(nb: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in o.get("data", {}) for cell in nb.cells for o in cell.get("outputs", [])
    )


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


def test_notebook_runs_on_a_given_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    store = EventStore.open(tmp_path / "data" / "log", fsync=False)
    upload(store, "file-in")
    Writer(store, "b-ok").create().validate(3).outcomes(
        [outcome(1), outcome(2, latency_ms=40.0), outcome(3, ok=False, attempts=3)]
    ).finish()
    Writer(store, "b-embed").create(endpoint="/v1/embeddings").validate(
        2, model="m-embed"
    ).outcomes([outcome(1, model="m-embed")]).cancel()
    Writer(store, "b-bad").create().invalid()
    store.close()
    monkeypatch.setenv("BATCHLOG_DATA_DIR", str(tmp_path / "data"))
    nb = execute()
    text = text_of(nb)
    assert f"python: {sys.executable}" in text  # the venv's kernel
    assert "3 batches" in text and "b-embed" in text
    assert images_of(nb) == 5


def test_notebook_runs_on_the_postgres_log(
    monkeypatch: pytest.MonkeyPatch, pg_database: str
) -> None:
    """With BATCHLOG_DATABASE_URL (a deployment on a cluster) it reads the log there."""
    from eventlog.postgres import PostgresEventStore

    store = PostgresEventStore.open(pg_database)
    upload(store, "file-in")
    Writer(store, "b-pg").create().validate(2).outcomes(
        [outcome(1), outcome(2, ok=False, attempts=2)]
    ).finish()
    Writer(store, "b-pg-embed").create(endpoint="/v1/embeddings").validate(
        2, model="m-embed"
    ).outcomes([outcome(1, model="m-embed"), outcome(2, model="m-embed")]).finish()
    store.close()
    monkeypatch.delenv("BATCHLOG_DATA_DIR", raising=False)
    monkeypatch.setenv("BATCHLOG_DATABASE_URL", pg_database)
    nb = execute()
    text = text_of(nb)
    assert "data: PostgreSQL" in text
    assert "2 batches: {'completed': 2}" in text and "b-pg" in text
    assert images_of(nb) == 5


@pytest.mark.e2e
def test_notebook_makes_and_analyses_its_own_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHLOG_DATA_DIR", raising=False)
    nb = execute()
    text = text_of(nb)
    assert "4 batches: {'completed': 3, 'cancelled': 1}" in text
    assert "fake-chat" in text and "fake-embed" in text and "fake_500" in text
    assert images_of(nb) == 5
