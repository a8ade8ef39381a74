"""One runner interface for every backend (in the style of Polygraphy's runners).

    with OrtRunner("model.onnx") as runner:      # activate() on enter, deactivate() on exit
        logits = runner.infer(batch)              # (N, 3, H, W) float32 -> (N, C, H, W) logits
        runner.last_latency_ms

Inputs are checked at the door against the runner's ``InputSpec``: rank, channels, dtype and
the shape bounds the model was exported / built for. An error names the bound and the fix,
never a crash inside the runtime or a silently wrong mask.
"""
from __future__ import annotations

import abc
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeseg.errors import EdgesegError


@dataclass(frozen=True)
class InputSpec:
    """The network input: name, dtype, and inclusive (min, max) bounds per NCHW dimension."""

    name: str
    dtype: np.dtype
    min_shape: tuple[int, int, int, int]
    max_shape: tuple[int, int, int, int]

    @classmethod
    def fixed(cls, name: str, shape: tuple[int, int, int, int], dtype=np.float32) -> "InputSpec":
        return cls(name, np.dtype(dtype), tuple(shape), tuple(shape))

    def check(self, x: Any) -> None:
        """Raise EdgesegError unless ``x`` (numpy array or torch tensor) fits this spec."""
        shape = tuple(int(s) for s in x.shape)
        dtype = np.dtype(str(x.dtype).replace("torch.", ""))
        if dtype != self.dtype:
            raise EdgesegError(f"input {self.name!r} must be {self.dtype}, got {dtype}; convert the batch "
                               f"(e.g. x.astype(np.{self.dtype}))")
        if len(shape) != 4 or shape[1] != self.min_shape[1]:
            raise EdgesegError(f"input {self.name!r} must be (N, {self.min_shape[1]}, H, W), got {shape}; "
                               "pass a batch of preprocessed images in NCHW layout")
        for axis, label in ((0, "batch"), (2, "height"), (3, "width")):
            lo, hi = self.min_shape[axis], self.max_shape[axis]
            if not lo <= shape[axis] <= hi:
                bound = f"exactly {lo}" if lo == hi else f"between {lo} and {hi}"
                raise EdgesegError(f"input {label} {shape[axis]} is outside the model's profile ({label} must be "
                                   f"{bound}); resize the input or rebuild with wider shape bounds")


UNBOUNDED = 1 << 20


def spec_from_dims(name: str, dims: list[int | None], dtype: Any, bounds: dict[str, Any] | None) -> InputSpec:
    """The InputSpec of an ONNX image input: static dims as they are, dynamic ones (None) from the
    export's shape bounds (edgeseg.shape_bounds metadata), else 1..unbounded."""
    if len(dims) != 4:
        raise EdgesegError(f"{name!r} has rank {len(dims)}; edgeseg runs (N, 3, H, W) image models; re-export")
    profile = (bounds or {}).get(name)
    lo = [d if d is not None else (profile["min"][i] if profile else 1) for i, d in enumerate(dims)]
    hi = [d if d is not None else (profile["max"][i] if profile else UNBOUNDED) for i, d in enumerate(dims)]
    return InputSpec(name, np.dtype(dtype), tuple(lo), tuple(hi))


class Runner(abc.ABC):
    """Base runner: subclasses implement ``_activate``, ``_infer`` and optionally ``_deactivate``.

    ``inference_precision`` is what the runtime computes float layers in when that differs from the
    model's own types or is a runtime choice (OpenVINO's f32 / bf16 / f16 hint, read back from the
    compiled model); None: the model's own types."""

    name: str = "runner"
    # True when infer() may run from several threads at once: the runtime call is thread-safe and the
    # runner keeps no per-call state (last_latency_ms aside: it is the latest call's, from any thread).
    thread_safe: bool = False
    inference_precision: str | None = None

    def __init__(self) -> None:
        self.is_active = False
        self.last_latency_ms: float | None = None

    # -- lifecycle -------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    # -- inference -------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def input_spec(self) -> InputSpec:
        """Valid after activate()."""

    def infer(self, x: Any) -> Any:
        """Logits (N, C, H, W) for a preprocessed batch; the batch is checked first."""
        if not self.is_active:
            raise EdgesegError(f"{self.name} runner is not active; use `with runner:` or call activate() first")
        self.input_spec.check(x)
        start = time.perf_counter()
        out = self._infer(x)
        self.last_latency_ms = (time.perf_counter() - start) * 1000.0
        return out

    def __call__(self, x: Any) -> Any:
        return self.infer(x)

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _infer(self, x: Any) -> Any: ...

    def _deactivate(self) -> None:
        pass


def as_numpy(x: Any) -> np.ndarray:
    """A numpy batch from a numpy array or a torch tensor (copied to the CPU)."""
    return x if isinstance(x, np.ndarray) else x.detach().cpu().numpy()


class FileRunner(Runner):
    """A runner of a model file whose InputSpec is read from the model on activation (``self._spec``)."""

    _spec: InputSpec | None = None

    @property
    def input_spec(self) -> InputSpec:
        if self._spec is None:
            raise EdgesegError("the runner is not active; call activate() first")
        return self._spec
