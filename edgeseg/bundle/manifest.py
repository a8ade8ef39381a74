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

Meaning (checked by ``read_bundle`` after containment, and by ``write_manifest`` before it writes):
``manifest.json`` carries no hash of its own, so its content is held against the hashed files.
Every field has its type (``check_fields``: a wrong type, a missing key, a class name that is not
one printable line is refused in one line). Every role of ``ROLE_FILES`` has its one file name,
every such file is in its role, and the roles match ``precision`` (``check_roles``). Every ONNX role
file's ``edgeseg.*`` metadata (written by export / quantize, inside the sha256) must agree with the
manifest's model, classes, palette, preprocessing, input bounds and output, and carry its role's
precision (``ROLE_METADATA``); a static class dim must equal the class count (``check_meaning``).
So an edit of the manifest's meaning is refused unless a hashed file is rewritten with it. The
native runtime (native/src/bundle.cpp) makes the same checks.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeseg.backends.artifacts import BUNDLE_MANIFEST, ONNX_ROLES, PRECISIONS, ROLE_FILES
from edgeseg.data.preprocess import Preprocessing
from edgeseg.errors import EdgesegError
from edgeseg.io_utils import atomic_write_text, sha256_file
from edgeseg.json_doc import quote, read_json_document
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


# ----------------------------------------------------------------------------- meaning (module docstring)

NAME_MAX = 256  # characters of a class or model name
CLASSES_MAX = 65536
INT8_ROLES = ("int8", "int8_trt", "int8_trt_fp16", "calibration_cache")  # present in int8 bundles only
ROLE_METADATA: dict[str, dict[str, Any]] = {  # role -> edgeseg.* metadata its ONNX carries (quantize.fp16 / .qdq)
    "fp32": {"precision": None},
    "fp16": {"precision": "fp16"},
    "int8": {"precision": "int8", "qdq_layout": "cpu"},
    "int8_trt": {"precision": "int8", "qdq_layout": "trt", "qdq_scale_dtype": "fp32"},
    "int8_trt_fp16": {"precision": "int8", "qdq_layout": "trt", "qdq_scale_dtype": "fp16"},
}
MEANING: dict[str, tuple[str, Any]] = {  # manifest field -> (its ONNX metadata key, value when absent)
    "model": ("model", None), "classes": ("classes", None), "palette": ("palette", None),
    "input.shape_bounds": ("shape_bounds", None), "input.dynamic": ("dynamic", None), "output": ("output", "logits")}
EXACT_INFERENCE = (None, "f32")  # the only runtime paths an fp32 bundle records (bundle.runtimes: it stays exact)


class ManifestProblem(Exception):
    """What is wrong with a manifest's content, one line; read_bundle / write_manifest say what to do."""


def name_problem(value: Any) -> str | None:
    """Why ``value`` is not a one-line printable name (class, model), None when it is: it is written into
    labels.txt, DeepStream and Triton files, one name per line."""
    if not isinstance(value, str) or not value.strip():
        return "a non-empty string"
    if not value.isprintable() or len(value) > NAME_MAX:
        return f"one line of printable characters (no newline, tab or control character), at most {NAME_MAX}"
    return None


