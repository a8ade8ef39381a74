"""Calibration sets: which images, with which preprocessing, recorded as a versioned manifest.

A manifest (JSON, kept under the top-level ``calibration/`` folder) lists image paths relative to
the dataset root with the sha256 of each file, the preprocessing, the count and how the set was
drawn, so a build is reproducible on another machine. Loading checks every hash and refuses a
changed file unless ``allow_changed``. Images stream one at a time (bounded memory).

``load_manifest`` refuses, in one line, a file that is not a manifest edgeseg wrote or was edited:
bounded JSON (edgeseg.json_doc), every field typed (``images``: each a ``path`` or an ``index`` with
a 64-hex ``sha256``), ``count`` equal to the number of images, and ``sha256`` (the set's identity:
the images in order and the preprocessing) equal to what the content gives. So an edit either
changes nothing the calibration reads (``selection``, ``classes_covered``, ``source.root`` where the
same files are) or is refused.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.data.base import SegmentationDataset
from edgeseg.data.images import decode_rgb
from edgeseg.data.preprocess import Preprocessing
from edgeseg.data.spec import open_dataset
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_write_text, require_file
from edgeseg.json_doc import quote, read_json_document

MANIFEST_FORMAT = "edgeseg.calibration"
MANIFEST_VERSION = 1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class CalibrationManifest:
    source: dict[str, Any]  # {"kind": "camvid", "split": "train", "root": "<where it was made>"}
    images: list[dict[str, Any]]  # {"path": relative path, "sha256": ...} or {"index": i, "sha256": ...} (synthetic)
    preprocessing: Preprocessing
    selection: dict[str, Any] = field(default_factory=dict)
    classes_covered: list[int] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.images)

    def to_json(self) -> str:
        return json.dumps({"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "count": self.count,
                           "sha256": self.sha256, "source": self.source, "selection": self.selection,
                           "preprocessing": self.preprocessing.to_dict(), "classes_covered": self.classes_covered,
                           "images": self.images}, indent=1)

    @property
    def sha256(self) -> str:
        """Identity of the set: the hashes and preprocessing, not where it was made."""
        ident = {"images": [(im.get("path"), im.get("index"), im["sha256"]) for im in self.images],
                 "preprocessing": self.preprocessing.to_dict()}
        return _sha256_bytes(json.dumps(ident, sort_keys=True).encode())

    def default_name(self) -> str:
        return f"{self.source['kind']}-{self.source['split']}-{self.count}-{self.sha256[:8]}.json"

    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write to ``path`` (a folder: under ``default_name()`` there). An existing file there is
        replaced only when it is a calibration manifest, or with ``overwrite``."""
        path = Path(path)
        if path.is_dir():
            path = path / self.default_name()
        if path.exists() and not overwrite and not _is_manifest(path):
            raise EdgesegError(f"--out {path} exists and is not an edgeseg calibration manifest, and writing it would "
                               "replace it; choose another --out or pass --overwrite")
        atomic_write_text(path, self.to_json())
        return path


def _is_manifest(path: Path) -> bool:
    """Whether ``path`` is a calibration manifest edgeseg wrote (any version, edited or not): save may replace it."""
    try:
        d = read_json_document(path, "calibration manifest", RECREATE)
    except EdgesegError:
        return False
    return isinstance(d, dict) and d.get("format") == MANIFEST_FORMAT


def manifest_image_path(root: Path, relative: Any) -> Path:
    """``root / relative`` for a manifest entry, refused unless it is a relative path inside ``root``
    (no '..', no absolute path, no symlink leading out): a manifest cannot make edgeseg read elsewhere."""
    from edgeseg.out_dir import contained_path

    return contained_path(root, relative, "calibration manifest image path")


def _class_presence(dataset: SegmentationDataset) -> np.ndarray:
    """(samples, classes) bool: which classes each mask contains (one pass over the masks)."""
    presence = np.zeros((len(dataset), dataset.num_classes), bool)
    for i in range(len(dataset)):
        labels = np.unique(dataset.load_mask(i))
        presence[i, labels[labels < dataset.num_classes]] = True
    return presence


