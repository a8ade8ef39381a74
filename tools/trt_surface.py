"""Write the TensorRT Python API surface edgeseg may touch, per TensorRT version, from NVIDIA's own files.

For each version below it
  1. downloads the real compiled binding wheel from PyPI (``pip download --no-deps``; only the
     ``*-libs`` packages are download stubs, the bindings are the real ``tensorrt.so``; 8.5 has no
     separate bindings wheel, so the whole ``tensorrt==8.5.2.2`` wheel, cp38, is downloaded and only its
     ``tensorrt/tensorrt.so`` and ``__init__.py`` are read),
  2. reads the NUL-terminated identifier strings of that ``tensorrt.so`` (pybind11 keeps every
     class, method, property and enum-member name it registers as a C string) and the
     pure-Python names of the wheel's ``__init__.py`` (``nptype``, ``__version__``, ...),
  3. parses the pybind11 registrations (``py::class_``/``py::enum_`` chains with ``.def``,
     ``.def_property*``, ``.def_readwrite``, ``.value``) of NVIDIA/TensorRT's release branch
     (python/src/infer/*.cpp, python/src/parsers/pyOnnx.cpp) to know which member belongs to which
     class, and the enum values from that branch's include/Nv*.h,
  4. keeps an entry only when the binary holds its name, and writes tools/trt_surface/<version>.txt.

The binary proves that a name exists in that release; the release source proves where it belongs
(a short enum name such as ``INT8`` is also a DataType member, so its presence in the binary alone
does not prove ``BuilderFlag.INT8``). Source entries whose name is absent from the binary are
listed at the end of each file. The newest 11.x wheel (11.4) has no public release branch: its
structure comes from release/11.1 (the newest published) and only names present in the 11.4
binary are kept, so a member added after 11.1 is missing (harmless: the lists are an allow-list).

Run (network to PyPI, and a clone or bare mirror of https://github.com/NVIDIA/TensorRT):

    python tools/trt_surface.py --tensorrt-repo /path/to/TensorRT [--wheels /tmp/trt-wheels]

Never run by the tests (no network there); they only read the committed text files.
"""
from __future__ import annotations

import argparse
import hashlib
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

# version label -> (pip requirement, NVIDIA/TensorRT branch holding its sources[, the wheel's Python])
VERSIONS = {
    # JetPack 5.1 (Xavier, Orin); 8.5 has no separate bindings wheel: the whole tensorrt wheel (cp36-cp310)
    # holds tensorrt/tensorrt.so, and only that file and __init__.py are read
    "8.5.2": ("tensorrt==8.5.2.2", "release/8.5", "3.8"),
    "8.6.1": ("tensorrt-bindings==8.6.1", "release/8.6"),
    "10.3.0": ("tensorrt-cu12-bindings==10.3.0", "release/10.3"),  # JetPack 6.1
    "10.16.1": ("tensorrt-cu12-bindings==10.16.1.11", "release/10.16"),  # newest 10.x on PyPI
    "11.4.0": ("tensorrt-cu12-bindings==11.4.0.106", "release/11.1"),  # newest 11.x; newest public branch is 11.1
}
SOURCES = ["python/src/infer/pyCore.cpp", "python/src/infer/pyInt8.cpp", "python/src/infer/pyFoundationalTypes.cpp",
           "python/src/infer/pyGraph.cpp",
           "python/src/parsers/pyOnnx.cpp"]
HEADERS = ["include/NvInfer.h", "include/NvInferRuntime.h", "include/NvInferRuntimeBase.h",
           "include/NvInferRuntimeCommon.h", "include/NvInferVersion.h", "include/NvOnnxParser.h"]
VERSION_HEADERS = ("include/NvInferRuntimeBase.h", "include/NvInferRuntimeCommon.h")  # 8.5 has no ...Base.h
# What edgeseg's TensorRT code (build, run, calibrate-from-cache, doctor) may touch.
CLASSES = ["<module>", "ILogger", "ILogger.Severity", "Logger", "Builder", "IBuilderConfig", "BuilderFlag",
           "NetworkDefinitionCreationFlag", "MemoryPoolType", "DeviceType", "HardwareCompatibilityLevel",
           "ITimingCache", "IOptimizationProfile", "INetworkDefinition", "ITensor", "IHostMemory", "Runtime",
           "ICudaEngine", "IExecutionContext", "EngineInspector", "TensorIOMode", "LayerInformationFormat", "DataType",
           "IInt8Calibrator",
           "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "CalibrationAlgoType", "OnnxParser", "ParserError",
           "ErrorCode", "OnnxParserFlag", "EngineCapability", "ProfilingVerbosity"]
