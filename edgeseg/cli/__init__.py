"""Command line: the click group (``edgeseg.cli.group``) and one module per command family.

Each command module imports the group and registers its commands on it; this package imports
them all so that ``edgeseg.cli:main`` (the console script) and ``python -m edgeseg`` see every
command. Nothing below the CLI imports it."""
from edgeseg.cli import bench, build, deploy, doctor, export, precision, train  # noqa: F401  (register their commands)
from edgeseg.cli.group import main

__all__ = ["main"]
