"""The `darkroom` command."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
import uvicorn

from service.config import Settings, get_settings

if TYPE_CHECKING:
    from service.devenv.signals import StopSignals
    from service.providers.config import DarkroomConfig

UP_HOST = "127.0.0.1"
# service/run_cli.py returns these.
EXIT_CODES_HELP = (
    "Exit codes: 0 every job succeeded (and every output is in DIR); 1 Darkroom refused or "
    "could not be reached; 2 bad usage (file, key, options); 3 the batch finished with failed or "
    "cancelled jobs; 4 some outputs could not be downloaded (run `darkroom download` "
    "again); 5 the batch is not finished; 130 interrupted."
)

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object on stdout, for scripts")]

app = typer.Typer(help="Darkroom: images in bulk for other software.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@app.callback()
def _settings_first() -> None:
    """Settings that cannot work (DARKROOM_STORAGE=s3 with no bucket, ...) stop any command
    at once, one line per problem, instead of a traceback."""
    from pydantic import ValidationError

    try:
        get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            where = "DARKROOM_" + "_".join(map(str, error["loc"])).upper()
            message = error["msg"].removeprefix("Value error, ")
            typer.echo(
                f"darkroom: {where}: {message}" if error["loc"] else f"darkroom: {message}",
                err=True,
            )
        raise typer.Exit(2) from exc


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 8000,
) -> None:
    """Run the HTTP API."""
    settings = get_settings()
    _share_metrics(settings)
    _check_config(settings)
    from service.events.server import Server  # ends live event streams on SIGTERM

    # On SIGTERM uvicorn stops accepting, lets in-flight requests finish for this long,
    # then ends the lifespan (which closes the State).
    config = uvicorn.Config(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
    )
    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    if not server.started:  # as uvicorn.run: a failed start-up exits 3
        raise typer.Exit(3)


@app.command()
def worker() -> None:
    """Run a worker process: image jobs, webhook deliveries and the reconciler."""
    from service.logging import configure_logging
    from service.worker import run_workers

    settings = get_settings()
    _share_metrics(settings)
    _check_config(settings)
    configure_logging(settings)
    try:
        asyncio.run(run_workers(settings))
    finally:
        from service.metrics import multiproc

        multiproc.process_exit()


def _share_metrics(settings: Settings) -> None:
    """Counters and histograms go to the folder every process of this deployment shares
    (PROMETHEUS_MULTIPROC_DIR, default <data dir>/metrics), before any is observed."""
    from service.metrics import multiproc

    multiproc.prepare(settings.data_dir)


def _check_config(settings: Settings, *, warn: bool = True) -> None:
    """A broken DARKROOM_CONFIG, or a storage bucket that is missing or unreachable, stops
    the process at once, saying in one line what is broken. `warn`: also say (one line,
    not an error) what is risky (grace_warning); `darkroom up` leaves that to the serve
    and worker processes it starts."""
    from service.providers.config import ConfigError, load_config
    from service.state import check_storage
    from service.storage.base import StorageConfigError

    try:
        config = load_config(settings.config)
        asyncio.run(check_storage(settings))
    except (ConfigError, StorageConfigError) as exc:
        typer.echo(f"darkroom: {exc}", err=True)
        raise typer.Exit(2) from exc
    warning = asyncio.run(grace_warning(settings, config)) if warn else None
    if warning is not None:
        typer.echo(f"darkroom: warning: {warning}", err=True)


async def grace_warning(settings: Settings, config: DarkroomConfig) -> str | None:
    """A warning when DARKROOM_SHUTDOWN_GRACE_S is shorter than the longest timeout of a
    synchronous provider a model uses: a request still running when the grace ends is
    cut, and its job sent again (billed twice). Accounts without their token (their
    jobs are refused) and the built-in local renderer (a rerun costs nothing) are left
    out."""
    from service.providers.base import SyncProvider
    from service.providers.catalogue import build_provider

    longest: tuple[float, str, str] | None = None
    for name, model in sorted(config.models.items()):
        account = config.providers[model.provider]
        if account.kind == "local" or account.missing_env():
            continue
        if longest is not None and account.timeout_s <= longest[0]:
            continue
        provider = build_provider(model.provider, account)
        try:
            if isinstance(provider, SyncProvider):
                longest = (account.timeout_s, name, model.provider)
        finally:
            await provider.aclose()
    if longest is None or settings.shutdown_grace_s >= longest[0]:
        return None
    timeout_s, model_name, account_name = longest
    return (
        f"DARKROOM_SHUTDOWN_GRACE_S={settings.shutdown_grace_s:g} is below the "
        f"{timeout_s:g} s timeout of model {model_name!r} (synchronous account "
        f"{account_name!r}): a request still running when the grace ends is cut and its "
        "job sent again"
    )


@app.command()
def migrate(as_json: JsonOption = False) -> None:
    """Apply the database migrations (Alembic upgrade head)."""
    from service.migrate import head_revision, upgrade_to_head

    settings = get_settings()
    try:
        upgrade_to_head(settings.database_url)
    except Exception as exc:
        _database_failed("migrate", settings.database_url, exc)
    revision = head_revision()
    if as_json:
        typer.echo(json.dumps({"revision": revision}))
    else:
        typer.echo(f"database is at the latest migration ({revision})")


def _database_failed(what: str, database_url: str, exc: Exception) -> NoReturn:
    """A database that cannot be reached (or refuses) as one line naming it, password
    hidden, instead of a traceback; anything else is a bug and keeps its traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, OSError | DBAPIError):
        raise exc
    where = make_url(database_url).render_as_string(hide_password=True)
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
    typer.echo(f"darkroom: cannot {what} {where}: {reason}", err=True)
    raise typer.Exit(1) from None


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who the key is for")],
    as_json: Annotated[bool, typer.Option("--json", help="Print {key, webhook_secret}")] = False,
) -> None:
    """Create an API key. The key and its webhook signing secret are shown once."""
    from service.dev_key import create_key_now

    settings = get_settings()
    try:
        created = asyncio.run(
            create_key_now(settings.database_url, name, pepper=settings.secret_key)
        )
    except Exception as exc:
        _database_failed("create a key in", settings.database_url, exc)
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
    url: Annotated[
        str | None,
        typer.Option(envvar="DARKROOM_API_URL", help="Default: where `darkroom up` runs"),
    ] = None,
    key: Annotated[
        str | None, typer.Option(envvar="DARKROOM_API_KEY", help="Default: the dev key")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="The batch as one line of JSON (else indented)")
    ] = False,
) -> None:
    """Submit a batch (and with --wait, follow it to the end)."""
    from service.submit_cli import submit_file

    code = submit_file(file, wait=wait, url=url, key=key, settings=get_settings(), compact=as_json)
    raise typer.Exit(code)