def stratified_indices(dataset: SegmentationDataset, count: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Pick ``count`` samples covering the classes: repeatedly take the sample containing the class
    with the fewest picks so far (rare classes first), random among ties. Returns (indices, covered classes)."""
    n = len(dataset)
    rng = np.random.default_rng(seed)
    presence = _class_presence(dataset)
    if count >= n:
        chosen = list(range(n))
    else:
        picks = np.zeros(dataset.num_classes, np.int64)
        available = np.ones(n, bool)
        chosen = []
        for _ in range(count):
            present_classes = np.flatnonzero(presence[available].any(0))
            if present_classes.size == 0:
                break
            target = present_classes[np.argmin(picks[present_classes] + rng.random(present_classes.size) * 0.1)]
            candidates = np.flatnonzero(available & presence[:, target])
            i = int(rng.choice(candidates))
            chosen.append(i)
            available[i] = False
            picks += presence[i]
        chosen.sort()
    return chosen, np.flatnonzero(presence[chosen].any(0)).tolist()


def manifest_from_dataset(spec: str, split: str, count: int, preprocessing: Preprocessing,
                          seed: int = 0) -> CalibrationManifest:
    """Draw a class-stratified calibration set from a dataset spec (see ``open_dataset``)."""
    dataset = open_dataset(spec, split)
    if count < 1:
        raise EdgesegError(f"--count must be >= 1, got {count}")
    indices, covered = stratified_indices(dataset, count, seed)
    images = []
    for i in indices:
        path = dataset.image_path(i)
        if path is None:  # generated dataset: identify the image by index and pixel hash
            images.append({"index": i, "sha256": _sha256_bytes(dataset.load_image(i).tobytes())})
        else:
            images.append({"path": Path(path).relative_to(dataset.root).as_posix(),
                           "sha256": _sha256_bytes(Path(path).read_bytes())})
    kind = spec.split(":", 1)[0]
    return CalibrationManifest(
        source={"kind": kind, "spec": spec, "split": split, "root": str(dataset.root) if dataset.root else None},
        images=images, preprocessing=preprocessing, classes_covered=covered,
        selection={"method": "class-stratified", "seed": seed, "requested": count, "available": len(dataset)})


def manifest_from_folder(folder: str | Path, count: int, preprocessing: Preprocessing,
                         seed: int = 0) -> CalibrationManifest:
    """A random calibration set from a plain folder of images (no labels)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgesegError(f"calibration folder {folder} does not exist; pass a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    if not files:
        raise EdgesegError(f"no images in {folder}: expected files ending in {', '.join(IMAGE_SUFFIXES)}; "
                           "point --data at a folder of images")
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(files), size=min(count, len(files)), replace=False).tolist())
    fix = "remove it from the folder or make it an image file"  # a FIFO would block read_bytes
    images = [{"path": files[i].relative_to(folder).as_posix(),
               "sha256": _sha256_bytes(require_file(files[i], "calibration image", fix).read_bytes())}
              for i in picked]
    return CalibrationManifest(source={"kind": "images", "spec": str(folder), "split": "all", "root": str(folder)},
                               images=images, preprocessing=preprocessing,
                               selection={"method": "random", "seed": seed, "requested": count,
                                          "available": len(files)})


def draw_calibration_set(spec: str, split: str, count: int, preprocessing: Preprocessing,
                         seed: int = 0) -> tuple[CalibrationManifest, list[str]]:
    """A calibration set from a dataset spec (class-stratified) or ``images:FOLDER`` (random), with the
    warnings of the calibration-set checks (``calib_checks``) on its first images."""
    from edgeseg.quantize.calib_checks import CHECKED_IMAGES, calibration_warnings

    if spec.startswith("images:"):
        manifest, num_classes, names = manifest_from_folder(spec.split(":", 1)[1], count, preprocessing, seed), None, None
    else:
        manifest = manifest_from_dataset(spec, split, count, preprocessing, seed)
        dataset = open_dataset(spec, split)
        num_classes, names = dataset.num_classes, dataset.classes
    sample = (im for _, im in zip(range(CHECKED_IMAGES), iter_manifest_images(manifest)))
    return manifest, calibration_warnings(sample, preprocessing, manifest.count, num_classes,
                                          manifest.classes_covered, names)


RECREATE = "re-create it with `edgeseg calibrate`"
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def load_manifest(path: str | Path) -> CalibrationManifest:
    """The calibration manifest at ``path``, checked (module docstring); one-line EdgesegError otherwise."""
    path = Path(path)
    d = read_json_document(path, "calibration manifest", RECREATE)
    if not isinstance(d, dict) or d.get("format") != MANIFEST_FORMAT:
        raise EdgesegError(f"{path} is not an edgeseg calibration manifest (format {MANIFEST_FORMAT!r} expected); "
                           "pass a file written by `edgeseg calibrate`")
    if not isinstance(d.get("version"), int) or isinstance(d["version"], bool) or d["version"] < 1:
        raise EdgesegError(f"{path}: 'version' must be a positive integer, got {d.get('version')!r}; {RECREATE}")
    if d["version"] > MANIFEST_VERSION:
        raise EdgesegError(f"{path} is manifest version {d['version']}; this edgeseg reads <= {MANIFEST_VERSION}; "
                           "upgrade")
    problem = _manifest_problem(d)
    if problem:
        raise EdgesegError(f"calibration manifest {path} is refused: {problem}; the file was edited or is broken: "
                           f"{RECREATE}")
    return CalibrationManifest(source=d["source"], images=d["images"],
                               preprocessing=Preprocessing.from_dict(d["preprocessing"]),
                               selection=d.get("selection") or {}, classes_covered=d.get("classes_covered") or [])


