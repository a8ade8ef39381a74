"""The click group every command registers on (``@main.command("NAME")`` in ``edgeseg/cli/NAME.py``).
User errors (EdgesegError, and the OSErrors of a user's disk or path: full, read-only, forbidden, see
``edgeseg.errors.os_error``) become one line on stderr and exit code 2; ``--debug`` shows the traceback.
Options several commands share: ``edgeseg.cli.options``."""
from __future__ import annotations

import sys

import click

from edgeseg.errors import EdgesegError, os_error


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (EdgesegError, OSError) as e:
            error = e if isinstance(e, EdgesegError) else os_error(e)
            if error is None or (ctx.obj and ctx.obj.get("debug")):
                raise
            click.echo(f"error: {error}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgeseg: DeepLab v3+ and FCN segmentation from training to edge deployment."""
    ctx.obj = {"debug": debug}
