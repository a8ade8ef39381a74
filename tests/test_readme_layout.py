"""README's Layout table is held against the tree and the layering rule, so it cannot go stale.

Each table row is ``| rank | stage | folder | modules |``; the modules cell lists every module of the
folder as items separated by ``; ``, each starting (after an optional ``label: ``) with one or more
backticked module names separated by ``, ``. The rows must name exactly the stages
and ranks of ``tests/test_layering.py`` and exactly the modules on disk.
"""
from __future__ import annotations

import re

from test_layering import COMMON, PACKAGE, RANKS

README = PACKAGE.parent / "README.md"
ROW = re.compile(r"^\| *(\d+) *\| *(\w+) *\| *`([^`]+)` *\| *(.+?) *\|$")
ITEM = re.compile(r"^(?:[^`;]*?: )?((?:`\w+`(?:, )?)+)")


def layout_rows(readme: str) -> dict[str, tuple[int, str, list[str]]]:
    """stage -> (rank, folder, module names) from the README's "## Layout" section."""
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        match = ROW.match(line.strip())
        if match:
            rank, stage, folder, cell = match.groups()
            rows[stage] = (int(rank), folder, [name for item in cell.split("; ") for name in item_modules(item)])
    return rows


def item_modules(item: str) -> list[str]:
    """The module names an item starts with (backticked, separated by ", "), after an optional "label: "."""
    match = ITEM.match(item.strip())
    return re.findall(r"`(\w+)`", match.group(1)) if match else [f"<no module name in {item!r}>"]


def modules_on_disk(stage: str) -> list[str]:
    folder = PACKAGE if stage == "common" else PACKAGE / stage
    return sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "__main__"))


def test_the_table_names_every_stage_with_the_layering_rank():
    rows = layout_rows(README.read_text())
    assert {stage: rank for stage, (rank, _, _) in rows.items()} == {s: r for s, r in RANKS.items() if s != "api"}
    for stage, (_, folder, _) in rows.items():
        assert folder == ("edgeseg/" if stage == "common" else f"edgeseg/{stage}/"), stage


def test_the_table_lists_exactly_the_modules_on_disk():
    rows = layout_rows(README.read_text())
    for stage, (_, _, modules) in rows.items():
        assert sorted(modules) == modules_on_disk(stage), f"README Layout row {stage!r} is stale"
    assert sorted(rows["common"][2]) == sorted(COMMON)


def test_the_parser_catches_a_missing_module():
    text = ("x\n## Layout\n| 1 | data | `edgeseg/data/` | `spec` `KIND:PATH`; kinds: `folder`, `voc` files |\n"
            "## Next\n")
    assert layout_rows(text) == {"data": (1, "edgeseg/data/", ["spec", "folder", "voc"])}
    assert sorted(layout_rows(text)["data"][2]) != modules_on_disk("data")
