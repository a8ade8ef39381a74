"""Streaming activation statistics for every float activation tensor of an ONNX model.

Each tensor keeps min, max, a fixed-size histogram of |x| whose range grows by merging bins, and
the same histogram of the negative values alone (so the signed distribution is known too, for the
asymmetric calibrators); memory stays bounded whatever the number of images.

Peak memory is bounded by the model's size, not the sum of its activations: the graph is cut into
consecutive pieces (topological order) whose exposed tensors fit ``max_exposed_mb``; each image
runs piece by piece, only the tensors later pieces consume are carried over, and every exposed
tensor is folded into its statistics and dropped before the next piece runs. Each piece runs the
same ONNX Runtime kernels on the same inputs as the whole graph, so the statistics are identical to
exposing everything at once (``max_exposed_mb=None``).

Results are cached on disk keyed by everything that changes the activations (``stats_cache_key``),
so trying another calibrator does not re-run the data.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_path, sha256_file

NUM_BINS = 2048
STATS_VERSION = 2  # bump when the statistics or their file change meaning (2: negative-value histogram)
DEFAULT_MAX_EXPOSED_MB = 256
UPDATE_SLICE = 1 << 22  # values binned at a time (~50 MB of temporaries)


@dataclass
class TensorStats:
    """Running statistics of one tensor. ``hist`` counts |x| over [0, NUM_BINS * bin_width);
    ``neg`` counts the negative values among them (same bins), so ``hist - neg`` is the positive side."""

    hist: np.ndarray
    bin_width: float
    minimum: float
    maximum: float
    neg: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.neg is None:
            self.neg = np.zeros_like(self.hist)

    @property
    def absmax(self) -> float:
        return max(abs(self.minimum), abs(self.maximum))

    @classmethod
    def empty(cls) -> "TensorStats":
        return cls(np.zeros(NUM_BINS, np.int64), 0.0, np.inf, -np.inf)

    def signed_hist(self) -> np.ndarray:
        """Counts over 2 * NUM_BINS bins covering [-NUM_BINS * bin_width, NUM_BINS * bin_width)."""
        return np.concatenate([self.neg[::-1], self.hist - self.neg])

    def update(self, x: np.ndarray) -> None:
        """Add ``x``'s values. Works through the tensor in slices of UPDATE_SLICE values, so the
        temporaries stay small whatever the tensor size (the result equals one pass over all of it)."""
        flat = x.ravel()
        low, high = float(flat.min()), float(flat.max())  # NaN propagates into both, inf shows in one
        if not (np.isfinite(low) and np.isfinite(high)):
            raise EdgesegError("an activation is NaN or infinite on a calibration image: the model or the "
                               "preprocessing is broken for this input; check the image and the model")
        self.minimum = min(self.minimum, low)
        self.maximum = max(self.maximum, high)
        top = max(abs(low), abs(high))
        if top == 0:
            self.hist[0] += flat.size
            return
        if self.bin_width == 0:
            self.bin_width = top / NUM_BINS * (1 + 1e-6)
        elif top >= NUM_BINS * self.bin_width:
            factor = int(np.ceil(top / (NUM_BINS * self.bin_width) * (1 + 1e-6)))
            groups = np.arange(NUM_BINS) // factor
            self.hist = np.bincount(groups, weights=self.hist, minlength=NUM_BINS).astype(np.int64)
            self.neg = np.bincount(groups, weights=self.neg, minlength=NUM_BINS).astype(np.int64)
            self.bin_width *= factor
        for start in range(0, flat.size, UPDATE_SLICE):
            part = flat[start:start + UPDATE_SLICE]
            a = np.abs(part)
            a /= self.bin_width
            idx = np.minimum(a.astype(np.int64), NUM_BINS - 1)
            del a
            self.hist += np.bincount(idx, minlength=NUM_BINS)
            self.neg += np.bincount(idx[part < 0], minlength=NUM_BINS)


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


@dataclass
class _Piece:
    """A run of consecutive nodes as its own model: ``inputs`` fed, ``exposed`` reported, ``carried``
    kept for later pieces."""

    model_bytes: bytes
    inputs: list[str]
    exposed: list[str]
    carried: list[str]
    session: object = None


def _value_infos(model, input_shape: tuple[int, ...]):
    """Shape inference with the graph input fixed to ``input_shape``: {name: ValueInfoProto}."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializers = {i.name for i in model.graph.initializer}
    graph_input = next(i for i in fixed.graph.input if i.name not in initializers)
    dims = graph_input.type.tensor_type.shape.dim
    if len(dims) == len(input_shape):
        for d, v in zip(dims, input_shape):
            d.Clear()
            d.dim_value = int(v)
    inferred = onnx.shape_inference.infer_shapes(fixed)
    return {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
            + list(inferred.graph.output)}


