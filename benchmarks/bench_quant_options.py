"""INT8 mIoU of the reference model per quantization option, ONNX Runtime CPU: chosen on held-out
CamVid train images, reported on CamVid val.

    nice -n 10 python benchmarks/bench_quant_options.py [--choose-count 60]

1. export the reference checkpoint (fused, opset 17, 1x3x360x480);
2. activation statistics once from the committed calibration manifest (100 class-stratified CamVid
   train images), bounded-memory pass;
3. for each option set (below) build the INT8 model from the same statistics (bias correction: its
   own pass over the first Int8Options.bias_correction_images calibration images) and measure mIoU
   on (a) ``--choose-count`` CamVid train images NOT in the calibration set ("choose": the split the
   defaults are chosen on) and (b) all of CamVid val ("report"), with ONNX Runtime's CPU provider;
4. option sets (entropy calibrator, the default): today's pipeline, then each option added in turn,
   for the `cpu` layout and the `trt` layout (run in ONNX Runtime: its TensorRT accuracy may differ
   slightly); for `cpu` also the defaults with one option removed at a time (the effect of each given
   the others); and the MSE calibrator with and without the U8 search. Results are rewritten after
   every row. Statistics come from edgeseg's statistics cache when this model and set were seen.
Writes benchmarks/results/quant_options_cpu.json and .md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

from common import CAMVID, REFERENCE_CKPT, REPO, machine, write_results

MANIFEST = REPO / "calibration" / "camvid-train-100-e44c1d0e.json"
OPTION_FIELDS = ("input_range", "exact_clip", "u8_search", "bias_correction")  # Int8Options' switches, row order


class _Subset:
    """The samples ``indices`` of a dataset (evaluate() needs len, [i], num_classes, ignore_index)."""

    def __init__(self, dataset, indices: list[int]) -> None:
        self.dataset, self.indices = dataset, indices
        self.num_classes, self.ignore_index = dataset.num_classes, dataset.ignore_index

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", type=Path, default=REFERENCE_CKPT)
    ap.add_argument("--choose-count", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=None,
                    help="Shared by concurrent runs: each row is claimed by one run and its result kept here.")
    ap.add_argument("--report-only", action="store_true",
                    help="Rewrite the report from --workdir's rows (e.g. after a run was cut short).")
    args = ap.parse_args()
    if args.report_only:
        from common import RESULTS

        from edgeseg.quantize.ptq import Int8Options

        header = json.loads((RESULTS / "quant_options_cpu.json").read_text())
        header["machine"]["command"] += " (report rewritten with --report-only)"
        _write(header, Int8Options(), _rows(args.workdir, _plans(), wait=False), _plans())
        return

    from edgeseg.backends.onnxruntime import OrtRunner
    from edgeseg.data.spec import open_dataset
    from edgeseg.export.metadata import read_preprocessing
    from edgeseg.export.onnx_export import export_onnx
    from edgeseg.models.checkpoint import load_checkpoint
    from edgeseg.quantize.calib_set import iter_calibration_inputs, load_manifest
    from edgeseg.quantize.histograms import cached_stats
    from edgeseg.quantize.ptq import Int8Options, build_int8, default_cache_dir
    from edgeseg.train.evaluate import evaluate

    ckpt = load_checkpoint(args.checkpoint)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="edgeseg-qopts-"))
    work.mkdir(parents=True, exist_ok=True)
    fp32 = work / f"model-{os.getpid()}.onnx"
    export_onnx(ckpt.build(), fp32, input_size=(360, 480), metadata=ckpt.export_metadata())
    pre = read_preprocessing(fp32)
    manifest = load_manifest(MANIFEST)
    calib_paths = {im["path"] for im in manifest.images}
    train = open_dataset(f"camvid:{CAMVID}", "train")
    held_out = [i for i in range(len(train))
                if Path(train.image_path(i)).relative_to(train.root).as_posix() not in calib_paths]
    step = max(1, len(held_out) // args.choose_count)
    splits = {"choose": _Subset(train, held_out[::step][:args.choose_count]),
              "val": open_dataset(f"camvid:{CAMVID}", "val")}

    def miou(path: Path) -> dict[str, float]:
        with OrtRunner(path, threads=args.threads) as runner:
            return {k: round(evaluate(runner, d, pre, batch_size=1).miou(), 3) for k, d in splits.items()}

    def inputs():
        return iter_calibration_inputs(manifest, pre, CAMVID)

    t = time.time()
    stats, _ = cached_stats(fp32, {"manifest": manifest.sha256, "preprocessing": pre.to_dict()}, inputs(),
                            default_cache_dir(), threads=args.threads)
    stats_seconds = time.time() - t
    results: dict = {"machine": machine(), "checkpoint": str(args.checkpoint.relative_to(REPO)),
                     "manifest": str(MANIFEST.relative_to(REPO)), "calib_images": manifest.count,
                     "choose_images": len(splits["choose"]), "val_images": len(splits["val"]),
                     "stats_seconds": round(stats_seconds, 1), "rows": []}
    results["fp32"] = _claimed(work / "fp32.json", lambda: miou(fp32), wait=True)
    print("fp32", results["fp32"], flush=True)

    default = Int8Options()
    plans = _plans()
    for k, (layout, calibrator, label, options) in enumerate(plans):
        def build(layout=layout, calibrator=calibrator, options=options, k=k) -> dict:
            path = work / f"int8-{k}.onnx"
            t = time.time()
            build_int8(fp32, path, stats, layout=layout, calibrator=calibrator, preprocessing=pre, options=options,
                       calib_inputs=inputs)
            return {"build_seconds": round(time.time() - t, 1), **miou(path)}

        _claimed(work / f"row-{k}.json", build)
        _write(results, default, _rows(work, plans, wait=False), plans)  # what is measured so far, by any run
    _write(results, default, _rows(work, plans, wait=True), plans)


def _plans() -> list[tuple[str, str, str, object]]:
    """(layout, calibrator, label, options) per row, most informative first."""
    from edgeseg.quantize.layouts import get_layout
    from edgeseg.quantize.ptq import Int8Options

    today = Int8Options(input_range=False, exact_clip=False, u8_search=False, bias_correction=False)
    default = Int8Options(input_range=True, exact_clip=True, u8_search=True, bias_correction=True)  # all on
    fields = OPTION_FIELDS
    # most informative first (results are written after every row, so a cut-short run still reports)
    plans = [
        ("cpu", "entropy", "today (all options off)", today), ("cpu", "entropy", "all on", default),
        ("trt", "entropy", "today (all options off)", today), ("trt", "entropy", "all on", default)]
    for layout in ("cpu", "trt"):
        current = today
        for f in fields[:-1]:
            if get_layout(layout).symmetric_activations and f == "u8_search":
                continue  # a symmetric layout has no U8 search
            current = dataclasses.replace(current, **{f: True})
            plans.append((layout, "entropy", f"+ {f}", current))
    for f in fields[:-1]:
        plans.append(("cpu", "entropy", f"all on - {f}", dataclasses.replace(default, **{f: False})))
    plans.append(("cpu", "mse", "all on", default))
    plans.append(("cpu", "mse", "all on - u8_search", dataclasses.replace(default, u8_search=False)))
    return plans


def _rows(work: Path, plans: list, wait: bool) -> list[dict]:
    rows = []
    for k, (layout, calibrator, label, options) in enumerate(plans):
        path = work / f"row-{k}.json"
        measured = _claimed(path, None, wait=True) if wait else (json.loads(path.read_text()) if path.is_file() else None)
        if measured is not None:
            rows.append({"layout": layout, "calibrator": calibrator, "options": label, **dataclasses.asdict(options),
                         **measured})
    return rows


def _claimed(path: Path, measure, wait: bool = False) -> dict | None:
    """The result stored at ``path``; else, unless another run has claimed it, measure it here and store it.
    ``wait``: block until a claimed result appears (measuring it here if nobody claimed it)."""
    while True:
        if path.is_file():
            return json.loads(path.read_text())
        try:
            os.close(os.open(path.with_suffix(".claim"), os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            if not wait:
                return None
            time.sleep(5)
            continue
        if measure is None:
            raise RuntimeError(f"{path}: claimed, never measured")
        value = measure()
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)
        return value


def _choice(rows: list[dict], default) -> str:
    """The rule the defaults are checked by, applied to this run's rows (choose split only; val is not used)."""
    cpu = {r["options"]: r for r in rows if r["layout"] == "cpu" and r["calibrator"] == "entropy"}
    candidates = [r for r in rows if r["bias_correction"]]
    if not candidates or "all on" not in cpu:
        return "Choice: not enough rows measured to apply the rule.\n"
    best = max(candidates, key=lambda r: r["choose"])
    fields = OPTION_FIELDS
    is_default = best["calibrator"] == "entropy" and all(best[k] == getattr(default, k) for k in fields)
    effects = "; ".join(f"removing {f}: {cpu[f'all on - {f}']['choose'] - cpu['all on']['choose']:+.2f}"
                        for f in fields[:-1] if f"all on - {f}" in cpu)
    on = ", ".join(k for k in fields if getattr(default, k)) or "none"
    return (f"Choice (rule: the highest choose mIoU among configurations with bias correction on; val is not "
            f"used for it): `{best['layout']}` {best['calibrator']} \"{best['options']}\" ({best['choose']:.2f} on "
            f"choose), which {'is' if is_default else 'is NOT'} the shipped default (`Int8Options()`: entropy with "
            f"{on} on). Effect of each option given the others (`cpu`, entropy, choose mIoU vs all on): {effects}.\n")


