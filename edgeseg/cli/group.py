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


def parse_triplet(value: str, flag: str) -> tuple[float, float, float]:
    """'0.485,0.456,0.406' -> (0.485, 0.456, 0.406); a one-line error otherwise."""
    try:
        values = tuple(float(v) for v in value.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise EdgesegError(f"{flag} must be 3 comma-separated numbers (R,G,B), got {value!r}; e.g. {flag} 0.5,0.5,0.5")
    return values


def explicit_preprocessing(what: str, mean: str | None, std: str | None, scale: float | None,
                           imagenet: bool = False, resize: str | None = None):
    """The preprocessing for a model that records none (torchvision weights, untrained, foreign ONNX):
    only what the user states, never a silent default. ``imagenet``: torchvision's ImageNet mean/std."""
    from edgeseg.data import Preprocessing

    if imagenet and (mean or std):
        raise EdgesegError("pass either --imagenet-preprocessing or --mean/--std, not both")
    if not imagenet and not (mean and std):
        raise EdgesegError(f"{what} records no preprocessing and edgeseg will not guess one: expected "
                           "--imagenet-preprocessing (torchvision's mean/std) or --mean R,G,B --std R,G,B "
                           "[--scale 0.00392156862745098]; pass the normalization the model was trained with")
    extra = {"resize": resize} if resize else {}
    if imagenet:
        return Preprocessing(**extra)
    return Preprocessing(mean=parse_triplet(mean, "--mean"), std=parse_triplet(std, "--std"),
                         scale=scale if scale is not None else 1 / 255, **extra)


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