CHAIN = re.compile(r'\.(def|def_static|def_property|def_property_readonly|def_readwrite|def_readonly|value)\s*\(\s*'
                   r'"(\w+)"\s*(?:,\s*([\w:]+))?')


def strip_comments(text: str) -> str:
    """C++ source without // and /* */ comments (string literals kept, raw strings left alone)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            i = text.find("\n", i) if text.find("\n", i) >= 0 else n
        elif text.startswith("/*", i):
            i = text.find("*/", i) + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def statement(text: str, start: int) -> str:
    """Text from ``start`` to the ``;`` that ends the statement (depth 0 in (), {}, [])."""
    depth, i, n = 0, start, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == ";" and depth <= 0:
            return text[start:i]
        i += 1
    return text[start:]


def _skip_template(text: str, i: int) -> int:
    depth = 0
    while i < len(text):
        if text[i] == "<":
            depth += 1
        elif text[i] == ">":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def parse_bindings(text: str) -> dict[str, dict[str, tuple[str, str | None]]]:
    """{python class -> {member -> (kind, C++ enumerator or None)}} from one pybind11 source file."""
    text = strip_comments(text)
    classes: dict[str, dict[str, tuple[str, str | None]]] = {}
    variables: dict[str, str] = {}
    for m in re.finditer(r"py::(class_|enum_)\s*<", text):
        end = _skip_template(text, m.end() - 1)
        head = re.match(r'\s*(\w+)?\s*[({]\s*(\w+)\s*,\s*"(\w+)"', text[end:])
        if not head:
            continue
        var, parent, name = head.groups()
        qualified = name if parent == "m" else f"{variables.get(parent, parent)}.{name}"
        if var:
            variables[var] = qualified
        members = classes.setdefault(qualified, {})
        members.setdefault("", ("enum" if m.group(1) == "enum_" else "class", None))
        body = statement(text, end)
        for call in CHAIN.finditer(body):
            kind, member, ref = call.groups()
            members[member] = ("value" if kind == "value" else "property" if "prop" in kind or "read" in kind
                               else "def", ref if kind == "value" else None)
    for m in re.finditer(r"(?m)^\s*(\w+)\s*\.\s*def", text):  # var.def(...) after a named class_ declaration
        target = "<module>" if m.group(1) == "m" else variables.get(m.group(1))
        if target is None:
            continue
        for call in CHAIN.finditer(statement(text, m.start(1))):
            kind, member, _ = call.groups()
            classes.setdefault(target, {})[member] = ("property" if "prop" in kind or "read" in kind else "def", None)
    return classes


def _eval(expr: str, known: dict[str, int]) -> int | None:
    expr = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr.strip())
    expr = re.sub(r"static_cast<\w+>", "", expr)
    expr = re.sub(r"\b(k\w+)\b", lambda m: str(known[m.group(1)]) if m.group(1) in known else m.group(0), expr)
    if not re.fullmatch(r"[0-9a-fA-Fx\s<>|()+\-]+", expr):
        return None
    try:
        return int(eval(expr, {"__builtins__": {}}))  # digits and operators only (checked above)
    except Exception:
        return None


def parse_enums(header: str) -> dict[str, dict[str, int | None]]:
    """{enum short name -> {enumerator -> value}} from ``enum class X : T { ... };`` blocks."""
    enums: dict[str, dict[str, int | None]] = {}
    text = strip_comments(header)
    for m in re.finditer(r"enum\s+class\s+(\w+)\s*:\s*[\w:]+\s*\{(.*?)\}\s*;", text, re.S):
        values: dict[str, int | None] = {}
        known: dict[str, int] = {}
        nxt: int | None = 0
        for item in (i.strip() for i in m.group(2).split(",")):
            if not item:
                continue
            name, _, expr = (p.strip() for p in item.partition("="))
            name = name.split()[0]  # drop attribute macros: kFP16 TRT_DEPRECATED_ENUM = 0
            value = _eval(expr, known) if expr else nxt
            values[name] = value
            if value is not None:
                known[name] = value
            nxt = value + 1 if value is not None else None
        enums.setdefault(m.group(1), {}).update(values)
    return enums


class BinaryNames:
    """Whether a shared object holds a name as a C string. The linker merges string tails (``Logger``
    can be stored as the end of ``ILogger``), so a name counts when some NUL-terminated string ends
    with it: its bytes then sit right before a NUL and after a non-identifier byte or an identifier."""

    def __init__(self, so: bytes) -> None:
        self.so = so
        self.count = len(re.findall(rb"(?<=\x00)[A-Za-z_][A-Za-z0-9_]{0,79}(?=\x00)", so))

    def __contains__(self, name: str) -> bool:
        return name.encode() + b"\x00" in self.so


def binary_names(so: bytes) -> BinaryNames:
    return BinaryNames(so)


def python_names(init: str) -> set[str]:
    """Names the wheel's __init__.py defines at module level or attaches to a class (``X.y = ...``)."""
    names = set(re.findall(r"(?m)^(?:def|class)\s+(\w+)", init)) | set(re.findall(r"(?m)^(\w+)\s*=", init))
    return names | {f"{a}.{b}" for a, b in re.findall(r"(?m)^\s*(\w+)\.(\w+)\s*=", init)}


