"""Artifact bundles: one folder a camera pipeline takes as is.

``manifest.json`` records classes, palette, preprocessing, precision, input shape bounds, the
sha256 of every file, the calibration-set sha256, the TensorRT version and GPU compute
capability of an engine, and the mIoU measured at build time. ``verify_bundle`` refuses a
bundle whose files no longer match, or that a newer edgeseg wrote.

Containment (checked by ``read_bundle``, always, before anything is opened): every path the
manifest names (``files`` keys, ``roles`` values, ``calibration.manifest``, ``engine.file``,
``engine.source``) is a plain file name (no ``/`` or ``\\``, not ``.`` / ``..``, no NUL, not
absolute), every one of them is a key of ``files`` with a 64-hex sha256 and a byte count, and
none resolves outside the bundle folder (a symlink leading out is refused). ``Bundle.file`` /
``Bundle.member`` hand out only such paths and check the file's sha256 before its first use
(unless the bundle was read with ``check_hashes=False``), so a runner, ``deploy`` or ``infer``
never opens an unchecked file. ``source`` is provenance text, never opened.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.backends.artifacts import BUNDLE_MANIFEST
from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_write_text, sha256_file
from edgeseg.out_dir import check_out_dir, contained_path, only_names, staging_dir  # noqa: F401 (re-export)
from edgeseg.version import __version__

BUNDLE_FORMAT = "edgeseg.bundle"
BUNDLE_VERSION = 1
MANIFEST = BUNDLE_MANIFEST
SHA256 = re.compile(r"[0-9a-f]{64}")


def plain_name_problem(name: Any) -> str | None:
    """Why ``name`` is not a plain file name inside a folder (None when it is)."""
    if not isinstance(name, str) or not name:
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name or "\0" in name or name in (".", "..") or Path(name).is_absolute():
        return f"{name!r} is not a plain file name (no '/', '\\', '..' or absolute path)"
    return None


def contained(root: Path, name: str) -> Path:
    """``root / name`` for a plain file name that resolves inside ``root`` (symlinks followed)."""
    problem = plain_name_problem(name)
    if problem:
        raise EdgesegError(f"bundle file {problem}; rebuild the bundle with edgeseg build")
    return contained_path(root, name, "bundle file")


@dataclass
class Bundle:
    root: Path
    manifest: dict[str, Any]
    check_hashes: bool = True  # Bundle.member checks each file's sha256 before its first use
    _checked: set[str] = field(default_factory=set, repr=False)

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

    def member(self, name: str) -> Path:
        """The path of ``name`` (a key of ``files``), its sha256 checked before its first use."""
        entry = self.manifest["files"].get(name)
        if entry is None:
            raise EdgesegError(f"bundle {self.root}: {name!r} is not among the manifest's files; rebuild the bundle")
        path = contained(self.root, name)
        if self.check_hashes and name not in self._checked:
            problem = _file_problem(path, name, entry)
            if problem:
                raise EdgesegError(f"bundle {self.root} does not match its manifest: {problem}; "
                                   f"rebuild it (edgeseg build ... --out {self.root}) or restore the file")
            self._checked.add(name)
        return path

    def file(self, role: str) -> Path | None:
        """Path of the file playing ``role`` (fp32, fp16, int8, int8_trt, engine, checkpoint, ...)."""
        name = self.manifest.get("roles", {}).get(role)
        return self.member(name) if name else None


def _file_problem(path: Path, name: str, entry: dict[str, Any]) -> str | None:
    if not path.is_file():
        return f"{name} is missing"
    if sha256_file(path) != entry["sha256"]:
        return f"{name} changed (sha256 differs from the manifest)"
    return None


def _manifest_paths(manifest: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, value) of every path the manifest names besides the ``files`` keys."""
    paths = [(f"roles.{role}", name) for role, name in (manifest.get("roles") or {}).items()]
    if isinstance(manifest.get("calibration"), dict) and "manifest" in manifest["calibration"]:
        paths.append(("calibration.manifest", manifest["calibration"]["manifest"]))
    if isinstance(manifest.get("engine"), dict):
        paths += [(f"engine.{key}", manifest["engine"][key]) for key in ("file", "source") if key in manifest["engine"]]
    return paths