def _need(ok: bool, where: str, expected: str, got: Any) -> None:
    if not ok:
        raise ManifestProblem(f"'{where}' must be {expected}, got {quote(got)}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_names(m: dict[str, Any]) -> None:
    model = m.get("model")
    _need(model is None or name_problem(model) is None, "model", "null or " + (name_problem(model) or ""), model)
    classes = m.get("classes")
    _need(isinstance(classes, list) and 1 <= len(classes) <= CLASSES_MAX, "classes",
          f"a list of 1 to {CLASSES_MAX} class names", classes)
    for i, name in enumerate(classes):
        _need(name_problem(name) is None, f"classes[{i}]", name_problem(name) or "", name)
    palette = m.get("palette")
    _need(isinstance(palette, list) and len(palette) == len(classes), "palette",
          f"a list of one [r, g, b] per class ({len(classes)})", palette)
    for i, rgb in enumerate(palette):
        _need(isinstance(rgb, list) and len(rgb) == 3 and all(_is_int(v) and 0 <= v <= 255 for v in rgb),
              f"palette[{i}]", "[r, g, b] with integers 0..255", rgb)


def _check_preprocessing(m: dict[str, Any]) -> None:
    pre = m.get("preprocessing")
    _need(isinstance(pre, dict), "preprocessing", "an object (mean, std, scale, channel_order, size, resize)", pre)
    for key in ("mean", "std"):
        _need(isinstance(pre.get(key), list) and len(pre[key]) == 3 and all(_is_number(v) for v in pre[key]),
              f"preprocessing.{key}", "3 finite numbers", pre.get(key))
    _need(pre.get("scale") is None or (_is_number(pre["scale"]) and pre["scale"] > 0), "preprocessing.scale",
          "a number > 0", pre.get("scale"))
    size = pre.get("size")
    _need(size is None or (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v > 0 for v in size)),
          "preprocessing.size", "null or [height, width] (positive integers)", size)
    for key in ("channel_order", "resize"):
        _need(key not in pre or isinstance(pre[key], str), f"preprocessing.{key}", "a string", pre.get(key))
    try:
        Preprocessing.from_dict(pre)
    except EdgesegError as e:
        raise ManifestProblem(f"'preprocessing' is refused: {str(e).split('; ')[0]}") from None


def _check_io(m: dict[str, Any]) -> None:
    inp = m.get("input")
    _need(isinstance(inp, dict) and isinstance(inp.get("name", "input"), str), "input",
          "an object with the input's name", inp)
    bounds = inp.get("shape_bounds")
    _need(bounds is None or isinstance(bounds, dict), "input.shape_bounds", "null or an object", bounds)
    for name, shapes in (bounds or {}).items():
        _need(isinstance(shapes, dict) and all(
            isinstance(shapes.get(k), list) and len(shapes[k]) == 4 and all(_is_int(v) and v > 0 for v in shapes[k])
            for k in ("min", "opt", "max")), f"input.shape_bounds.{name}", "{min, opt, max}: 4 positive integers each",
            shapes)
    _need(inp.get("dynamic") is None or isinstance(inp["dynamic"], str), "input.dynamic", "null or a string",
          inp.get("dynamic"))
    _need(isinstance(m.get("output", "logits"), (dict, str)), "output", "an object", m.get("output"))


def _check_records(m: dict[str, Any]) -> None:
    """The optional records (measurements, provenance, accelerator files): objects with typed fields."""
    for key in ("metrics", "runtime", "calibration", "engine", "build"):
        _need(m.get(key) is None or isinstance(m[key], dict), key, "null or an object", m.get(key))
    for key in ("source", "edgeseg_version"):
        _need(m.get(key) is None or isinstance(m[key], str), key, "null or a string", m.get(key))
    engine = m.get("engine") or {}
    for key in ("trt_version", "compute_capability", "gpu", "file", "source"):
        _need(engine.get(key) is None or isinstance(engine[key], str), f"engine.{key}", "a string", engine.get(key))
    _need(engine.get("dla_core") is None or _is_int(engine["dla_core"]), "engine.dla_core", "null or an integer",
          engine.get("dla_core"))
    profile = engine.get("profile")
    _need(profile is None or (isinstance(profile, dict) and all(
        isinstance(profile.get(k), list) and len(profile[k]) == 4 and all(_is_int(v) for v in profile[k])
        for k in ("min", "max"))), "engine.profile", "null or {min, max}: 4 integers each", profile)


