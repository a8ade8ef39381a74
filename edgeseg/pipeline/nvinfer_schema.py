"""The Gst-nvinfer config file schema: every key nvinfer reads, its type and allowed values, and
``validate_nvinfer`` checking a config against them (the writer is ``edgeseg.pipeline.deepstream``).

Source: NVIDIA DeepStream SDK Developer Guide, "Gst-nvinfer" > "Gst-nvinfer File Configuration
Specifications" (DeepStream 6.x / 7.x), and the open-source parser that enforces them:
sources/gst-plugins/gst-nvinfer/gstnvinfer_property_parser.h (key names) and .cpp (ranges, e.g.
batch-size 1..NVDSINFER_MAX_BATCH_SIZE=1024, network-mode 0/1/2, network-type 0/1/2/3/100,
model-color-format 0/1/2, offsets at most 4 values, segmentation-output-order 0/1,
segmentation-threshold >= 0, gie-unique-id > 0, process-mode 1/2).

A key's check takes the value as written and returns the problem, or None when the value is valid.
"""
from __future__ import annotations

import configparser
from collections.abc import Callable
from pathlib import Path

NVINFER_DOC = ("DeepStream Developer Guide, Gst-nvinfer, 'Gst-nvinfer File Configuration Specifications' "
               "(DS 6.x/7.x); gst-nvinfer/gstnvinfer_property_parser.{h,cpp}")
NVDSINFER_MAX_BATCH_SIZE = 1024
NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}  # network-mode per model precision (artifacts.PRECISIONS)
COLOR_FORMATS = {"RGB": 0, "BGR": 1, "GRAY": 2}  # model-color-format
NETWORK_TYPE_SEGMENTATION = 2  # network-type: 0 detector, 1 classifier, 2 segmentation, 3 instance, 100 other

Check = Callable[[str], "str | None"]


def _int(lo: int | None = None, hi: int | None = None, choices: tuple[int, ...] | None = None) -> Check:
    def check(v: str) -> str | None:
        try:
            n = int(v)
        except ValueError:
            return f"expected an integer, got {v!r}"
        if choices is not None and n not in choices:
            return f"expected one of {', '.join(map(str, choices))}, got {n}"
        if (lo is not None and n < lo) or (hi is not None and n > hi):
            return f"expected {lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}, got {n}"
        return None
    return check


def _float(lo: float | None = None, positive: bool = False) -> Check:
    def check(v: str) -> str | None:
        try:
            x = float(v)
        except ValueError:
            return f"expected a number, got {v!r}"
        if positive and not x > 0:
            return f"expected a number > 0, got {x}"
        if lo is not None and x < lo:
            return f"expected a number >= {lo}, got {x}"
        return None
    return check


def _bool(v: str) -> str | None:
    return None if v.strip().lower() in ("0", "1", "true", "false") else f"expected 0/1 or true/false, got {v!r}"


def _text(v: str) -> str | None:
    return None if v.strip() else "expected a non-empty value"


def _list(item: Check, min_len: int = 1, max_len: int | None = None, exact: int | None = None) -> Check:
    def check(v: str) -> str | None:
        parts = [p for p in v.split(";") if p.strip()]
        if exact is not None and len(parts) != exact:
            return f"expected {exact} values separated by ';', got {len(parts)}"
        if len(parts) < min_len or (max_len is not None and len(parts) > max_len):
            return f"expected {min_len}..{max_len or 'any'} values separated by ';', got {len(parts)}"
        for p in parts:
            problem = item(p)
            if problem:
                return problem
        return None
    return check


