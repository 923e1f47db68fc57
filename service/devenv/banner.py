"""What `darkroom up` prints once the API answers: where things are, and a command to try
that works as printed, from the shell the user is in."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from service.dev_key import DEV_KEY_FILE
from service.devenv import RunningServices

EXAMPLE = Path("examples/batch.json")


def banner(url: str, services: RunningServices, dev_key: dict[str, str], data_dir: Path) -> str:
    return "\n".join(
        [
            "",
            f"Darkroom is up on {url}  (interactive docs: {url}/docs)",
            f"  Postgres: {services.database_url}",
            f"  Redis:    {services.redis_url}",
            f"  API key:        {dev_key['key']}   (kept in {data_dir / DEV_KEY_FILE})",
            f"  webhook secret: {dev_key['webhook_secret']}",
            f"  Try: {try_command()}",
            "  Ctrl-C stops everything.",
            "",
        ]
    )


def try_command() -> str:
    darkroom = darkroom_command()
    if EXAMPLE.is_file():
        return f"{darkroom} submit {EXAMPLE} --wait"
    return (
        """echo '{"jobs": [{"prompt": "a lighthouse at dusk"}]}' > batch.json && """
        f"{darkroom} submit batch.json --wait"
    )


def darkroom_command() -> str:
    """`darkroom` if the shell finds this very one; else its path (`make run` does not put the
    venv on PATH), relative when it lies under the current folder."""
    script = Path(sys.executable).with_name("darkroom")  # not resolved: the venv's own bin/
    if not script.is_file():
        return f"{sys.executable} -m service.cli"
    found = shutil.which("darkroom")
    if found is not None and Path(found).resolve() == script.resolve():
        return "darkroom"
    try:
        return str(script.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(script.absolute())