UrlOption = Annotated[
    str | None,
    typer.Option(envvar="DARKROOM_API_URL", help="Default: where `darkroom up` runs"),
]
KeyOption = Annotated[
    str | None, typer.Option(envvar="DARKROOM_API_KEY", help="Default: the dev key")
]


@app.command(epilog=EXIT_CODES_HELP)
def run(
    file: Annotated[Path, typer.Argument(help="A batch file: .csv, .jsonl, .yaml/.yml or .json")],
    wait: Annotated[bool, typer.Option(help="Show progress until the batch finishes")] = False,
    out: Annotated[
        Path | None,
        typer.Option(help="Then download the outputs and manifest.json here (implies --wait)"),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(metavar="REF", help="A stored template for every row: name or name@version"),
    ] = None,
    prompt: Annotated[
        str | None,
        typer.Option(help="A Jinja2 prompt template over each row's columns: '{{ name }}, studio'"),
    ] = None,
    negative_prompt: Annotated[
        str | None, typer.Option(help="A Jinja2 negative prompt template (with --prompt)")
    ] = None,
    output_name: Annotated[
        str | None,
        typer.Option(help="A Jinja2 template for each output's file name: '{{ sku }}'"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="The batch's name")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Submit a batch file; with --wait or --out follow it live; with --out download it.

    Each row renders from its columns: --template REF, or --prompt and --output-name."""
    from service.run_cli import run_file
    from service.run_template import BatchOptions

    options = BatchOptions(template, prompt, negative_prompt, output_name, name)
    code = run_file(
        file,
        wait=wait,
        out=out,
        as_json=as_json,
        url=url,
        key=key,
        settings=get_settings(),
        options=options,
    )
    raise typer.Exit(code)


@app.command(epilog=EXIT_CODES_HELP)
def download(
    batch: Annotated[str, typer.Argument(help="The batch id")],
    out: Annotated[Path, typer.Option(help="The folder to download into")],
    as_json: JsonOption = False,
    url: UrlOption = None,
    key: KeyOption = None,
) -> None:
    """Download a batch's outputs and manifest.json; files already there are skipped when
    their sha256 matches, so running it again resumes."""
    from service.run_cli import download_command

    code = download_command(
        batch, out=out, as_json=as_json, url=url, key=key, settings=get_settings()
    )
    raise typer.Exit(code)


@app.command()
def openapi(
    output: Annotated[Path, typer.Option(help="Where to write it")] = Path("openapi/openapi.json"),
    as_json: JsonOption = False,
) -> None:
    """Write the OpenAPI document the app serves."""
    from service.app import create_app

    document = create_app().openapi()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    if as_json:
        operations = sum(len(methods) for methods in document["paths"].values())
        typer.echo(json.dumps({"output": str(output), "operations": operations}))
    else:
        typer.echo(f"wrote {output}")


@app.command()
def up(
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 2,
) -> None:
    """Development: find or start Postgres and Redis, migrate, make a dev key, run API + workers.

    SIGINT, SIGTERM or SIGHUP stops everything it started, embedded servers included."""
    from service.devenv.signals import Stop, stop_on_signals
    from service.devenv.stack import StackError, check_port_free

    with stop_on_signals() as signals:
        try:
            check_port_free(UP_HOST, port)
            status = _up(port=port, workers=workers, signals=signals)
        except StackError as exc:
            _say(f"darkroom: {exc}", err=True)
            status = 1
        except Stop:
            status = 0  # asked to stop, and everything stopped
    raise typer.Exit(status)


def _up(*, port: int, workers: int, signals: StopSignals) -> int:
    from sqlalchemy.engine import make_url

    from service.dev_key import ensure_dev_key
    from service.devenv import ensure_services
    from service.devenv.banner import banner
    from service.devenv.stack import run_stack
    from service.migrate import upgrade_to_head

    settings = get_settings()
    _check_config(settings, warn=False)
    with ensure_services(
        database_url=os.environ.get("DARKROOM_DATABASE_URL"),
        redis_url=os.environ.get("DARKROOM_REDIS_URL"),
        probe_local_defaults=settings.local_defaults,
        data_dir=settings.data_dir,
        database_name=make_url(settings.database_url).database or "darkroom",
    ) as services:
        try:
            upgrade_to_head(services.database_url)
            dev_key = asyncio.run(
                ensure_dev_key(services.database_url, settings.data_dir, pepper=settings.secret_key)
            )
            metrics_dir = _fresh_metrics_dir(settings)
            env = {
                **os.environ,
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                "DARKROOM_DATABASE_URL": services.database_url,
                "DARKROOM_REDIS_URL": services.redis_url,
                "DARKROOM_PUBLIC_URL": os.environ.get(
                    "DARKROOM_PUBLIC_URL", f"http://{UP_HOST}:{port}"
                ),
            }
            return run_stack(
                host=UP_HOST,
                port=port,
                workers=workers,
                env=env,
                data_dir=settings.data_dir,
                signals=signals,
                grace_s=settings.shutdown_grace_s,
                announce=lambda url: _say(banner(url, services, dev_key, settings.data_dir)),
            )
        finally:
            signals.hold()  # however this ends, stopping the servers must not be cut short


def _fresh_metrics_dir(settings: Settings) -> Path:
    """Nothing of this run has started yet: the previous run's metric files go, or their
    totals would carry on into this run's."""
    from service.metrics import multiproc

    folder = multiproc.metrics_dir(settings.data_dir)
    multiproc.clear(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _say(message: str, *, err: bool = False) -> None:
    from service.devenv.console import say

    say(message, err=err)


if __name__ == "__main__":
    app()
