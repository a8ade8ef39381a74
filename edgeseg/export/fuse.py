"""Numerically equivalent model simplification: BatchNorm folding and depthwise-separable collapse.

``fuse_model(model)`` returns a fused deep copy in eval mode and a ``FusionReport``. The copy
computes the same function as the original (float32 rounding aside), so it can replace the
original anywhere downstream (export, quantization).

1. **BatchNorm folding.** A ``BatchNorm2d`` (eval statistics) that directly consumes the output of a
   ``Conv2d`` / ``ConvTranspose2d`` is folded into that conv's weight and bias and replaced by
   ``nn.Identity`` (timm's ``BatchNormAct2d`` by its drop/act tail). Only module chains whose data
   flow is known are touched: ``nn.Sequential`` (and subclasses that keep its forward), torchvision's
   ``IntermediateLayerGetter``, and the custom blocks listed in ``_KNOWN_CHAINS`` (torchvision ResNet
   blocks, timm Xception blocks). Modules with forward hooks are never replaced. BatchNorms elsewhere
   are left alone and listed in ``FusionReport.unfolded_bn``.
2. **Depthwise-separable collapse.** After folding, a depthwise conv (groups == in == out channels)
   followed, with only ``Identity``/``Dropout`` in between, by a 1x1 conv is one linear map:
   ``W[o, c] = pw[o, c] * dw[c, 0]``, ``b = pw @ b_dw + b_pw``, with the depthwise conv's stride,
   padding and dilation. The dense conv always has more multiply-adds (``C*O*k*k`` vs
   ``C*k*k + C*O`` per pixel); it only wins where the backend runs depthwise convs far less
   efficiently than dense ones. ``strategy="auto"`` decides per block with a ``BlockCost``:
   by default the ``CostModel`` below, or any callable (e.g. one that times both forms on the
   target runtime, as benchmarks/bench_fusion.py does).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from edgeseg.errors import EdgesegError
from edgeseg.models.complexity import Complexity, measure_complexity
from edgeseg.models.layers import ASPPPooling

Strategy = Literal["auto", "keep", "collapse"]
STRATEGIES: tuple[str, ...] = ("auto", "keep", "collapse")
_CONVS = (nn.Conv2d, nn.ConvTranspose2d)


@dataclass(frozen=True)
class SeparableBlock:
    """A depthwise conv + pointwise conv pair that can be collapsed into one dense conv."""

    name: str  # "<depthwise module>+<pointwise module>"
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    input_hw: tuple[int, int] | None  # seen at the measurement pass; None if the block did not run
    output_hw: tuple[int, int] | None

    @property
    def macs_per_pixel_keep(self) -> int:
        kh, kw = self.kernel_size
        return self.in_channels * kh * kw + self.in_channels * self.out_channels

    @property
    def macs_per_pixel_collapse(self) -> int:
        kh, kw = self.kernel_size
        return self.in_channels * self.out_channels * kh * kw


class BlockCost(Protocol):
    """Estimated (keep, collapse) run time of a block, in any consistent unit."""

    def __call__(self, block: SeparableBlock) -> tuple[float, float]: ...


@dataclass(frozen=True)
class CostModel:
    """Run time of a block as multiply-adds weighted by how fast the backend runs each conv kind,
    relative to a dense k x k conv (weight 1):

        keep     = depthwise_mac_cost * C*k*k + pointwise_mac_cost * C*O
        collapse = C*O*k*k

    so a block collapses iff ``O < depthwise_mac_cost * k*k / (k*k - pointwise_mac_cost)`` (about
    9.6 output channels with the defaults). Depthwise convs are memory-bound on CPUs and GPUs alike;
    on ONNX Runtime CPU (MLAS, 2 threads) this project measured a depthwise MAC at several to tens of
    dense-conv MACs, growing with tensor size, and a 1x1 MAC at about one. The defaults sit at the
    low end, so only very narrow blocks collapse; real DeepLab heads (256 channels) are far from the
    threshold, so the exact values matter little there. benchmarks/bench_fusion.py times every
    block both ways on the target machine and reports where this model and the measurement
    disagree; ``fuse_model(cost=...)`` also accepts such a measured cost.
    """

    depthwise_mac_cost: float = 8.0
    pointwise_mac_cost: float = 1.5
    backend: str = "onnxruntime-cpu"

    def __call__(self, block: SeparableBlock) -> tuple[float, float]:
        kh, kw = block.kernel_size
        c, o = block.in_channels, block.out_channels
        keep = self.depthwise_mac_cost * c * kh * kw + self.pointwise_mac_cost * c * o
        return keep, float(c * o * kh * kw)

    def describe(self) -> str:
        return (f"{self.backend}: depthwise MAC = {self.depthwise_mac_cost:g}, 1x1 MAC = "
                f"{self.pointwise_mac_cost:g} dense MACs")


@dataclass(frozen=True)
class BlockDecision:
    name: str
    in_channels: int
    out_channels: int
    kernel_size: int
    dilation: int
    stride: int
    macs_before: int  # depthwise + pointwise, one image at the report's input size
    macs_after: int  # after the choice (equal to macs_before when kept)
    choice: Literal["keep", "collapse"]
    reason: str


@dataclass
class FusionReport:
    strategy: str
    cost_model: str
    input_size: tuple[int, int]
    before: Complexity
    after: Complexity
    folded_bn: int
    unfolded_bn: list[str] = field(default_factory=list)
    blocks: list[BlockDecision] = field(default_factory=list)

    @property
    def collapsed(self) -> int:
        return sum(b.choice == "collapse" for b in self.blocks)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["collapsed"] = self.collapsed
        return d


def fuse_model(model: nn.Module, *, strategy: Strategy = "auto", cost: BlockCost | None = None,
               input_size: tuple[int, int] = (360, 480)) -> tuple[nn.Module, FusionReport]:
    """Fold BatchNorms and collapse depthwise-separable pairs per ``strategy``.

    ``strategy``: "keep" folds BatchNorm only, "collapse" collapses every eligible pair, "auto"
    collapses where ``cost`` (default ``CostModel()``) says the dense conv is cheaper.
    ``input_size`` (H, W) is used for the before/after multiply-add counts in the report.
    The input model is not modified; the result is a deep copy in eval mode.
    """
    if strategy not in STRATEGIES:
        raise EdgesegError(f"fusion strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}; pick one")
    cost = cost or CostModel()
    fused = copy.deepcopy(model).eval()
    shapes = _record_conv_shapes(fused)
    before = measure_complexity(fused, input_size)
    shapes.remove()

    folded, unfolded = _fold_all_batchnorms(fused)
    decisions = _collapse_separable(fused, strategy, cost, shapes.seen)
    after = measure_complexity(fused, input_size)
    report = FusionReport(strategy=strategy, cost_model=getattr(cost, "describe", lambda: repr(cost))(),
                          input_size=tuple(input_size), before=before, after=after, folded_bn=folded,
                          unfolded_bn=unfolded, blocks=decisions)
    return fused, report


# ----------------------------------------------------------------------------- module chains

# Custom blocks (by module.qualname, so nothing is imported) whose forward applies these attributes in
# order, each output used only by the next: torchvision ResNet blocks, timm ConvNormAct and Xception.
_KNOWN_CHAINS: dict[str, list[list[str]]] = {
    "torchvision.models.resnet.Bottleneck": [["conv1", "bn1"], ["conv2", "bn2"], ["conv3", "bn3"]],
    "torchvision.models.resnet.BasicBlock": [["conv1", "bn1"], ["conv2", "bn2"]],
    "timm.layers.conv_bn_act.ConvNormAct": [["conv", "bn"]],
    "timm.models.xception_aligned.SeparableConv2d": [["conv_dw", "bn_dw", "act_dw", "conv_pw", "bn_pw", "act_pw"]],
}
_SEQUENTIAL_FORWARD = (ASPPPooling,)  # overrides forward but applies its children in order first


def _chains(module: nn.Module) -> list[list[str]]:
    """Lists of child names that form linear chains (each output feeds only the next child)."""
    if isinstance(module, nn.Sequential) and (
            type(module).forward is nn.Sequential.forward or isinstance(module, _SEQUENTIAL_FORWARD)):
        return [list(module._modules)]
    if type(module).__name__ == "IntermediateLayerGetter" and hasattr(module, "return_layers"):
        # torchvision: applies its children in order and also returns the outputs of ``return_layers``,
        # so a returned module's output is observed and must end a chain
        chains, current = [], []
        for name in module._modules:
            current.append(name)
            if name in module.return_layers:
                chains.append(current)
                current = []
        return chains + ([current] if current else [])
    chains = _KNOWN_CHAINS.get(f"{type(module).__module__}.{type(module).__qualname__}", [])
    return [[n for n in chain if getattr(module, n, None) is not None] for chain in chains]


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


# ----------------------------------------------------------------------------- BatchNorm folding

def _post_bn(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What replaces a folded BatchNorm: Identity, or the activation tail of a BN+act module."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act"):
        return nn.Sequential(getattr(bn, "drop", nn.Identity()), bn.act)
    return None


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Conv2d | nn.ConvTranspose2d, bn: nn.BatchNorm2d) -> None:
    """In place: ``conv`` followed by ``bn`` (eval statistics) becomes ``conv`` alone.

    Conv2d weight is [Cout, Cin/g, kh, kw]; ConvTranspose2d weight is [Cin, Cout/g, kh, kw], so for
    it the per-output-channel scale is applied along dim 1 within each group.
    """
    scale = (bn.weight.double() if bn.weight is not None else torch.ones_like(bn.running_var, dtype=torch.float64))
    scale = scale / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() if bn.bias is not None else torch.zeros_like(scale)
    w = conv.weight.double()
    if isinstance(conv, nn.ConvTranspose2d):
        g = conv.groups
        cin, cout_g = w.shape[0], w.shape[1]
        w = (w.reshape(g, cin // g, cout_g, *w.shape[2:]) * scale.reshape(g, 1, cout_g, 1, 1)).reshape_as(w)
    else:
        w = w * scale.reshape(-1, 1, 1, 1)
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    b = (b - bn.running_mean.double()) * scale + shift
    conv.weight.copy_(w.to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(b.to(conv.weight.dtype))
    else:
        conv.bias.copy_(b.to(conv.bias.dtype))


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    if not isinstance(conv, _CONVS) or not isinstance(bn, nn.BatchNorm2d):
        return False
    if bn.running_mean is None or bn.running_var is None or _has_hooks(conv) or _has_hooks(bn):
        return False
    out_ch = conv.out_channels
    return bn.num_features == out_ch and _post_bn(bn) is not None


def _fold_all_batchnorms(model: nn.Module) -> tuple[int, list[str]]:
    folded: set[int] = set()
    for parent_name, parent in list(model.named_modules()):
        for chain in _chains(parent):
            prev: tuple[str, nn.Module] | None = None
            for name in chain:
                child = getattr(parent, name)
                if isinstance(child, nn.Identity):
                    continue
                if prev is not None and _foldable(prev[1], child):
                    fold_bn_into_conv(prev[1], child)
                    setattr(parent, name, _post_bn(child))
                    folded.add(id(child))
                    prev = None
                    continue
                prev = (name, child)
    unfolded = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    return len(folded), unfolded


# ----------------------------------------------------------------------------- separable collapse

def _is_depthwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.groups == m.in_channels == m.out_channels and m.groups > 1
            and not _has_hooks(m))


def _is_pointwise(m: nn.Module, channels: int) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.groups == 1
            and m.in_channels == channels and m.padding in ((0, 0), "valid") and m.dilation == (1, 1)
            and not _has_hooks(m))


def _passthrough(m: nn.Module) -> bool:
    return isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and not m.training)


@torch.no_grad()
def collapse_separable(dw: nn.Conv2d, pw: nn.Conv2d) -> nn.Conv2d:
    """The dense conv equal to ``pw(dw(x))`` (no non-linearity in between)."""
    k = pw.weight[:, :, 0, 0].double()  # [O, C]
    d = dw.weight[:, 0].double()  # [C, kh, kw]
    dense = nn.Conv2d(dw.in_channels, pw.out_channels, dw.kernel_size, stride=dw.stride, padding=dw.padding,
                      dilation=dw.dilation, groups=1, bias=True, padding_mode=dw.padding_mode)
    dense.weight.copy_((k[:, :, None, None] * d[None]).to(dw.weight.dtype))
    b_dw = dw.bias.double() if dw.bias is not None else torch.zeros(dw.in_channels, dtype=torch.float64)
    b_pw = pw.bias.double() if pw.bias is not None else torch.zeros(pw.out_channels, dtype=torch.float64)
    dense.bias.copy_((k @ b_dw + b_pw).to(dw.weight.dtype))
    return dense.to(dw.weight.device).train(dw.training)


class _ShapeRecorder:
    def __init__(self) -> None:
        self.seen: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}
        self.handles: list[Any] = []

    def hook(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.seen[id(module)] = (tuple(args[0].shape[-2:]), tuple(output.shape[-2:]))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _record_conv_shapes(model: nn.Module) -> _ShapeRecorder:
    rec = _ShapeRecorder()
    for m in model.modules():
        if _is_depthwise(m):
            rec.handles.append(m.register_forward_hook(rec.hook))
    return rec


def _decide(block: SeparableBlock, strategy: str, cost: BlockCost) -> tuple[str, str]:
    if strategy == "keep":
        return "keep", "strategy keep"
    if strategy == "collapse":
        return "collapse", "strategy collapse"
    keep_cost, collapse_cost = cost(block)
    ratio = collapse_cost / keep_cost if keep_cost > 0 else float("inf")
    if collapse_cost < keep_cost:
        return "collapse", f"cost dense/separable {ratio:.2f} < 1"
    return "keep", f"cost dense/separable {ratio:.2f} >= 1"


def _collapse_separable(model: nn.Module, strategy: str, cost: BlockCost,
                        shapes: dict[int, tuple[tuple[int, int], tuple[int, int]]]) -> list[BlockDecision]:
    decisions: list[BlockDecision] = []
    for parent_name, parent in list(model.named_modules()):
        for chain in _chains(parent):
            i = 0
            while i < len(chain):
                dw = getattr(parent, chain[i])
                j = i + 1
                while j < len(chain) and _passthrough(getattr(parent, chain[j])):
                    j += 1
                pw = getattr(parent, chain[j]) if j < len(chain) else None
                if not (_is_depthwise(dw) and pw is not None and _is_pointwise(pw, dw.out_channels)):
                    i += 1
                    continue
                prefix = f"{parent_name}." if parent_name else ""
                in_hw, out_hw = shapes.get(id(dw), (None, None))
                block = SeparableBlock(name=f"{prefix}{chain[i]}+{prefix}{chain[j]}", in_channels=dw.in_channels,
                                       out_channels=pw.out_channels, kernel_size=tuple(dw.kernel_size),
                                       stride=tuple(dw.stride), dilation=tuple(dw.dilation),
                                       input_hw=in_hw, output_hw=out_hw)
                choice, reason = _decide(block, strategy, cost)
                pixels = out_hw[0] * out_hw[1] if out_hw else 0
                if out_hw is None:
                    reason += " (block did not run at the report's input size: 0 MACs)"
                macs_before = block.macs_per_pixel_keep * pixels
                macs_after = block.macs_per_pixel_collapse * pixels if choice == "collapse" else macs_before
                decisions.append(BlockDecision(
                    name=block.name, in_channels=block.in_channels, out_channels=block.out_channels,
                    kernel_size=block.kernel_size[0], dilation=block.dilation[0], stride=block.stride[0],
                    macs_before=macs_before, macs_after=macs_after, choice=choice, reason=reason))
                if choice == "collapse":
                    setattr(parent, chain[i], collapse_separable(dw, pw))
                    setattr(parent, chain[j], nn.Identity())
                i = j + 1
    return decisions


__all__ = ["STRATEGIES", "BlockCost", "BlockDecision", "CostModel", "FusionReport", "SeparableBlock",
           "collapse_separable", "fold_bn_into_conv", "fuse_model"]