def check_containment(root: Path, manifest: dict[str, Any]) -> None:
    """Refuse a manifest that names a path outside its folder or a file without a hash (module docstring)."""
    def refuse(problem: str) -> None:
        raise EdgesegError(f"{root / MANIFEST} is refused: {problem}; a manifest may only name files inside its "
                           "bundle, each listed in 'files' with its sha256: rebuild the bundle with edgeseg build")

    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("roles", {}), dict):
        refuse("'files' and 'roles' must be objects")
    for name, entry in files.items():
        problem = plain_name_problem(name)
        if problem or name == MANIFEST:
            refuse(f"files: {problem or 'the manifest cannot list itself'}")
        if not isinstance(entry, dict) or not SHA256.fullmatch(str(entry.get("sha256", ""))) \
                or not isinstance(entry.get("bytes"), int):
            refuse(f"files: {name!r} needs a 64-hex 'sha256' and an integer 'bytes'")
        target = (root / name).resolve()
        if root.resolve() not in target.parents:
            refuse(f"files: {name!r} resolves to {target}, outside the bundle (a symlink leading out)")
    for where, name in _manifest_paths(manifest):
        problem = plain_name_problem(name)
        if problem:
            refuse(f"{where}: {problem}")
        if name not in files:
            refuse(f"{where}: {name!r} is not listed in 'files' (no sha256 to check it against)")


def bundle_foreign(out: Path) -> Path | None:
    """For the output-folder rule: the first entry of ``out`` that is not a file of the edgeseg bundle
    there (its manifest when the folder is no bundle); None when ``out`` holds a bundle and nothing else."""
    path = out / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        names = set(manifest["files"]) if manifest.get("format") == BUNDLE_FORMAT else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        names = None
    if names is None:
        return path if path.exists() else next(iter(sorted(out.iterdir())), None)
    return only_names(out, names | {MANIFEST})


def check_bundle_out(out: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """The output-folder rule (edgeseg.out_dir) for a bundle folder."""
    return check_out_dir(out, bundle_foreign, "edgeseg bundle", overwrite=overwrite, flag=flag)


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``root`` (except the manifest) into ``manifest["files"]`` and write it."""
    manifest = dict(manifest, format=BUNDLE_FORMAT, version=BUNDLE_VERSION, edgeseg_version=__version__)
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=1, default=str))  # Paths as strings
    return manifest


def read_bundle(root: str | Path, check_hashes: bool = True) -> Bundle:
    """Read ``root/manifest.json`` and check its containment (module docstring); file hashes are checked
    by ``verify_bundle`` (all) or on first use (``Bundle.member``) unless ``check_hashes=False``."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise EdgesegError(f"{root} is not an edgeseg bundle (no {MANIFEST}); build one with `edgeseg build`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise EdgesegError(f"{path} is not valid JSON ({e}); rebuild the bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise EdgesegError(f"{path} is not an edgeseg bundle manifest (format {BUNDLE_FORMAT!r} expected)")
    if not isinstance(manifest.get("version", 0), int):
        raise EdgesegError(f"{path}: 'version' must be an integer, got {manifest['version']!r}; rebuild the bundle")
    if manifest.get("version", 0) > BUNDLE_VERSION:
        raise EdgesegError(f"{root} was written by edgeseg {manifest.get('edgeseg_version')} (bundle version "
                           f"{manifest['version']}); this edgeseg {__version__} reads version <= {BUNDLE_VERSION}: "
                           "upgrade edgeseg")
    check_containment(root, manifest)
    return Bundle(root, manifest, check_hashes)


def verify_bundle(bundle: Bundle) -> None:
    """Every file the manifest lists must exist with the recorded sha256."""
    problems = []
    for name, entry in bundle.manifest.get("files", {}).items():
        problem = _file_problem(contained(bundle.root, name), name, entry)
        if problem:
            problems.append(problem)
        else:
            bundle._checked.add(name)
    if problems:
        raise EdgesegError(f"bundle {bundle.root} does not match its manifest: {'; '.join(problems)}; "
                           f"rebuild it (edgeseg build ... --out {bundle.root}) or restore the files")