def _write(results: dict, default, rows: list[dict], plans: list) -> None:
    results = {**results, "rows": rows}
    done = {(r["layout"], r["calibrator"], r["options"]) for r in rows}
    missing = [f"`{layout}` {calibrator} {label}" for layout, calibrator, label, _ in plans
               if (layout, calibrator, label) not in done]
    f = results["fp32"]
    lines = "\n".join(
        f"| `{r['layout']}` | {r['calibrator']} | {r['options']} | {r['choose']:.2f} ({r['choose'] - f['choose']:+.2f}) "
        f"| {r['val']:.2f} ({r['val'] - f['val']:+.2f}) |" for r in results["rows"])
    md = f"""# INT8 quantization options: mIoU on CamVid, ONNX Runtime CPU

Reference checkpoint `{results['checkpoint']}` at 1x3x360x480; statistics from `{results['manifest']}`
({results['calib_images']} CamVid train images). Options are chosen on **choose** =
{results['choose_images']} CamVid train images outside the calibration set and reported on **val** = all
{results['val_images']} CamVid val images. Every model is run by ONNX Runtime's CPU provider (the `trt` layout
too: its TensorRT accuracy may differ slightly). Bias correction uses the first
{default.bias_correction_images} calibration images. Calibrator: entropy unless stated.

FP32: choose {f['choose']:.2f}, val {f['val']:.2f}. Cells: mIoU (difference to FP32).

| layout | calibrator | options | choose mIoU | val mIoU |
|---|---|---|---|---|
{lines}

Options: `input_range` = the input's range from the preprocessing; `exact_clip` = Clip/ReLU6 outputs over
[0, 6]; `u8_search` = entropy/MSE searching the asymmetric U8 quantizer (`cpu` layout); `bias_correction` =
per-Conv bias shift to the FP32 output means. "+ x" rows add options in turn to today's pipeline;
"all on - x" rows remove one from all four.

{_choice(rows, default)}
""" + (f"\nNot measured in this run (cut short for time): {'; '.join(missing)}.\n" if missing else "")
    write_results("quant_options_cpu", results, md)


if __name__ == "__main__":
    main()
