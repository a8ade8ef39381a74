"""Command line: parse, call one library function, print. User errors (EdgesegError) become one
line on stderr and exit code 2; ``--debug`` shows the traceback."""
from __future__ import annotations

import sys

import click

from edgeseg.errors import EdgesegError


def parse_size(value: str | None) -> tuple[int, int] | None:
    """'360x480' -> (360, 480)."""
    if value is None:
        return None
    try:
        h, w = (int(v) for v in value.lower().split("x"))
        if h < 1 or w < 1:
            raise ValueError
        return h, w
    except ValueError:
        raise click.BadParameter(f"expected HxW with positive integers (e.g. 360x480), got {value!r}") from None


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgesegError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgeseg: DeepLab v3+ and FCN segmentation from training to edge deployment."""
    ctx.obj = {"debug": debug}
