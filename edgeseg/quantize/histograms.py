"""Streaming activation statistics for every float activation tensor of an ONNX model.

One image at a time runs through ONNX Runtime with every intermediate float tensor exposed as
an output; each tensor keeps min, max, |x| max and a fixed-size histogram of |x| whose range
grows by merging bins (so memory stays bounded whatever the number of images). Results are
cached on disk keyed by (ONNX sha256, calibration manifest sha256), so trying another
calibrator does not re-run the data.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path, sha256_file

NUM_BINS = 2048


@dataclass
class TensorStats:
    """Running statistics of one tensor. ``hist`` covers [0, NUM_BINS * bin_width)."""

    hist: np.ndarray
    bin_width: float
    minimum: float
    maximum: float

    @property
    def absmax(self) -> float:
        return max(abs(self.minimum), abs(self.maximum))

    @classmethod
    def empty(cls) -> "TensorStats":
        return cls(np.zeros(NUM_BINS, np.int64), 0.0, np.inf, -np.inf)

    def update(self, x: np.ndarray) -> None:
        if not np.isfinite(x).all():
            raise EdgesegError("an activation is NaN or infinite on a calibration image: the model or the "
                               "preprocessing is broken for this input; check the image and the model")
        a = np.abs(x.ravel())
        self.minimum = min(self.minimum, float(x.min()))
        self.maximum = max(self.maximum, float(x.max()))
        top = float(a.max())
        if top == 0:
            self.hist[0] += a.size
            return
        if self.bin_width == 0:
            self.bin_width = top / NUM_BINS * (1 + 1e-6)
        elif top >= NUM_BINS * self.bin_width:
            factor = int(np.ceil(top / (NUM_BINS * self.bin_width) * (1 + 1e-6)))
            merged = np.zeros(NUM_BINS, np.int64)
            np.add.at(merged, np.arange(NUM_BINS) // factor, self.hist)
            self.hist, self.bin_width = merged, self.bin_width * factor
        idx = np.minimum((a / self.bin_width).astype(np.int64), NUM_BINS - 1)
        self.hist += np.bincount(idx, minlength=NUM_BINS)


def activation_tensor_names(model) -> list[str]:
    """Names of the graph input and every float node output (after shape inference)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    float_types = {onnx.TensorProto.FLOAT}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    initializers = {i.name for i in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    for node in model.graph.node:
        if node.op_type in ("Shape", "Constant", "ConstantOfShape"):
            continue
        names += [o for o in node.output if o and types.get(o) in float_types and o not in names]
    return names


def _exposing_session(onnx_path: Path, names: list[str], threads: int):
    import onnx

    from edgeseg.ort_session import make_session

    model = onnx.load(str(onnx_path))
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    return make_session(model.SerializeToString(), threads, optimize=False)  # keep every tensor as named


def iter_activations(onnx_path: str | Path, inputs: Iterable[np.ndarray], names: list[str] | None = None,
                     threads: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """For each (1, 3, H, W) float32 input, the FP32 tensors ``names`` (default: every activation)."""
    import onnx

    onnx_path = Path(onnx_path)
    if names is None:
        names = activation_tensor_names(onnx.load(str(onnx_path), load_external_data=False))
    session = _exposing_session(onnx_path, names, threads)
    input_name = session.get_inputs()[0].name
    for x in inputs:
        yield dict(zip(names, session.run(names, {input_name: x})))


def collect_stats(onnx_path: str | Path, inputs: Iterable[np.ndarray], threads: int = 0) -> dict[str, TensorStats]:
    """Run every (1, 3, H, W) float32 array of ``inputs`` and return statistics per tensor name."""
    stats: dict[str, TensorStats] = {}
    count = 0
    for acts in iter_activations(onnx_path, inputs, threads=threads):
        for name, value in acts.items():
            stats.setdefault(name, TensorStats.empty()).update(value)
        count += 1
    if count == 0:
        raise EdgesegError("the calibration set yielded no images; give a set with at least one image")
    return stats


def save_stats(path: str | Path, stats: dict[str, TensorStats]) -> None:
    names = list(stats)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array(names), hist=np.stack([stats[n].hist for n in names]),
                     bin_width=np.array([stats[n].bin_width for n in names]),
                     minimum=np.array([stats[n].minimum for n in names]),
                     maximum=np.array([stats[n].maximum for n in names]))


def load_stats(path: str | Path) -> dict[str, TensorStats]:
    with np.load(path, allow_pickle=False) as z:
        return {str(n): TensorStats(z["hist"][i].copy(), float(z["bin_width"][i]), float(z["minimum"][i]),
                                    float(z["maximum"][i])) for i, n in enumerate(z["names"])}


def cached_stats(onnx_path: str | Path, manifest_sha256: str, inputs: Iterable[np.ndarray], cache_dir: str | Path,
                 threads: int = 0) -> tuple[dict[str, TensorStats], bool]:
    """Statistics from ``cache_dir`` when (ONNX sha256, manifest sha256) was seen, else collected and cached.
    Returns (stats, cache_hit)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = f"{sha256_file(onnx_path)[:16]}-{manifest_sha256[:16]}.npz"
    path = cache_dir / key
    if path.is_file():
        return load_stats(path), True
    stats = collect_stats(onnx_path, inputs, threads)
    save_stats(path, stats)
    return stats, False
