"""`python -m batchlog ...` is the `batchlog` command."""

from batchlog.cli import app

app()
