"""The `darkroom` command."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from service.config import Settings, get_settings

app = typer.Typer(help="Darkroom: images in bulk for other software.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
) -> None:
    """Run the HTTP API."""
    _check_config(get_settings())
    uvicorn.run("service.app:create_app", factory=True, host=host, port=port, log_level="warning")


@app.command()
def worker() -> None:
    """Run a worker process: image jobs, webhook deliveries and the reconciler."""
    from service.logging import configure_logging
    from service.worker import run_workers

    settings = get_settings()
    _check_config(settings)
    configure_logging(settings)
    asyncio.run(run_workers(settings))


def _check_config(settings: Settings) -> None:
    """A broken DARKROOM_CONFIG stops the process at once, saying where it is broken."""
    from service.providers.config import ConfigError, load_config

    try:
        load_config(settings.config)
    except ConfigError as exc:
        typer.echo(f"darkroom: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def migrate() -> None:
    """Apply the database migrations (Alembic upgrade head)."""
    from service.migrate import upgrade_to_head

    upgrade_to_head(get_settings().database_url)
    typer.echo("database is at the latest migration")


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who the key is for")],
    as_json: Annotated[bool, typer.Option("--json", help="Print {key, webhook_secret}")] = False,
) -> None:
    """Create an API key. The key and its webhook signing secret are shown once."""
    from service.dev_key import create_key_now

    settings = get_settings()
    created = asyncio.run(create_key_now(settings.database_url, name, pepper=settings.secret_key))
    if as_json:
        typer.echo(json.dumps(created))
    else:
        typer.echo(f"API key:        {created['key']}")
        typer.echo(f"webhook secret: {created['webhook_secret']}")
        typer.echo("Store both now: the key cannot be shown again.")


@app.command()
def submit(
    file: Annotated[Path, typer.Argument(help="A JSON batch, as POST /v1/batches takes")],
    wait: Annotated[bool, typer.Option(help="Show progress until the batch finishes")] = False,
    url: Annotated[str, typer.Option(envvar="DARKROOM_API_URL")] = "http://127.0.0.1:8000",
    key: Annotated[
        str | None, typer.Option(envvar="DARKROOM_API_KEY", help="Default: the dev key")
    ] = None,
) -> None:
    """Submit a batch (and with --wait, follow it to the end)."""
    from service.submit_cli import submit_file

    raise typer.Exit(submit_file(file, wait=wait, url=url, key=key, settings=get_settings()))


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write it")] = Path("openapi/openapi.json"),
) -> None:
    """Write the OpenAPI document the app serves."""
    from service.app import create_app

    document = create_app().openapi()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    typer.echo(f"wrote {output}")


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 2,
) -> None:
    """Development: find or start Postgres and Redis, migrate, make a dev key, run API + workers."""
    from sqlalchemy.engine import make_url

    from service.dev_key import ensure_dev_key
    from service.devenv import ensure_services
    from service.migrate import upgrade_to_head

    settings = get_settings()
    _check_config(settings)
    with ensure_services(
        database_url=os.environ.get("DARKROOM_DATABASE_URL"),
        redis_url=os.environ.get("DARKROOM_REDIS_URL"),
        probe_local_defaults=settings.local_defaults,
        data_dir=settings.data_dir,
        database_name=make_url(settings.database_url).database or "darkroom",
    ) as services:
        upgrade_to_head(services.database_url)
        dev_key = asyncio.run(
            ensure_dev_key(services.database_url, settings.data_dir, pepper=settings.secret_key)
        )
        env = {
            **os.environ,
            "DARKROOM_DATABASE_URL": services.database_url,
            "DARKROOM_REDIS_URL": services.redis_url,
            "DARKROOM_PUBLIC_URL": os.environ.get(
                "DARKROOM_PUBLIC_URL", f"http://127.0.0.1:{port}"
            ),
        }
        typer.echo(f"\nDarkroom is up on http://127.0.0.1:{port}  (docs: /docs)")
        typer.echo(f"  Postgres: {services.database_url}\n  Redis:    {services.redis_url}")
        typer.echo(f"  API key:        {dev_key['key']}")
        typer.echo(f"  webhook secret: {dev_key['webhook_secret']}")
        typer.echo(
            "  Try: darkroom submit examples/batch.json --wait   (Ctrl-C stops everything)\n"
        )
        _supervise(port=port, workers=workers, env=env)


def _supervise(*, port: int, workers: int, env: dict[str, str]) -> None:
    """Run the API and the workers until Ctrl-C. A worker that crashes is started again
    (its jobs resume: they are in Postgres); the API exiting ends the session."""
    command = [sys.executable, "-m", "service.cli"]
    api = subprocess.Popen([*command, "serve", "--port", str(port)], env=env)
    pool = [subprocess.Popen([*command, "worker"], env=env) for _ in range(workers)]
    try:
        while api.poll() is None:
            time.sleep(1)
            for slot, worker_process in enumerate(pool):
                # A clean exit is a worker told to stop (Ctrl-C reaches it first): not a crash.
                if worker_process.poll() not in (None, 0):
                    typer.echo(f"worker exited with {worker_process.returncode}; restarting it")
                    pool[slot] = subprocess.Popen([*command, "worker"], env=env)
    except KeyboardInterrupt:
        pass
    finally:
        _stop_children([api, *pool])


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()


if __name__ == "__main__":
    app()
