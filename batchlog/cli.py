"""The `batchlog` command line."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from batches.settings import Settings

app = typer.Typer(
    help="batchlog: OpenAI-compatible batches on an event-sourced actor system.",
    no_args_is_help=True,
)


@app.callback()
def main() -> None:
    """batchlog: OpenAI-compatible batches on an event-sourced actor system."""


def _settings(**overrides: Any) -> Settings:
    """Flags given on the command line win over BATCHLOG_* variables and defaults."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address [env BATCHLOG_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [env BATCHLOG_PORT].")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where the event log and files live [env BATCHLOG_DATA_DIR]."),
    ] = None,
    upstream: Annotated[
        str | None,
        typer.Option(
            help="OpenAI-compatible base URL, e.g. http://host:8000/v1 [env BATCHLOG_UPSTREAM]. "
            "Without it the embedded local models serve."
        ),
    ] = None,
    upstream_api_key: Annotated[
        str | None,
        typer.Option(help="Bearer key for the upstream [env BATCHLOG_UPSTREAM_API_KEY]."),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="Ray to join: 'auto' or an address [env BATCHLOG_RAY_ADDRESS]. "
            "Default: start a local Ray on 127.0.0.1."
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="PostgreSQL for the event log and the files, so any node can run any "
            "part: postgresql://user@host/db [env BATCHLOG_DATABASE_URL]. Default: data dir."
        ),
    ] = None,
    facade_only: Annotated[
        bool | None,
        typer.Option(
            "--facade-only",
            help="Serve the API only, attached to the coordinator of a deployment already "
            "running on the Ray cluster at --ray-address; with --database-url, on any "
            "node [env BATCHLOG_FACADE_ONLY].",
        ),
    ] = None,
) -> None:
    """Run the service: the REST API, the coordinator and the batch actors."""
    from batches import rayauth

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = _settings(
        host=host,
        port=port,
        data_dir=data_dir,
        upstream=upstream,
        upstream_api_key=upstream_api_key,
        ray_address=ray_address,
        database_url=database_url,
        facade_only=facade_only,
    )
    try:
        rayauth.prepare(settings)  # before ray is imported: Ray reads RAY_AUTH_MODE then
    except rayauth.RayAuthRefused as exc:
        raise SystemExit(str(exc)) from exc
    from batchlog.serve import serve as run

    typer.echo(
        f"batchlog serving on http://{settings.host}:{settings.port}/v1 (data: {settings.data_dir})"
    )
    run(settings)


@app.command()
def demo(
    data_dir: Annotated[
        Path,
        typer.Option(help="Where the demo's event log and files go.", envvar="BATCHLOG_DATA_DIR"),
    ] = Path("./batchlog-data"),
    port: Annotated[
        int | None, typer.Option(help="Port for the demo server (default: a free one).")
    ] = None,
) -> None:
    """Run a sample chat + embeddings batch on the embedded models through the openai SDK."""
    from batches.demo import run_demo

    code = run_demo(data_dir, port)
    if code:
        raise typer.Exit(code)


from batches.analytics_cli import analytics_app  # noqa: E402 - sql, history, stats

app.add_typer(analytics_app)

if __name__ == "__main__":
    app()
