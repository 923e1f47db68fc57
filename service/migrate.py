"""Running the Alembic migrations from code (the CLI, `up`, the test fixtures, CI).

The Alembic configuration is built here rather than read from alembic.ini, so that an installed
`darkroom migrate` works from any working directory. alembic.ini at the top of the repository is
for developers running the `alembic` command itself (revisions, history).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

PACKAGE_DIR = Path(__file__).resolve().parent


def script_location() -> Path:
    """The folder holding env.py and versions/.

    A wheel carries the migrations inside the package, as service/migrations (see setup.py);
    a checkout, and an editable install of it, has them at the top of the repository. The
    package's own copy comes first, so an installed service never picks up some other
    project's migrations/ lying beside it in site-packages.
    """
    for folder in (PACKAGE_DIR / "migrations", PACKAGE_DIR.parent / "migrations"):
        if (folder / "env.py").is_file():
            return folder
    raise FileNotFoundError(
        f"no migrations in {PACKAGE_DIR / 'migrations'}: reinstall darkroom from a complete wheel"
    )


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["database_url"] = database_url
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def head_revision() -> str:
    """The revision `upgrade_to_head` brings a database to."""
    head = ScriptDirectory.from_config(alembic_config("")).get_current_head()
    assert head is not None  # the history is linear and never empty
    return head
