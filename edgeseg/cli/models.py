"""`edgeseg models`: the model names with parameters and multiply-adds."""
from __future__ import annotations

import click

from edgeseg.cli.group import main
from edgeseg.cli.options import parse_size


@main.command("models")
@click.option("--input-size", default="360x480", show_default=True, help="HxW for the multiply-add count.")
@click.option("--num-classes", default=21, show_default=True)
@click.option("--filter", "pattern", default="", help="Only names containing this text.")
def models_cmd(input_size: str, num_classes: int, pattern: str) -> None:
    """List the models with parameters and multiply-adds."""
    from rich.console import Console
    from rich.table import Table

    from edgeseg.models import MODEL_NAMES, TORCHVISION_NAMES, ModelConfig, build_model, measure_complexity, split_name
    from edgeseg.models.backbones import BACKBONE_SPECS

    size = parse_size(input_size)
    table = Table(title=f"edgeseg models ({num_classes} classes, MACs at {size[0]}x{size[1]})")
    table.add_column("name", no_wrap=True)
    for col in ("OS", "params (M)", "GMACs", "torchvision"):
        table.add_column(col, justify="right")
    table.add_column("ImageNet weights (--pretrained imagenet)", overflow="fold")
    for name in MODEL_NAMES:
        if pattern not in name:
            continue
        cfg = ModelConfig(name, num_classes).resolved()
        c = measure_complexity(build_model(cfg), size)
        backbone = split_name(name)[1]
        table.add_row(name, str(cfg.output_stride), f"{c.params / 1e6:.2f}", f"{c.macs / 1e9:.2f}",
                      "yes" if name in TORCHVISION_NAMES else "",
                      BACKBONE_SPECS[backbone].imagenet if backbone else "-")
    Console().print(table)