def _nbytes(vi) -> int | None:
    import onnx

    if vi is None or not vi.type.tensor_type.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    if any(d is None for d in dims):
        return None
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).itemsize
    return int(np.prod(dims, dtype=np.int64)) * itemsize


def _runs(model, names: list[str], infos: dict, max_exposed_mb: float | None) -> list[list]:
    """The graph's nodes in consecutive runs whose exposed tensors (those of ``names``) total <=
    ``max_exposed_mb`` (a single node may exceed it); one run when ``max_exposed_mb`` is None."""
    sizes = {n: _nbytes(infos.get(n)) for n in names}
    known = [s for s in sizes.values() if s is not None]
    fallback = max(known) if known else 0  # a tensor of unknown shape counts as the largest known one
    budget = np.inf if max_exposed_mb is None else max_exposed_mb * 2 ** 20
    runs: list[list] = [[]]
    used = 0.0
    for node in model.graph.node:
        cost = sum(sizes[o] if sizes[o] is not None else fallback for o in node.output if o in sizes)
        if runs[-1] and used + cost > budget:
            runs.append([])
            used = 0.0
        runs[-1].append(node)
        used += cost
    return runs


def _piece_model(model, run: list, k: int, inputs: list[str], outputs: list[str], infos: dict) -> bytes:
    """Run ``k`` as a serialized model of its own: ``inputs`` typed (element type only: later images may
    have another size), ``outputs`` untyped, the initializers it reads."""
    import onnx

    initializers = {i.name: i for i in model.graph.initializer}
    used_inits = [initializers[i] for i in dict.fromkeys(i for n in run for i in n.input) if i in initializers]

    def info(name: str):
        vi = infos.get(name)
        if vi is None:
            return onnx.helper.make_empty_tensor_value_info(name)
        return onnx.helper.make_tensor_value_info(name, vi.type.tensor_type.elem_type, None)

    graph = onnx.helper.make_graph(run, f"piece{k}", [info(i) for i in inputs],
                                   [onnx.helper.make_empty_tensor_value_info(o) for o in outputs], used_inits)
    piece_model = onnx.helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    piece_model.functions.extend(model.functions)
    return piece_model.SerializeToString()


def _cut(model, names: list[str], input_shape: tuple[int, ...], max_exposed_mb: float | None) -> list[_Piece]:
    """The graph as pieces to run in turn (see ``_runs``); a run nothing looks at or uses later is dropped."""
    infos = _value_infos(model, input_shape)
    runs = _runs(model, names, infos, max_exposed_mb)
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i.name for i in model.graph.input if i.name not in initializers]
    wanted = set(names)
    consumed_after: list[set[str]] = [set() for _ in runs]  # inputs needed by runs after run k
    later: set[str] = {o.name for o in model.graph.output}
    for k in range(len(runs) - 1, -1, -1):
        consumed_after[k] = set(later)
        later |= {i for n in runs[k] for i in n.input if i}
    pieces = []
    for k, run in enumerate(runs):
        produced = [o for n in run for o in n.output if o]
        exposed = ([i for i in graph_inputs if i in wanted] if k == 0 else []) + [o for o in produced if o in wanted]
        carried = [o for o in produced if o in consumed_after[k]]
        inputs = list(dict.fromkeys(i for n in run for i in n.input if i and i not in initializers
                                    and i not in produced))
        outputs = [o for o in dict.fromkeys(exposed + carried) if o not in inputs]
        if outputs:
            pieces.append(_Piece(_piece_model(model, run, k, inputs, outputs, infos), inputs, exposed, carried))
    return pieces


