"""`edgeseg infer`: image sets, a video round trip, decode errors, bounded memory, clean stops, one-line errors."""
from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import edgeseg
from edgeseg.cli import main
from edgeseg.pipeline.infer import infer
from edgeseg.pipeline.predict import BatchPredictor, resolve_batch
from edgeseg.pipeline.sources import Frame
from edgeseg.pipeline.threaded import MAX_CONSECUTIVE_ERRORS, run_pipeline
from edgeseg.pipeline.overlay import blend, legend

cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is not installed")

SPEC = "synthetic:64x96"


@pytest.fixture(scope="module")
def bundle(tiny_dynamic_bundle: Path) -> Path:
    """The session's tiny fp32 bundle with a dynamic batch dim (tests/conftest.py)."""
    return tiny_dynamic_bundle


@pytest.fixture(scope="module")
def seg(bundle):
    s = edgeseg.load(bundle, backend="ort")
    yield s
    s.close()


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def test_image_set_writes_labels_masks_and_overlays(bundle, seg, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    images.mkdir()
    sizes = {"a": (64, 96), "b": (120, 200), "c": (47, 53)}  # model size, larger, odd and smaller
    frames = {}
    for name, (h, w) in sizes.items():
        frames[name] = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(frames[name]).save(images / f"{name}.png")
    (images / "broken.jpg").write_bytes(b"not a jpeg")  # skipped and counted, not fatal
    result = infer(bundle, str(images), tmp_path / "out", backend="ort")
    assert result.stats.frames == 3 and result.stats.decode_errors == 1 and "broken.jpg" in result.stats.errors[0]
    assert result.batch == 4 and result.stats.inferred == 3  # dynamic batch: up to 4 frames per call
    palette = np.asarray(seg.palette, np.uint8)
    for name, frame in frames.items():
        labels_img = Image.open(tmp_path / "out" / "labels" / f"{name}.png")
        assert labels_img.mode == "L" and labels_img.size == (frame.shape[1], frame.shape[0])
        labels = np.asarray(labels_img)
        assert labels.max() < len(seg.classes)
        assert _agreement(labels, seg(frame)) >= 0.995  # batched ORT vs one frame: rounding only
        mask = np.asarray(Image.open(tmp_path / "out" / "masks" / f"{name}.png"))
        assert mask.shape == frame.shape and np.array_equal(mask, palette[labels])
        view = np.asarray(Image.open(tmp_path / "out" / "overlays" / f"{name}.png"))
        panel = legend(frame.shape[0], seg.classes, seg.palette)
        assert view.shape == (frame.shape[0], frame.shape[1] + panel.shape[1], 3)
        assert np.array_equal(view[:, : frame.shape[1]], blend(frame, mask, 0.5))
        assert np.array_equal(view[:, frame.shape[1]:], panel)
    colours = {tuple(c) for c in legend(64, seg.classes, seg.palette).reshape(-1, 3)}
    assert all(tuple(c) in colours for c in seg.palette[: len(seg.classes)]), "a class swatch is missing"
    assert not list((tmp_path / "out").rglob(".*")), "temporary files left behind"


def _band_video(path: Path, n: int, size=(64, 96)) -> None:
    """n frames: a fixed texture with a bright band whose level encodes the frame index."""
    texture = np.random.default_rng(1).integers(0, 256, (*size, 3), dtype=np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(n):
        frame = texture.copy()
        frame[: size[0] // 2] = 20 * i
        writer.write(frame)
    writer.release()


def _read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return frames


def test_video_round_trip_keeps_count_and_order(bundle, seg, tmp_path: Path) -> None:
    from edgeseg.pipeline.overlay import overlay

    video = tmp_path / "clip.mp4"
    _band_video(video, 12)
    res = CliRunner().invoke(main, ["infer", str(bundle), str(video), "--out", str(tmp_path / "out"), "--batch", "4"])
    assert res.exit_code == 0, res.output
    assert "12 frames" in res.output and "end-to-end" in res.output and "model only" in res.output
    labels = sorted((tmp_path / "out" / "labels").glob("*.png"))
    assert [p.stem for p in labels] == [f"frame_{i:06d}" for i in range(12)]
    written = _read_video(tmp_path / "out" / "clip_overlay.mp4")
    assert len(written) == 12
    inputs = _read_video(video)
    expected = [overlay(f, seg(f), seg.classes, seg.palette) for f in inputs]
    w = expected[0].shape[1]
    for j, frame in enumerate(written):
        distances = [np.abs(frame[:, :w].astype(int) - e.astype(int)).mean() for e in expected]
        assert int(np.argmin(distances)) == j, f"output frame {j} looks like input frame {int(np.argmin(distances))}"
    for i in (0, 11):
        assert _agreement(np.asarray(Image.open(labels[i])), seg(inputs[i])) >= 0.995


class _FlakySource:
    """Ten frames; reading the sixth raises once, then the source goes on (like a corrupt packet)."""

    def __init__(self, frames: list[np.ndarray], bad: int) -> None:
        self.frames, self.bad, self.i = frames, bad, 0

    def __iter__(self):
        return self

    def __next__(self) -> np.ndarray:
        i = self.i
        self.i += 1
        if i >= len(self.frames):
            raise StopIteration
        if i == self.bad:
            raise OSError("corrupt packet")
        return self.frames[i]


def test_decode_error_mid_stream_is_counted_not_fatal(seg) -> None:
    rng = np.random.default_rng(2)
    frames = [rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(10)]
    frames[8] = frames[8].astype(np.float32)  # not uint8: also skipped and counted
    seen: list[Frame] = []
    stats = run_pipeline(_FlakySource(frames, bad=5), BatchPredictor(seg), lambda f, lab: seen.append(f), batch=3)
    assert stats.decode_errors == 2 and stats.frames == 8
    assert "corrupt packet" in stats.errors[0] and "uint8" in stats.errors[1]
    assert [f.index for f in seen] == [0, 1, 2, 3, 4, 6, 7, 9]  # in order, source positions kept
    assert all(np.array_equal(f.rgb, frames[f.index]) for f in seen)

    class Dead:
        def __iter__(self):
            return self

        def __next__(self):
            raise OSError("no signal")

    stats = run_pipeline(Dead(), BatchPredictor(seg), lambda f, lab: None)
    assert stats.frames == 0 and stats.decode_errors == MAX_CONSECUTIVE_ERRORS and "no signal" in stats.notes[0]


def test_long_stream_memory_stays_bounded() -> None:
    n, shape, queue_size = 300, (240, 320, 3), 4
    frame_bytes = int(np.prod(shape))
    produced = []

    def frames():
        for i in range(n):
            produced.append(i)
            yield np.full(shape, i % 256, np.uint8)

    def predict(batch):  # fast model: the consumer below is the bottleneck
        return [np.zeros(f.shape[:2], np.uint8) for f in batch], 0.1

    order = []

    def slow_sink(frame: Frame, labels: np.ndarray) -> None:
        assert len(produced) - len(order) <= 2 * queue_size + 8, "the decoder ran ahead without bound"
        order.append(frame.index)
        time.sleep(0.002)

    tracemalloc.start()
    try:
        stats = run_pipeline(frames(), predict, slow_sink, batch=4, queue_size=queue_size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.frames == n and order == list(range(n))
    assert all(p <= queue_size for p in stats.queue_peaks.values()) and max(stats.queue_peaks.values()) == queue_size
    assert peak < 0.1 * n * frame_bytes, f"peak {peak / 1e6:.1f} MB for {n * frame_bytes / 1e6:.0f} MB of frames"


class _EndlessSource:
    kind, stem, fps, total = "stream", "synthetic", 10.0, None

    def __init__(self) -> None:
        self.i = 0
        self.closed = False

    def __iter__(self):
        return self

    def __next__(self) -> Frame:
        self.i += 1
        return Frame(self.i - 1, f"frame_{self.i - 1:06d}", np.full((64, 96, 3), (self.i * 7) % 256, np.uint8))

    def close(self) -> None:
        self.closed = True


def test_stop_leaves_complete_files(bundle, tmp_path: Path) -> None:
    stop = threading.Event()
    source = _EndlessSource()

    def progress(done: int, total, fps: float) -> None:
        if done >= 10:
            stop.set()

    result = infer(bundle, source, tmp_path / "out", backend="ort", stop=stop, progress=progress)
    s = result.stats
    assert s.stopped and s.frames >= 10 and source.closed
    assert result.video == tmp_path / "out" / "synthetic_overlay.mp4"
    assert len(_read_video(result.video)) == s.frames
    assert len(list((tmp_path / "out" / "labels").glob("*.png"))) == s.frames
    assert not list((tmp_path / "out").rglob(".*")), "a partial file was left behind"


def test_batch_bounds(seg) -> None:
    spec = seg.runner.input_spec
    assert resolve_batch(None, spec) == 4 and resolve_batch(8, spec) == 8
    with pytest.raises(edgeseg.EdgesegError, match="--batch 9 does not fit the bundle"):
        resolve_batch(9, spec)


def test_error_paths_are_one_line(bundle, tmp_path: Path) -> None:
    garbage = tmp_path / "broken.mp4"
    garbage.write_bytes(b"\0" * 2048)
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    cases = [
        ([str(tmp_path / "missing.mp4")], "does not exist"),
        ([str(garbage)], "cannot open"),
        (["99"], "camera 99 is not available"),
        ([str(image), "--out", str(image / "sub")], f"{image} is a file"),
        ([str(image), "--batch", "64"], "does not fit the bundle"),
    ]
    for args, message in cases:
        out = [] if "--out" in args else ["--out", str(tmp_path / "o")]
        res = CliRunner().invoke(main, ["infer", str(bundle), *args, *out])
        assert res.exit_code == 2, (args, res.output)
        assert res.output.startswith("error: ") and res.output.count("\n") == 1 and message in res.output, res.output


def test_a_folder_is_read_to_its_end_and_skipped_frames_exit_1(bundle, seg, tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.full((40, 50, 3), 5, np.uint8)).save(images / "a.png")
    for i in range(MAX_CONSECUTIVE_ERRORS + 1):
        (images / f"b{i:02d}.png").write_bytes(b"not a png")
    for i in range(2):
        Image.fromarray(np.full((40, 50, 3), 90 * i, np.uint8)).save(images / f"z{i}.png")
    res = CliRunner().invoke(main, ["infer", str(bundle), str(images), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == ["a.png", "z0.png", "z1.png"]
    assert f"error: {MAX_CONSECUTIVE_ERRORS + 1} frame(s) of {images} could not be decoded" in res.output
    assert "b00.png" in res.output
    # frames in memory of known length: read to the end too; an endless source still ends (the Dead source above)
    bad = np.zeros((4, 4), np.uint8)
    good = np.zeros((64, 96, 3), np.uint8)
    stats = run_pipeline([bad] * (MAX_CONSECUTIVE_ERRORS + 5) + [good], BatchPredictor(seg), lambda f, lab: None)
    assert stats.frames == 1 and stats.decode_errors == MAX_CONSECUTIVE_ERRORS + 5 and not stats.notes
