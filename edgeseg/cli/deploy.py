"""`edgeseg deploy`: a bundle as a DeepStream nvinfer folder and/or a Triton model repository entry."""
from __future__ import annotations

from pathlib import Path

import click

from edgeseg.cli.group import main
from edgeseg.errors import EdgesegError


@main.command("deploy")
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--deepstream", type=click.Path(path_type=Path), default=None,
              help="Folder for the nvinfer config, labels, ONNX and a gst-launch README.")
@click.option("--triton", type=click.Path(path_type=Path), default=None,
              help="Triton model repository: writes NAME/config.pbtxt and NAME/1/model.onnx|model.plan.")
@click.option("--model-name", default=None, help="Triton model name (default MODEL_PRECISION).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="nvinfer batch-size (default: the bundle's opt batch).")
@click.option("--segmentation-threshold", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="nvinfer: pixels whose best class probability is not above this stay unlabelled (-1).")
@click.option("--verify/--no-verify", default=True, show_default=True, help="Check the bundle's file hashes.")
@click.option("--overwrite", is_flag=True, help="Replace the --deepstream folder / the Triton model folder even when "
              "it holds files edgeseg deploy did not write.")
@click.option("--trt-version", default=None,
              help="DeepStream INT8: the TensorRT nvinfer runs (DeepStream 7.1: 10.3.0); calibration.cache gets its "
                   "header (default: the bundle engine's TensorRT).")
def deploy_cmd(bundle_dir: Path, deepstream: Path | None, triton: Path | None, model_name: str | None,
               batch_size: int | None, segmentation_threshold: float, verify: bool, overwrite: bool,
               trt_version: str | None) -> None:
    """Write a DeepStream nvinfer config and/or a Triton model repository for a bundle."""
    from edgeseg.pipeline.deepstream import write_deepstream
    from edgeseg.pipeline.triton import write_triton

    if deepstream is None and triton is None:
        raise EdgesegError("expected --deepstream DIR and/or --triton DIR, got neither; pass at least one")
    if deepstream is not None:
        res = write_deepstream(bundle_dir, deepstream, batch_size=batch_size,
                               segmentation_threshold=segmentation_threshold, verify=verify, overwrite=overwrite,
                               trt_version=trt_version)
        click.echo(f"DeepStream: {res.out} ({', '.join(res.files)})")
        for warning in res.warnings:
            click.echo(f"warning: {warning}", err=True)
    if triton is not None:
        res = write_triton(bundle_dir, triton, model_name=model_name, verify=verify, overwrite=overwrite)
        click.echo(f"Triton: {res.out} ({', '.join(res.files)})")