def version_formula(header: str) -> str:
    """NV_TENSORRT_VERSION as ``major*A+minor*B+patch`` from NvInferRuntimeBase.h (8.x: a constexpr, 10+: a macro)."""
    text = strip_comments(header)
    m = (re.search(r"NV_TENSORRT_VERSION_INT\(major, minor, patch\)\s*\(\(major\)\s*\*\s*(\d+)L?\s*\+\s*\(minor\)"
                   r"\s*\*\s*(\d+)L?", text)
         or re.search(r"kNV_TENSORRT_VERSION_IMPL\s*=\s*\(NV_TENSORRT_MAJOR \* (\d+)\) \+ \(NV_TENSORRT_MINOR \* (\d+)\)",
                      text))
    return f"major*{m.group(1)}+minor*{m.group(2)}+patch" if m else "unknown"


def git_show(repo: Path, branch: str, path: str) -> str | None:
    r = subprocess.run(["git", f"--git-dir={repo}", "show", f"{branch}:{path}"], capture_output=True, text=True)
    if r.returncode != 0:
        r = subprocess.run(["git", "-C", str(repo), "show", f"{branch}:{path}"], capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def git_commit(repo: Path, branch: str) -> str:
    for args in ([f"--git-dir={repo}"], ["-C", str(repo)]):
        r = subprocess.run(["git", *args, "rev-parse", branch], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.strip()
    return "unknown"


def download(requirement: str, wheels: Path, python: str = "3.11") -> Path:
    name = requirement.split("==")[0].replace("-", "_")
    version = requirement.split("==")[1]
    found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "--index-url", "https://pypi.org/simple", "--python-version", python,
                        "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64",
                        "-d", str(wheels), requirement], check=True)
        found = sorted(wheels.glob(f"{name}-{version}-*.whl"))
    return found[0]


