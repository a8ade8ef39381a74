"""Bundles with another meaning, written as a build would write them (tests that need, e.g., a BGR or an
old pil_bilinear bundle): the manifest edited, the same meaning written into every ONNX file's edgeseg
metadata, every hash rewritten. A manifest edited alone is refused (edgeseg.bundle.manifest)."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from edgeseg.bundle.manifest import MEANING, ROLE_METADATA, write_manifest

Edit = Callable[[dict, Path], None]


def sync_metadata(root: Path, manifest: dict) -> None:
    """Write the manifest's meaning (MEANING fields, preprocessing) into each ONNX role file's metadata."""
    import onnx

    from edgeseg.export.metadata import set_metadata

    fields = {"preprocessing": manifest["preprocessing"]}
    for where, (key, _) in MEANING.items():
        value = manifest
        for part in where.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        fields[key] = value
    for role in ROLE_METADATA:
        if role in manifest["roles"]:
            path = root / manifest["roles"][role]
            model = onnx.load(str(path))
            set_metadata(model, fields)  # the manifest's dicts as they are: a missing field stays missing
            onnx.save(model, str(path))


def rebuilt_copy(src: Path, dst: Path, edit: Edit) -> Path:
    """A copy of bundle ``src`` whose manifest ``edit(manifest, root)`` changed, consistently (module docstring)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest, dst)
    sync_metadata(dst, manifest)
    for key in ("files", "format", "version", "edgeseg_version"):
        manifest.pop(key, None)
    write_manifest(dst, manifest)
    return dst
