"""The package's stage order, as a rule over every import (module level and inside functions).

A module may import from its own stage and from stages of lower rank, never from a higher one or
from another stage of the same rank (pipeline and bench are siblings). The top-level package
(the public API ``edgeseg.load``) and ``python -m edgeseg`` sit above everything. benchmarks/
never import the CLI.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgeseg"
BENCHMARKS = PACKAGE.parent / "benchmarks"

COMMON = ("errors", "io_utils", "json_doc", "metrics", "ort_session", "out_dir", "postprocess", "timing", "version")
RANKS = {"common": 0, "data": 1, "models": 2, "train": 3, "export": 4, "backends": 5, "quantize": 6,
         "bundle": 7, "doctor": 7, "pipeline": 8, "bench": 8, "cli": 9, "api": 10}


def stage_of(module: str) -> str:
    """'edgeseg.bundle.build' -> 'bundle'; common modules -> 'common'; the package itself -> 'api'."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return "api"
    return "common" if parts[1] in COMMON else parts[1]


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module) of every edgeseg import in ``path``."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            if name == "edgeseg":  # `from edgeseg import x`: x is a submodule or a public-API name
                found += [(node.lineno, f"edgeseg.{a.name}") for a in node.names]
            elif name.startswith("edgeseg."):
                found.append((node.lineno, name))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "edgeseg"]
    return found


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def violations(root: Path) -> list[str]:
    """Every import in the package at ``root`` that points up or sideways in the stage order."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        own = stage_of(module)
        for line, target in imported_modules(path, module):
            theirs = stage_of(target)
            if theirs not in RANKS:
                bad.append(f"{path.relative_to(root.parent)}:{line} imports {target}: stage {theirs!r} is not in RANKS")
            elif theirs != own and RANKS[theirs] >= RANKS[own]:
                bad.append(f"{path.relative_to(root.parent)}:{line} ({own}) imports {target} ({theirs})")
    return bad


def test_every_folder_is_a_known_stage():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert folders <= set(RANKS), f"unranked stage folders: {folders - set(RANKS)}"
    assert modules <= set(COMMON), f"top-level modules outside the common set: {modules - set(COMMON)}"
    assert not [p for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"
                and not (p / "__init__.py").exists()], "every stage folder is a regular package"


def test_no_module_imports_a_higher_stage():
    assert violations(PACKAGE) == []


def test_the_rule_catches_an_upward_and_a_sideways_import(tmp_path):
    pkg = tmp_path / "edgeseg"
    for folder in ("data", "bundle", "bench", "pipeline"):
        (pkg / folder).mkdir(parents=True)
        (pkg / folder / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "thing.py").write_text("def f():\n    from edgeseg.bundle.build import x\n")
    (pkg / "bench" / "thing.py").write_text("from ..pipeline import infer\n")
    (pkg / "pipeline" / "thing.py").write_text("from edgeseg.data import thing\nfrom . import other\n")
    found = violations(pkg)
    assert len(found) == 2, found
    assert "data/thing.py:2 (data) imports edgeseg.bundle.build (bundle)" in found[1]
    assert "bench/thing.py:1 (bench) imports edgeseg.pipeline (pipeline)" in found[0]


def test_benchmarks_do_not_import_the_cli():
    for path in sorted(BENCHMARKS.glob("*.py")):
        for line, target in imported_modules(path, "benchmarks"):
            assert stage_of(target) != "cli", f"{path.name}:{line} imports {target}"