def _manifest_problem(d: dict[str, Any]) -> str | None:
    """What is wrong with a parsed manifest's fields (None when nothing is): types, count, identity."""
    source, images, pre = d.get("source"), d.get("images"), d.get("preprocessing")
    if not isinstance(source, dict) or not all(isinstance(source.get(k), str) for k in ("kind", "split")) \
            or not all(source.get(k) is None or isinstance(source[k], str) for k in ("spec", "root")):
        return f"'source' must be {{kind, spec, split, root}} as text, got {quote(source)}"
    if not isinstance(images, list) or not images:
        return f"'images' must be a non-empty list, got {quote(images)}"
    for i, entry in enumerate(images):
        problem = _entry_problem(entry)
        if problem:
            return f"images[{i}] {problem}, got {quote(entry)}"
    if any("index" in e for e in images) and not isinstance(source.get("spec"), str):
        return "'source.spec' must name the generated dataset its indexed images come from"
    count = d.get("count")
    if not isinstance(count, int) or isinstance(count, bool) or count != len(images):
        return f"'count' is {quote(count)} but the file lists {len(images)} images"
    if not isinstance(pre, dict):
        return f"'preprocessing' must be an object, got {quote(pre)}"
    try:
        preprocessing = Preprocessing.from_dict(pre)
    except EdgesegError as e:
        return f"'preprocessing' is refused ({str(e).split('; ')[0]})"
    for key, kind in (("selection", dict), ("classes_covered", list)):
        if d.get(key) is not None and not isinstance(d[key], kind):
            return f"'{key}' must be a {kind.__name__}, got {quote(d[key])}"
    identity = CalibrationManifest(source, images, preprocessing).sha256
    if d.get("sha256") != identity:
        return (f"'sha256' is {quote(d.get('sha256'))} but its images and preprocessing give {identity[:12]}... "
                "(an image was added, removed, reordered or its hash edited)")
    return None


def _entry_problem(entry: Any) -> str | None:
    if not isinstance(entry, dict) or not SHA256_HEX.fullmatch(str(entry.get("sha256", ""))):
        return "must be {path or index, sha256: 64 hex digits}"
    if ("path" in entry) == ("index" in entry):
        return "must have exactly one of 'path' (relative to the dataset root) and 'index' (generated sets)"
    if "path" in entry and not isinstance(entry["path"], str):
        return "must have a text 'path'"
    if "index" in entry and (not isinstance(entry["index"], int) or isinstance(entry["index"], bool)
                             or entry["index"] < 0):
        return "must have a non-negative integer 'index'"
    return None


def _iter_entries(manifest: CalibrationManifest, root: str | Path | None
                  ) -> Iterator[tuple[dict, bytes, np.ndarray | None, Path | None]]:
    """(entry, the bytes its sha256 covers, the decoded image for generated sets else None, file)."""
    root = Path(root) if root is not None else (Path(manifest.source["root"]) if manifest.source.get("root") else None)
    synthetic = None
    for entry in manifest.images:
        if "index" in entry:
            if synthetic is None:
                synthetic = open_dataset(manifest.source["spec"], manifest.source["split"])
            image = synthetic.load_image(int(entry["index"]))
            yield entry, image.tobytes(), image, None
            continue
        if root is None:
            raise EdgesegError("the manifest has no dataset root; pass --data KIND:ROOT for its images")
        file = manifest_image_path(root, entry["path"])
        if not file.is_file():
            raise EdgesegError(f"calibration image {file} is missing: expected the manifest's file under {root}; "
                               "pass the right dataset root or re-create the manifest")
        yield entry, file.read_bytes(), None, file


def iter_manifest_images(manifest: CalibrationManifest, root: str | Path | None = None,
                         allow_changed: bool = False) -> Iterator[np.ndarray]:
    """Yield each manifest image as uint8 RGB (H, W, 3), checking its sha256 first.

    ``root`` overrides the dataset root recorded in the manifest (another machine)."""
    for entry, data, image, file in _iter_entries(manifest, root):
        if _sha256_bytes(data) != entry["sha256"] and not allow_changed:
            raise EdgesegError(f"calibration image {entry.get('path', entry.get('index'))} changed since the manifest "
                               "was written (sha256 differs); re-create the manifest or pass --allow-changed")
        yield image if image is not None else decode_rgb(data, file)


def current_images_sha256(manifest: CalibrationManifest, root: str | Path | None = None) -> str:
    """Identity of the manifest's images as they are now (what --allow-changed calibrates on, where the
    manifest's own hashes may no longer hold)."""
    digest = hashlib.sha256()
    for _, data, _, _ in _iter_entries(manifest, root):
        digest.update(_sha256_bytes(data).encode())
    return digest.hexdigest()


def iter_calibration_inputs(manifest: CalibrationManifest, preprocessing: Preprocessing,
                            root: str | Path | None = None, allow_changed: bool = False) -> Iterator[np.ndarray]:
    """(1, 3, H, W) float32 network inputs made with the model's own preprocessing."""
    for image in iter_manifest_images(manifest, root, allow_changed):
        yield preprocessing(image)[None]