def check_runtime(manifest: dict[str, Any]) -> None:
    """``runtime`` (bundle.runtimes): paths of the bundle's own precision, figures as numbers; an fp32 bundle
    records only exact paths, so no edit makes edgeseg.load compute it in bf16 / f16."""
    precision, runtime = manifest["precision"], manifest.get("runtime") or {}
    if not runtime.get("paths"):
        return
    _need(isinstance(runtime.get("paths"), list), "runtime.paths", "a list", runtime.get("paths"))
    selection, machine = runtime.get("selection"), runtime.get("machine")
    _need(isinstance(selection, dict) and _is_number(selection.get("max_miou_drop"))
          and isinstance(selection.get("split"), str), "runtime.selection", "{max_miou_drop: number, split: text}",
          selection)
    _need(isinstance(machine, dict) and isinstance(machine.get("cpu"), str), "runtime.machine",
          "an object with the cpu", machine)
    role = precision if precision in ONNX_ROLES else "fp32"
    for i, rec in enumerate(runtime["paths"]):
        where = f"runtime.paths[{i}]"
        _need(isinstance(rec, dict) and isinstance(rec.get("backend"), str) and isinstance(rec.get("path"), str)
              and all(_is_number(rec.get(k)) for k in ("miou", "miou_drop", "latency_ms_median")), where,
              "{path, backend, role, inference_precision, miou, miou_drop, latency_ms_median}", rec)
        _need(rec.get("role") == role, f"{where}.role", f"{role!r} (the bundle's precision)", rec.get("role"))
        ip = rec.get("inference_precision")
        _need(ip is None or isinstance(ip, str), f"{where}.inference_precision", "null or a string", ip)
        _need(precision != "fp32" or ip in EXACT_INFERENCE, f"{where}.inference_precision",
              "null or 'f32' in an fp32 bundle (it is computed exactly)", ip)


def check_fields(manifest: dict[str, Any]) -> None:
    """Every field the readers use has its type (ManifestProblem naming the first that does not)."""
    _need(manifest.get("precision") in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}",
          manifest.get("precision"))
    _need(isinstance(manifest.get("roles"), dict), "roles", "an object mapping roles to file names",
          manifest.get("roles"))
    _check_names(manifest)
    _check_preprocessing(manifest)
    _check_io(manifest)
    _check_records(manifest)


def check_roles(manifest: dict[str, Any]) -> None:
    """Each ROLE_FILES role under its one file name, each such file in its role, the roles matching precision."""
    roles, files, precision = manifest["roles"], manifest["files"], manifest["precision"]
    for role, name in ROLE_FILES.items():
        _need(roles.get(role, name) == name, f"roles.{role}", f"{name!r} (the file name of that role)",
              roles.get(role))
        _need(name not in files or role in roles, f"roles.{role}", f"{name!r}: 'files' lists that file", None)
    _need("fp32" in roles, "roles.fp32", f"{ROLE_FILES['fp32']!r}: every bundle has its FP32 ONNX", None)
    for role in ("fp16", *INT8_ROLES):
        wanted = "int8" if role in INT8_ROLES else role
        _need(role not in roles or precision == wanted, "precision", f"{wanted!r}: roles has {role}", precision)
    _need(precision == "fp32" or precision in roles, f"roles.{precision}",
          f"{ROLE_FILES[precision]!r} in a {precision} bundle", None)
    engine = manifest.get("engine") or {}
    _need(engine.get("file") in (None, roles.get("engine")), "engine.file", f"{roles.get('engine')!r} (roles.engine)",
          engine.get("file"))
    _need(engine.get("source") in (None, *(roles.get(r) for r in ROLE_METADATA if r in roles)), "engine.source",
          "one of the bundle's ONNX files", engine.get("source"))


def _field(manifest: dict[str, Any], dotted: str, absent: Any = None) -> Any:
    """The value at ``dotted`` (e.g. "input.dynamic"), ``absent`` where the manifest has no such field."""
    value: Any = manifest
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return absent
        value = value[part]
    return value


