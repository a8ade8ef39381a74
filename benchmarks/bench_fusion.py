"""ONNX Runtime CPU latency of the reference model: unfused vs BatchNorm-folded vs each
depthwise-separable fusion choice, measured in one run, plus per-block timings that check the
fusion cost model block by block.

    python benchmarks/bench_fusion.py [--checkpoint benchmarks/reference/deeplabv3plus_mobilenet_v2_camvid.pt]

Variants (each exported with edgeseg.export.export_onnx, opset 17, static 1x3x360x480):
  unfused        the module as is (BatchNormalization nodes kept)
  bn_fold        BatchNorm folded, separable pairs kept (= fusion strategy "keep")
  collapse_all   BatchNorm folded, every separable pair collapsed into one dense conv
  auto           the default cost model's per-block choice (edgeseg.export.fuse.CostModel)
  auto_measured  the per-block choice from the block timings below (dense vs depthwise+pointwise)
Variants with byte-identical graphs are timed once and reported as aliases.

Timing: one ORT session per variant and graph-optimization level, intra-op threads 2, inter-op 1;
warm-up, then interleaved rounds (every variant once per round, rotating order) so background load
hits all variants alike; median, p10 and p90 over ``--runs`` (>= 30 for a result; fewer marks the
output as a quick check). Level "all" is ORT's default; "disabled" shows what folding saves on a
runtime that does not fuse Conv+BN itself.

Writes benchmarks/results/fusion_cpu.json and fusion_cpu.md (or --out-dir).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CKPT = REPO / "benchmarks" / "reference" / "deeplabv3plus_mobilenet_v2_camvid.pt"
DEFAULT_CAMVID = REPO.parent / "shared" / "datasets" / "camvid"
FALLBACK_MODEL = "deeplabv3plus_mobilenet_v2"
MIN_RUNS = 30


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    import onnx
    import onnxruntime as ort

    import edgeseg

    return {
        "cpu": cpu, "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "onnxruntime": ort.__version__, "onnx": onnx.__version__, "edgeseg": edgeseg.__version__,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def load_model(checkpoint: Path, num_classes: int) -> tuple[nn.Module, dict, str]:
    from edgeseg.data import Preprocessing
    from edgeseg.models import ModelConfig, build_model

    if checkpoint.is_file():
        from edgeseg.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint)
        return ckpt.build(), ckpt.export_metadata(), f"checkpoint {checkpoint}"
    print(f"NOTE: {checkpoint} not found; using an UNTRAINED {FALLBACK_MODEL} ({num_classes} classes). Latency "
          "does not depend on the weights, but parity figures are not those of the trained reference.", file=sys.stderr)
    model = build_model(ModelConfig(FALLBACK_MODEL, num_classes)).eval()
    source = f"UNTRAINED {FALLBACK_MODEL}, {num_classes} classes ({checkpoint} not found)"
    return model, {"model": FALLBACK_MODEL, "preprocessing": Preprocessing()}, source


def session(path_or_bytes, threads: int, level: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # interleaved sessions must not spin
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[level]
    opts.log_severity_level = 3
    src = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def interleaved(sessions: dict[str, object], feeds: dict[str, dict], runs: int, warmup: int) -> dict[str, dict]:
    """Median/p10/p90 ms per session, timed in interleaved rounds with a rotating order."""
    names = list(sessions)
    for name in names:
        for _ in range(warmup):
            sessions[name].run(None, feeds[name])
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            sessions[name].run(None, feeds[name])
            times[name].append((time.perf_counter() - t) * 1000)
    return {n: {"median_ms": float(np.median(t)), "p10_ms": float(np.percentile(t, 10)),
                "p90_ms": float(np.percentile(t, 90)), "runs": len(t)} for n, t in times.items()}


def _onnx_bytes(module: nn.Module, shape: tuple[int, ...]) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), torch.randn(shape), f, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["out"])
    return f.getvalue()


def time_blocks(model: nn.Module, size: tuple[int, int], threads: int, runs: int, warmup: int) -> list[dict]:
    """Per separable block at its real input size: depthwise alone, depthwise+pointwise, and the dense conv."""
    from edgeseg.export.fuse import fuse_model

    probe = _BlockProbe()
    _, report = fuse_model(model, strategy="auto", cost=probe, input_size=size)  # the probe keeps every block
    blocks = []
    for decision, block in zip(report.blocks, probe.blocks):
        c, o = block.in_channels, block.out_channels
        k, d, s = block.kernel_size[0], block.dilation[0], block.stride[0]
        pad = (k - 1) // 2 * d
        dw = nn.Conv2d(c, c, k, s, pad, d, groups=c)
        pair = nn.Sequential(dw, nn.Conv2d(c, o, 1))
        dense = nn.Conv2d(c, o, k, s, pad, d)
        shape = (1, c, *block.input_hw)
        x = {"input": np.random.default_rng(0).standard_normal(shape, dtype=np.float32)}
        sess = {kind: session(_onnx_bytes(m, shape), threads, "all") for kind, m in
                (("dw", dw), ("pair", pair), ("dense", dense))}
        t = interleaved(sess, {kind: x for kind in sess}, runs, warmup)
        oh, ow = block.output_hw
        macs_dw, macs_pw, macs_dense = c * k * k * oh * ow, c * o * oh * ow, c * o * k * k * oh * ow
        per_mac_dense = t["dense"]["median_ms"] / macs_dense
        blocks.append({
            "name": decision.name, "in_channels": c, "out_channels": o, "kernel": k, "dilation": d, "stride": s,
            "input_hw": list(block.input_hw), "dw_ms": t["dw"]["median_ms"], "pair_ms": t["pair"]["median_ms"],
            "dense_ms": t["dense"]["median_ms"],
            "measured_choice": "collapse" if t["dense"]["median_ms"] < t["pair"]["median_ms"] else "keep",
            "depthwise_mac_cost": (t["dw"]["median_ms"] / macs_dw) / per_mac_dense,
            "pointwise_mac_cost": max(t["pair"]["median_ms"] - t["dw"]["median_ms"], 0.0) / macs_pw / per_mac_dense,
        })
    return blocks


class _BlockProbe:
    """A BlockCost that records the blocks and keeps them all."""

    def __init__(self) -> None:
        self.blocks = []

    def __call__(self, block):
        self.blocks.append(block)
        return 0.0, 1.0


class MeasuredCost:
    """BlockCost from per-block timings (keyed by block name)."""

    def __init__(self, timings: list[dict]) -> None:
        self.by_name = {b["name"]: b for b in timings}

    def __call__(self, block):
        t = self.by_name[block.name]
        return t["pair_ms"], t["dense_ms"]

    def describe(self) -> str:
        return "measured per block with ONNX Runtime CPU (depthwise+pointwise vs dense conv)"


def graph_digest(path: Path) -> str:
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    return hashlib.sha256(m.graph.SerializeToString()).hexdigest()[:16]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=DEFAULT_CKPT)
    ap.add_argument("--num-classes", type=int, default=11, help="For the untrained fallback (CamVid has 11).")
    ap.add_argument("--input-size", default="360x480")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=MIN_RUNS, help=f"Timed runs per variant (>= {MIN_RUNS} for results).")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--block-runs", type=int, default=MIN_RUNS)
    ap.add_argument("--levels", default="all,disabled", help="ORT graph optimization levels to time: all, disabled.")
    ap.add_argument("--parity-data", default=f"camvid:{DEFAULT_CAMVID}" if DEFAULT_CAMVID.is_dir() else None,
                    help="Dataset spec for parity frames (default: the shared CamVid when present, else random).")
    ap.add_argument("--parity-images", type=int, default=4)
    ap.add_argument("--out-dir", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args()

    from edgeseg.export.fuse import CostModel
    from edgeseg.export.onnx_export import export_onnx, parity_images_from_dataset

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.input_size.lower().split("x"))
    size = (h, w)
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    info = machine()
    model, meta, source = load_model(args.checkpoint, args.num_classes)
    images = None
    if args.parity_data:
        images = parity_images_from_dataset(args.parity_data, "val", args.parity_images, meta["preprocessing"], size)

    t0 = time.perf_counter()
    print(f"timing separable blocks ({args.block_runs} runs each)...", file=sys.stderr)
    block_times = time_blocks(model, size, args.threads, args.block_runs, max(1, args.warmup // 2))
    cost_model = CostModel()
    variants = {
        "unfused": {"fuse": False},
        "bn_fold": {"fuse_strategy": "keep"},
        "collapse_all": {"fuse_strategy": "collapse"},
        "auto": {"fuse_strategy": "auto"},
    }
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fusion-") as tmp:
        paths: dict[str, Path] = {}
        for name, kwargs in list(variants.items()) + [("auto_measured", {"fuse_strategy": "auto"})]:
            print(f"exporting {name}...", file=sys.stderr)
            path = Path(tmp) / f"{name}.onnx"
            cost = MeasuredCost(block_times) if name == "auto_measured" else None
            report = export_onnx(model, path, input_size=size, metadata=meta, parity_images=images, fuse_cost=cost,
                                 **kwargs)
            paths[name] = path
            fusion = report.fusion
            results[name] = {
                "graph": graph_digest(path), "nodes": report.nodes, "size_mb": report.size_bytes / 1e6,
                "parity": [{"max_abs_diff": p.max_abs_diff, "argmax_agreement": p.argmax_agreement, "ok": p.ok,
                            "source": p.source, "images": p.images} for p in report.parity],
                "params": fusion.after.params if fusion else None, "gmacs": fusion.after.macs / 1e9 if fusion else None,
                "layers": fusion.after.layers if fusion else None,
                "collapsed": [b.name for b in fusion.blocks if b.choice == "collapse"] if fusion else [],
                "cost_model": fusion.cost_model if fusion else None,
            }
            if name == "bn_fold" and fusion:
                results["unfused"].update(params=fusion.before.params, gmacs=fusion.before.macs / 1e9,
                                          layers=fusion.before.layers)
        first: dict[str, str] = {}  # graph digest -> first variant with it
        for name, r in results.items():
            r["same_graph_as"] = first.get(r["graph"])
            first.setdefault(r["graph"], name)
        timed = [n for n, r in results.items() if r["same_graph_as"] is None]
        x = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
        for level in levels:
            print(f"timing {len(timed)} graphs at ORT level {level} ({args.runs} interleaved rounds)...",
                  file=sys.stderr)
            sessions = {n: session(paths[n], args.threads, level) for n in timed}
            lat = interleaved(sessions, {n: {"input": x} for n in timed}, args.runs, args.warmup)
            for name, r in results.items():
                r.setdefault("latency", {})[level] = lat[r["same_graph_as"] or name]
    for b in block_times:
        keep, coll = cost_model(_block_from(b))
        b["cost_model_choice"] = "collapse" if coll < keep else "keep"
    info["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    out = {
        "benchmark": "fusion_cpu", "quick": args.runs < MIN_RUNS, "model": meta["model"], "source": source,
        "input": [1, 3, h, w], "threads": args.threads, "runs": args.runs, "warmup": args.warmup,
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]), "machine": info,
        "cost_model": cost_model.describe(), "variants": results, "blocks": block_times,
        "seconds": time.perf_counter() - t0,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    from edgeseg.io_utils import atomic_write_text

    atomic_write_text(args.out_dir / "fusion_cpu.json", json.dumps(out, indent=2) + "\n")
    atomic_write_text(args.out_dir / "fusion_cpu.md", markdown(out, levels))
    print(markdown(out, levels))
    return 0


def _block_from(b: dict):
    from edgeseg.export.fuse import SeparableBlock

    k, s, d = b["kernel"], b["stride"], b["dilation"]
    return SeparableBlock(name=b["name"], in_channels=b["in_channels"], out_channels=b["out_channels"],
                          kernel_size=(k, k), stride=(s, s), dilation=(d, d), input_hw=tuple(b["input_hw"]),
                          output_hw=None)


def markdown(out: dict, levels: list[str]) -> str:
    m = out["machine"]
    base = {lv: out["variants"]["unfused"]["latency"][lv]["median_ms"] for lv in levels}
    lines = [
        f"# Fusion: ONNX Runtime CPU latency, {out['model']} at {out['input'][2]}x{out['input'][3]}, batch 1",
        "",
        f"{'**QUICK CHECK (fewer than 30 runs): not a result.** ' if out['quick'] else ''}"
        f"Model: {out['source']}. {out['threads']} intra-op threads, median of {out['runs']} interleaved runs "
        f"per variant (p10-p90 in brackets) after {out['warmup']} warm-up runs.",
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), {m['platform']}; "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, edgeseg {m['edgeseg']}. "
        f"Load average at start {m['load_average_at_start']}, at end {m['load_average_at_end']} (other work on the "
        "machine inflates absolute times; interleaving spreads it over all variants).",
        "",
        f"Command: `{out['command']}`",
        "",
        "| variant | nodes | params (M) | GMACs | layers | collapsed blocks | "
        + " | ".join(f"ORT {lv} ms" for lv in levels) + " | " + " | ".join(f"vs unfused ({lv})" for lv in levels)
        + " | max abs logit diff | argmax agreement % |",
        "|---|" + "---:|" * (5 + 2 * len(levels)) + "---:|---:|",
    ]
    for name, r in out["variants"].items():
        lat = " | ".join(f"{r['latency'][lv]['median_ms']:.1f} [{r['latency'][lv]['p10_ms']:.1f}-"
                         f"{r['latency'][lv]['p90_ms']:.1f}]" for lv in levels)
        speed = " | ".join(f"{base[lv] / r['latency'][lv]['median_ms']:.2f}x" for lv in levels)
        alias = f" (= {r['same_graph_as']})" if r["same_graph_as"] else ""
        parity = r["parity"][0]
        lines.append(f"| {name}{alias} | {r['nodes']} | {r['params'] / 1e6:.3f} | {r['gmacs']:.2f} | {r['layers']} | "
                     f"{len(r['collapsed'])} | {lat} | {speed} | {parity['max_abs_diff']:.1e} | "
                     f"{parity['argmax_agreement']:.3f} |")
    lines += [
        "",
        f"Per separable block at its real input size (ORT level all, median of the block runs); default cost model: "
        f"{out['cost_model']}. Effective MAC costs are relative to the block's dense conv.",
        "",
        "| block | C->O | k | dil | input HxW | dw ms | dw+pw ms | dense ms | measured | cost model | "
        "depthwise MAC cost | 1x1 MAC cost |",
        "|---|---|---:|---:|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for b in out["blocks"]:
        lines.append(f"| {b['name']} | {b['in_channels']}->{b['out_channels']} | {b['kernel']} | {b['dilation']} | "
                     f"{b['input_hw'][0]}x{b['input_hw'][1]} | {b['dw_ms']:.2f} | {b['pair_ms']:.2f} | "
                     f"{b['dense_ms']:.2f} | {b['measured_choice']} | {b['cost_model_choice']} | "
                     f"{b['depthwise_mac_cost']:.1f} | {b['pointwise_mac_cost']:.1f} |")
    agree = sum(b["measured_choice"] == b["cost_model_choice"] for b in out["blocks"])
    lines += ["", f"Cost model agrees with the measured choice on {agree}/{len(out['blocks'])} blocks.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
