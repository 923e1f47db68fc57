"""Running the Alembic migrations from code (the CLI, `up`, the test fixtures)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def migrations_root() -> Path:
    """The folder holding alembic.ini and migrations/: the source tree for an editable
    install, else the working directory (the Docker image keeps them in /app)."""
    for root in (PROJECT_ROOT, Path.cwd()):
        if (root / "alembic.ini").is_file() and (root / "migrations").is_dir():
            return root
    raise FileNotFoundError("alembic.ini and migrations/ not found: run from the project folder")


def alembic_config(database_url: str) -> Config:
    root = migrations_root()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade_to_head(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")
