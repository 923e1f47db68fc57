"""Packages for the wheel. Everything else about the build is in pyproject.toml.

The migrations stay at the top of the repository (where Alembic's tooling and developers expect
them) and travel in the wheel as `service.migrations`, so an installed `darkroom migrate` needs
no checkout, no alembic.ini and no particular working directory.
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["service", "service.*"]),
        "service.migrations",
        "service.migrations.versions",
    ],
    package_dir={"service.migrations": "migrations"},
)