def iter_activation_groups(onnx_path: str | Path, inputs: Iterable[np.ndarray], names: list[str] | None = None,
                           threads: int = 0, max_exposed_mb: float | None = DEFAULT_MAX_EXPOSED_MB
                           ) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """For each (1, 3, H, W) float32 input (image index i), yields (i, group) pairs whose groups together
    hold every FP32 tensor of ``names`` (default: every activation), at most ``max_exposed_mb`` of
    exposed tensors at a time (None: all at once). The pieces are planned on the first input's shape."""
    import onnx

    from edgeseg.ort_session import make_session

    model = onnx.load(str(onnx_path))
    if names is None:
        names = activation_tensor_names(model)
    graph_input = next(i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    pieces: list[_Piece] | None = None
    for index, x in enumerate(inputs):
        if pieces is None:
            pieces = _cut(model, names, tuple(x.shape), max_exposed_mb)
            del model
            for p in pieces:
                p.session = make_session(p.model_bytes, threads, optimize=False, memory_arena=False)
                p.model_bytes = b""
            needed_after = [{i for q in pieces[k + 1:] for i in q.inputs} for k in range(len(pieces))]
        live = {graph_input: x}
        for p, needed in zip(pieces, needed_after):
            outputs = [o for o in dict.fromkeys(p.exposed + p.carried) if o not in live]
            values = dict(zip(outputs, p.session.run(outputs, {i: live[i] for i in p.inputs}))) if outputs else {}
            live.update((k, values[k]) for k in p.carried)
            group = {k: values[k] if k in values else live[k] for k in p.exposed}
            del values
            for k in [k for k in live if k not in needed]:
                del live[k]  # nothing later reads it: free it before the next piece runs
            yield index, group
            del group


def collect_stats(onnx_path: str | Path, inputs: Iterable[np.ndarray], threads: int = 0,
                  max_exposed_mb: float | None = DEFAULT_MAX_EXPOSED_MB) -> dict[str, TensorStats]:
    """Run every (1, 3, H, W) float32 array of ``inputs`` and return statistics per tensor name."""
    stats: dict[str, TensorStats] = {}
    images = -1
    for index, group in iter_activation_groups(onnx_path, inputs, threads=threads, max_exposed_mb=max_exposed_mb):
        images = index
        for name in list(group):
            stats.setdefault(name, TensorStats.empty()).update(group.pop(name))
    if images < 0:
        raise EdgesegError("the calibration set yielded no images; give a set with at least one image")
    return stats


def save_stats(path: str | Path, stats: dict[str, TensorStats]) -> None:
    names = list(stats)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, names=np.array(names), hist=np.stack([stats[n].hist for n in names]),
                     neg=np.stack([stats[n].neg for n in names]),
                     bin_width=np.array([stats[n].bin_width for n in names]),
                     minimum=np.array([stats[n].minimum for n in names]),
                     maximum=np.array([stats[n].maximum for n in names]))


def load_stats(path: str | Path) -> dict[str, TensorStats]:
    with np.load(path, allow_pickle=False) as z:
        return {str(n): TensorStats(z["hist"][i].copy(), float(z["bin_width"][i]), float(z["minimum"][i]),
                                    float(z["maximum"][i]), z["neg"][i].copy()) for i, n in enumerate(z["names"])}


def stats_cache_key(onnx_path: str | Path, identity: dict) -> str:
    """File name for the statistics of ``onnx_path`` on the inputs described by ``identity`` (JSON-able:
    whatever decides the input tensors, e.g. image hashes and preprocessing)."""
    blob = json.dumps({"onnx": sha256_file(onnx_path), "version": STATS_VERSION, "bins": NUM_BINS,
                       "inputs": identity}, sort_keys=True)
    return f"{hashlib.sha256(blob.encode()).hexdigest()[:32]}.npz"


def cached_stats(onnx_path: str | Path, identity: dict, inputs: Iterable[np.ndarray], cache_dir: str | Path,
                 threads: int = 0, max_exposed_mb: float | None = DEFAULT_MAX_EXPOSED_MB
                 ) -> tuple[dict[str, TensorStats], bool]:
    """Statistics from ``cache_dir`` when (ONNX, ``identity``) was seen, else collected and cached.
    Returns (stats, cache_hit)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / stats_cache_key(onnx_path, identity)
    if path.is_file():
        return load_stats(path), True
    stats = collect_stats(onnx_path, inputs, threads, max_exposed_mb)
    save_stats(path, stats)
    return stats, False