NVINFER_KEYS: dict[str, Check] = {
    # element and runtime
    "gpu-id": _int(0), "gie-unique-id": _int(1), "process-mode": _int(choices=(1, 2)), "interval": _int(0),
    "batch-size": _int(1, NVDSINFER_MAX_BATCH_SIZE), "labelfile-path": _text, "output-tensor-meta": _bool,
    "secondary-reinfer-interval": _int(0), "tensor-meta-pool-size": _int(1), "workspace-size": _int(0),
    "enable-dla": _bool, "use-dla-core": _int(0), "disable-output-host-copy": _bool,
    # model and precision
    "network-mode": _int(choices=tuple(NETWORK_MODES.values())), "network-type": _int(choices=(0, 1, 2, 3, 100)),
    "model-engine-file": _text, "int8-calib-file": _text, "onnx-file": _text, "output-blob-names": _list(_text),
    "force-implicit-batch-dim": _bool, "infer-dims": _list(_int(1), exact=3), "output-io-formats": _list(_text),
    "layer-device-precision": _list(_text), "custom-lib-path": _text, "engine-create-func-name": _text,
    "custom-network-config": _text, "tlt-encoded-model": _text, "tlt-model-key": _text,
    "model-file": _text, "proto-file": _text, "uff-file": _text,
    # preprocessing
    "net-scale-factor": _float(positive=True), "offsets": _list(_float(), 1, 4),
    "model-color-format": _int(choices=tuple(COLOR_FORMATS.values())), "mean-file": _text,
    "maintain-aspect-ratio": _bool, "symmetric-padding": _bool, "scaling-filter": _int(0, 6),
    "scaling-compute-hw": _int(0, 2), "network-input-order": _int(choices=(0, 1)), "input-tensor-from-meta": _bool,
    # output parsing
    "num-detected-classes": _int(1), "segmentation-threshold": _float(0.0),
    "segmentation-output-order": _int(choices=(0, 1)), "output-instance-mask": _bool,
    "cluster-mode": _int(0, 4), "classifier-threshold": _float(0.0), "classifier-async-mode": _bool,
    "parse-bbox-func-name": _text, "parse-classifier-func-name": _text, "filter-out-class-ids": _list(_int(0)),
    "operate-on-gie-id": _int(), "operate-on-class-ids": _list(_int(0)),
}
FILE_KEYS = ("onnx-file", "int8-calib-file", "labelfile-path")  # files next to the config (the engine: written later)


def _properties(text: str) -> dict[str, str] | str:
    """The [property] group of a key file as nvinfer (GKeyFile) reads it, or the reason it cannot be read."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=("#",),
                                       inline_comment_prefixes=None, strict=True, empty_lines_in_values=False)
    try:
        parser.read_string(text)
    except configparser.Error as e:
        return f"not a key file nvinfer can read: {str(e).splitlines()[0]}"
    if not parser.has_section("property"):
        return "no [property] group"
    return dict(parser.items("property"))


def _segmentation_problems(props: dict[str, str]) -> list[str]:
    """What a semantic-segmentation config needs beyond valid keys."""
    problems = []
    if props.get("network-type") != str(NETWORK_TYPE_SEGMENTATION):
        problems.append(f"network-type must be {NETWORK_TYPE_SEGMENTATION} (segmentation)")
    for key in ("num-detected-classes", "output-blob-names"):
        if key not in props:
            problems.append(f"{key} is required for segmentation")
    if "onnx-file" not in props and "model-engine-file" not in props:
        problems.append("neither onnx-file nor model-engine-file is set")
    if props.get("network-mode") == str(NETWORK_MODES["int8"]) and "int8-calib-file" not in props:
        problems.append("network-mode=1 (INT8) without int8-calib-file: nvinfer falls back to FP16")
    if "use-dla-core" in props and props.get("enable-dla", "0").lower() not in ("1", "true"):
        problems.append("use-dla-core is set but enable-dla is not 1")
    rgb = (str(COLOR_FORMATS["RGB"]), str(COLOR_FORMATS["BGR"]))
    if "offsets" in props and props.get("model-color-format") in rgb and len(props["offsets"].split(";")) != 3:
        problems.append("offsets needs 3 values for an RGB/BGR model")
    return problems


def validate_nvinfer(text: str, root: str | Path | None = None) -> list[str]:
    """Problems in an nvinfer config (empty list: none): keys outside NVINFER_KEYS, values outside
    their documented ranges, and the semantic-segmentation essentials (network-type=2, a model, the
    class count, output names; INT8 with a calibration file; use-dla-core only with enable-dla).
    With ``root`` (the config's folder), files it names must exist there (the engine excepted:
    nvinfer writes it on first start)."""
    props = _properties(text)
    if isinstance(props, str):
        return [props]
    problems = [f"unknown key {k!r}" for k in props if k not in NVINFER_KEYS]
    problems += [f"{k}: {msg}" for k, v in props.items() if k in NVINFER_KEYS and (msg := NVINFER_KEYS[k](v))]
    if problems:
        return problems
    problems = _segmentation_problems(props)
    if root is not None:
        problems += [f"{key}={props[key]} does not exist next to the config" for key in FILE_KEYS
                     if key in props and not (Path(root) / props[key]).is_file()]
    return problems