def check_meaning(bundle: "Bundle") -> None:
    """Each ONNX role file (hash-checked first, unless the bundle was read without hash checks) agrees with
    the manifest: its metadata (MEANING, preprocessing, ROLE_METADATA) and its static class dim."""
    from edgeseg.export.metadata import load_onnx, metadata_of

    m = bundle.manifest
    for role in (r for r in ROLE_METADATA if r in m["roles"]):
        name = m["roles"][role]
        model = load_onnx(bundle.member(name), require_input=False)
        meta = metadata_of(model, name)
        differ = [(where, _field(m, where, absent), meta.get(key, absent)) for where, (key, absent) in MEANING.items()]
        differ += [(f"the role {role}'s {key}", want, meta.get(key)) for key, want in ROLE_METADATA[role].items()
                   if meta.get(key) != want and not (key == "precision" and meta.get(key) == "fp32" and want is None)]
        for where, ours, theirs in differ:
            if ours != theirs:
                raise ManifestProblem(f"'{where}' is {quote(ours, 60)} but {name} records {quote(theirs, 60)}")
        ours = Preprocessing.from_dict(m["preprocessing"]).to_dict()
        theirs = Preprocessing.from_dict(meta["preprocessing"]).to_dict() if isinstance(
            meta.get("preprocessing"), dict) else {}
        for key in (k for k in ours if ours[k] != theirs.get(k)):
            raise ManifestProblem(f"'preprocessing.{key}' is {quote(ours[key], 60)} but {name} records "
                                  f"{quote(theirs.get(key), 60)}")
        channels = output_channels(model)
        if channels is not None and channels != len(m["classes"]):
            raise ManifestProblem(f"'classes' names {len(m['classes'])} classes but {name} outputs {channels} channels")


def output_channels(model: Any) -> int | None:
    """The static class dim of an ONNX's (N, C, H, W) scores output; None when it is symbolic or the output
    is a class map."""
    dims = model.graph.output[0].type.tensor_type.shape.dim if len(model.graph.output) == 1 else []
    return dims[1].dim_value if len(dims) == 4 and dims[1].HasField("dim_value") else None


def check_manifest(bundle: "Bundle") -> None:
    """check_fields, check_roles, check_runtime, check_meaning (ManifestProblem naming the first problem)."""
    check_fields(bundle.manifest)
    check_roles(bundle.manifest)
    check_runtime(bundle.manifest)
    check_meaning(bundle)


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


REBUILD = "rebuild the bundle (edgeseg build ... --out DIR) or restore its manifest.json"


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file in ``root`` (except the manifest) into ``manifest["files"]`` and write it, once its
    content passes the checks ``read_bundle`` makes (module docstring): a bundle edgeseg writes, it reads."""
    manifest = dict(manifest, format=BUNDLE_FORMAT, version=BUNDLE_VERSION, edgeseg_version=__version__)
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(root.iterdir()) if p.is_file() and p.name != MANIFEST}
    text = json.dumps(manifest, indent=1, default=str)  # Paths as strings
    try:
        check_manifest(Bundle(root, json.loads(text), check_hashes=False))  # hashed just now
    except ManifestProblem as e:
        raise EdgesegError(f"cannot write the bundle manifest: {e}; fix the model's metadata (class names, "
                           "preprocessing) and export it again") from None
    atomic_write_text(root / MANIFEST, text)
    return manifest


def read_bundle(root: str | Path, check_hashes: bool = True) -> Bundle:
    """Read ``root/manifest.json``, check its containment and meaning (module docstring); file hashes are
    checked by ``verify_bundle`` (all) or on first use (``Bundle.member``) unless ``check_hashes=False``."""
    root = Path(root)
    path = root / MANIFEST
    if not (path.exists() or path.is_symlink()):
        raise EdgesegError(f"{root} is not an edgeseg bundle (no {MANIFEST}); build one with `edgeseg build`")
    manifest = read_json_document(path, "bundle manifest", REBUILD)
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise EdgesegError(f"{path} is not an edgeseg bundle manifest (format {BUNDLE_FORMAT!r} expected)")
    if not isinstance(manifest.get("version", 0), int):
        raise EdgesegError(f"{path}: 'version' must be an integer, got {quote(manifest['version'])}; {REBUILD}")
    if manifest.get("version", 0) > BUNDLE_VERSION:
        raise EdgesegError(f"{root} was written by edgeseg {quote(manifest.get('edgeseg_version'))} (bundle version "
                           f"{manifest['version']}); this edgeseg {__version__} reads version <= {BUNDLE_VERSION}: "
                           "upgrade edgeseg")
    check_containment(root, manifest)
    bundle = Bundle(root, manifest, check_hashes)
    try:
        check_manifest(bundle)
    except ManifestProblem as e:
        raise EdgesegError(f"{path} is refused: {e}; the manifest was edited or is broken: {REBUILD}") from None
    return bundle


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
