"""Artifact bundles: one folder a camera pipeline takes as is.

``manifest.json`` records classes, palette, preprocessing, precision, input shape bounds, the
sha256 of every file, the calibration-set sha256, the TensorRT version and GPU compute
capability of an engine, and the mIoU measured at build time. ``verify_bundle`` refuses a
bundle whose files no longer match, or that a newer edgeseg wrote.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_write_text, sha256_file
from edgeseg.version import __version__

BUNDLE_FORMAT = "edgeseg.bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Bundle:
    root: Path
    manifest: dict[str, Any]

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(self.manifest["preprocessing"])

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def palette(self) -> list[list[int]]:
        return [list(c) for c in self.manifest["palette"]]

    @property
    def precision(self) -> str:
        return self.manifest["precision"]

    def file(self, role: str) -> Path | None:
        """Path of the file playing ``role`` (fp32, fp16, int8, int8_trt, engine, checkpoint, ...)."""
        name = self.manifest.get("roles", {}).get(role)
        return self.root / name if name else None


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``root`` (except the manifest) into ``manifest["files"]`` and write it."""
    manifest = dict(manifest, format=BUNDLE_FORMAT, version=BUNDLE_VERSION, edgeseg_version=__version__)
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1, default=str))  # Paths as strings
    return manifest


def read_bundle(root: str | Path) -> Bundle:
    """Read ``root/manifest.json`` (no hash check: see ``verify_bundle``)."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise EdgesegError(f"{root} is not an edgeseg bundle (no {MANIFEST}); build one with `edgeseg build`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EdgesegError(f"{path} is not valid JSON ({e}); rebuild the bundle") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise EdgesegError(f"{path} is not an edgeseg bundle manifest (format {BUNDLE_FORMAT!r} expected)")
    if int(manifest.get("version", 0)) > BUNDLE_VERSION:
        raise EdgesegError(f"{root} was written by edgeseg {manifest.get('edgeseg_version')} (bundle version "
                           f"{manifest['version']}); this edgeseg {__version__} reads version <= {BUNDLE_VERSION}: "
                           "upgrade edgeseg")
    return Bundle(root, manifest)


def verify_bundle(bundle: Bundle) -> None:
    """Every file the manifest lists must exist with the recorded sha256."""
    problems = []
    for name, entry in bundle.manifest.get("files", {}).items():
        path = bundle.root / name
        if not path.is_file():
            problems.append(f"{name} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name} changed (sha256 differs from the manifest)")
    if problems:
        raise EdgesegError(f"bundle {bundle.root} does not match its manifest: {'; '.join(problems)}; "
                           f"rebuild it (edgeseg build ... --out {bundle.root}) or restore the files")


@contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A temporary folder beside ``out`` that replaces ``out`` only when the block succeeds."""
    out = Path(out)
    if not out.parent.is_dir():
        raise EdgesegError(f"output folder {out.parent} does not exist; create it first or choose another --out")
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
