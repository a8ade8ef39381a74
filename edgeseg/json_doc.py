"""JSON documents a user may have edited, truncated or replaced (bundle and calibration manifests): read
in bounded memory and time, every failure one EdgesegError line (never a traceback, never a hang).

    data = read_json_document(path, "bundle manifest", "rebuild the bundle with edgeseg build")

Refused, naming ``what``, the path and ``fix``: a missing path, anything but a regular file (a FIFO
would block the reader), more than MAX_BYTES, bytes that are not UTF-8, text that is not JSON, nesting
deeper than MAX_DEPTH. What the document must hold is its reader's check (a schema), not this module's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import require_file

MAX_BYTES = 64 << 20  # edgeseg's manifests are kilobytes; a calibration manifest of 100k images is ~15 MB
MAX_DEPTH = 32  # edgeseg writes at most 6 levels


def read_json_document(path: str | Path, what: str, fix: str) -> Any:
    """The JSON value in ``path`` (see the module docstring for what is refused)."""
    path = require_file(path, what, fix)  # a FIFO or device is refused before it is opened
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        raise EdgesegError(f"cannot read {what} {path} ({e.strerror or e}); {fix}") from None
    if len(data) > MAX_BYTES:
        raise EdgesegError(f"{what} {path} is larger than {MAX_BYTES >> 20} MB, not a manifest edgeseg wrote; {fix}")
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise EdgesegError(f"{what} {path} is not UTF-8 text (byte {e.start}); {fix}") from None
    except json.JSONDecodeError as e:
        raise EdgesegError(f"{what} {path} is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                           f"{fix}") from None
    except RecursionError:
        value = None  # nested past Python's recursion limit: refused below like any deep document
        depth = MAX_DEPTH + 1
    else:
        depth = nesting_depth(value)
    if depth > MAX_DEPTH:
        raise EdgesegError(f"{what} {path} nests arrays/objects deeper than {MAX_DEPTH} levels, not a manifest "
                           f"edgeseg wrote; {fix}")
    return value


def quote(value: Any, limit: int = 80) -> str:
    """A value from a document as one line for an error message (repr escapes newlines and unprintable
    characters), at most ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def nesting_depth(value: Any) -> int:
    """How deeply lists and dicts nest in ``value`` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            depth += 1
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((child, depth) for child in (item.values() if isinstance(item, dict) else item))
    return deepest