def surface(label: str, repo: Path, wheels: Path, local_headers: Path | None, command: str) -> str:
    requirement, branch, *python = VERSIONS[label]
    wheel = download(requirement, wheels, *python)
    with zipfile.ZipFile(wheel) as z:
        so_name = next(n for n in z.namelist() if n.endswith("/tensorrt.so"))
        so = z.read(so_name)
        init = z.read(so_name.rsplit("/", 1)[0] + "/__init__.py").decode()
    names = binary_names(so)
    py_names = python_names(init)
    version = re.search(r'__version__\s*=\s*"([^"]+)"', init).group(1)
    classes: dict[str, dict[str, tuple[str, str | None]]] = {}
    used_sources = []
    onnx_parser_refs: set[str] = set()
    for path in SOURCES:
        text = git_show(repo, branch, path)
        if text is None:
            continue
        used_sources.append(path)
        for cls, members in parse_bindings(text).items():
            classes.setdefault(cls, {}).update(members)
            if path.endswith("pyOnnx.cpp"):
                onnx_parser_refs.add(cls)
    enums: dict[str, dict[str, int | None]] = {}
    onnx_enums: dict[str, dict[str, int | None]] = {}
    used_headers = []
    for path in HEADERS:
        text = git_show(repo, branch, path)
        if text is None:
            continue
        used_headers.append(path)
        (onnx_enums if path.endswith("NvOnnxParser.h") else enums).update(parse_enums(text))
    formula_header = next(h for h in (*VERSION_HEADERS, "") if not h or git_show(repo, branch, h) is not None)
    formula = version_formula(git_show(repo, branch, formula_header) or "") if formula_header else "unknown"
    agree = "not compared"
    if local_headers is not None:
        local = local_headers / branch.split("/")[1] / "include"
        if local.is_dir():
            local_enums: dict[str, dict[str, int | None]] = {}
            for h in sorted(local.glob("NvInfer*.h")):
                local_enums.update(parse_enums(h.read_text(errors="replace")))
            diffs = sorted(k for k in enums if k in local_enums and local_enums[k] != enums[k])
            agree = (f"agree with {local} for {sum(k in local_enums for k in enums)} enums"
                     if not diffs else f"DIFFER from {local} in {diffs}")

    def value_of(cls: str, ref: str | None) -> int | None:
        if not ref or "::" not in ref:
            return None
        enum_name, member = ref.split("::")[-2:]
        table = onnx_enums if cls in onnx_parser_refs and enum_name in onnx_enums else enums
        return table.get(enum_name, {}).get(member)

    lines = [f"# TensorRT Python bindings surface for {label} (tensorrt.__version__ {version})",
             f"# made by: {command}",
             f"# wheel: {wheel.name} (PyPI {requirement}) sha256 {hashlib.sha256(wheel.read_bytes()).hexdigest()}",
             f"# binary: {so_name}, {names.count} identifier strings",
             f"# structure: NVIDIA/TensorRT {branch} @ {git_commit(repo, branch)}: {', '.join(used_sources)}",
             f"# enum values: {branch} {', '.join(used_headers)} (local ../shared headers: {agree})",
             f"# version code (NV_TENSORRT_VERSION, the calibration cache header): {formula} "
             f"({branch} {formula_header})",
             "# line: <Class>[.<member>] <kind> [= <value>]; kinds: class, enum, def, property, value, python",
             "# kept only when the binary (or the wheel's __init__.py for 'python') holds the name"]
    missing = []
    for cls in CLASSES:
        if cls == "<module>":
            members = classes.get("<module>", {})
        elif cls not in classes:
            continue
        else:
            members = classes[cls]
        leaf = cls.split(".")[-1]
        if cls != "<module>":
            if leaf not in names:
                missing.append(cls)
                continue
            lines.append(f"{cls} {members[''][0]}")
        for member, (kind, ref) in sorted(members.items()):
            if not member:
                continue
            if member not in names:
                missing.append(f"{cls}.{member}")
                continue
            value = value_of(cls, ref) if kind == "value" else None
            prefix = "" if cls == "<module>" else f"{cls}."
            lines.append(f"{prefix}{member} {kind}" + (f" = {value}" if value is not None else ""))
    for name in sorted(py_names):
        owner = name.split(".")[0]
        if "." not in name and (name.startswith("_") and name != "__version__"):
            continue
        if "." in name and owner not in CLASSES:
            continue
        lines.append(f"{name} python")
    lines.append(f"# in {branch} sources but not in this binary: {', '.join(missing) or 'none'}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tensorrt-repo", type=Path, required=True, help="clone or bare mirror of NVIDIA/TensorRT")
    ap.add_argument("--wheels", type=Path, default=Path("/tmp/trt-wheels"), help="download folder (reused)")
    ap.add_argument("--local-headers", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared"
                    / "third_party" / "tensorrt", help="../shared/third_party/tensorrt, to cross-check enum values")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "trt_surface")
    ap.add_argument("versions", nargs="*", default=list(VERSIONS))
    args = ap.parse_args(argv)
    args.wheels.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    command = "python tools/trt_surface.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None
                                                                                   else sys.argv[1:]))
    for label in args.versions:
        text = surface(label, args.tensorrt_repo, args.wheels,
                       args.local_headers if args.local_headers.is_dir() else None, command)
        (args.out / f"{label}.txt").write_text(text)
        print(f"{args.out / (label + '.txt')}: {text.count(chr(10))} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
