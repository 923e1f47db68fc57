"""Packages for the wheel. Everything else about the build is in pyproject.toml.

The migrations stay at the top of the repository (where Alembic's tooling and developers expect
them) and travel in the wheel as `service.migrations`, so an installed `darkroom migrate` needs
no checkout, no alembic.ini and no particular working directory.
"""

from setuptools import find_namespace_packages, setup

setup(
    # Folders without an __init__.py (data only) are packages too, so their files ship.
    packages=[
        *find_namespace_packages(include=["service", "service.*"], exclude=["*.__pycache__"]),
        "service.migrations",
        "service.migrations.versions",
    ],
    package_dir={"service.migrations": "migrations"},
)
