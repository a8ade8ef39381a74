"""One doctor check = one table row: PASS / FAIL / SKIPPED, what was seen, the fix, the time it took."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

PASS, FAIL, SKIPPED = "PASS", "FAIL", "SKIPPED"


@dataclass
class Check:
    name: str
    status: str = PASS
    detail: str = ""  # what was found (version, agreement %, the error)
    fix: str = ""  # for FAIL / SKIPPED: what to do about it
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Skip(Exception):
    """Raised inside a check: SKIPPED with this reason (``fix`` says how to enable the check)."""

    def __init__(self, reason: str, fix: str = "") -> None:
        super().__init__(reason)
        self.fix = fix


class Failed(Exception):
    """Raised inside a check: FAIL with this detail and fix."""

    def __init__(self, detail: str, fix: str = "") -> None:
        super().__init__(detail)
        self.fix = fix


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    @contextmanager
    def check(self, name: str) -> Iterator[Check]:
        """Run the body as check ``name``; Skip / Failed / any exception set the row's status. The body
        sets ``row.detail`` on success."""
        row = Check(name)
        start = time.perf_counter()
        try:
            yield row
        except Skip as e:
            row.status, row.detail, row.fix = SKIPPED, str(e), e.fix
        except Failed as e:
            row.status, row.detail, row.fix = FAIL, str(e), e.fix
        except Exception as e:  # a real failure of the component under test: reported, not raised
            row.status, row.detail = FAIL, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            row.fix = row.fix or "see the detail; rerun with --keep DIR to inspect the files"
        row.seconds = round(time.perf_counter() - start, 3)
        self.checks.append(row)

    def skip(self, name: str, reason: str, fix: str = "") -> None:
        self.checks.append(Check(name, SKIPPED, reason, fix))

    def to_dict(self) -> dict[str, Any]:
        return {"checks": [c.to_dict() for c in self.checks], "failed": len(self.failed)}


def require(condition: bool, detail: str, fix: str = "") -> None:
    if not condition:
        raise Failed(detail, fix)


__all__ = ["Check", "FAIL", "Failed", "PASS", "Report", "SKIPPED", "Skip", "require"]
