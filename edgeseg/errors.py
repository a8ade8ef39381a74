"""One exception family for user mistakes.

Every message is one line: what was expected, what came, and how to fix it. The CLI prints
these without a traceback (``--debug`` shows it); anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import errno
import shutil
from collections.abc import Iterator


class EdgesegError(Exception):
    """A user-facing error: bad input, missing file, incompatible artifact."""


class DatasetError(EdgesegError):
    """A dataset spec, file or label that cannot be used."""


class ModelError(EdgesegError):
    """An unknown model name or an invalid model configuration."""


class CheckpointError(EdgesegError):
    """A checkpoint or weights file that is missing, truncated or for another model."""


# OSErrors that mean the user's disk or path cannot take what a command does, with the fix for each;
# any other OSError is a bug (or a broken machine) and keeps its traceback.
_OS_FIXES: dict[int, str] = {
    errno.ENOSPC: "free space on that disk (df -h) or write somewhere else",
    errno.EDQUOT: "your disk quota is used up; free space (quota -s) or write somewhere else",
    errno.EFBIG: "the file system cannot hold a file this large; write to another disk",
    errno.EROFS: "the file system is mounted read-only; choose a path on a writable disk",
    errno.EACCES: "you lack the permission; choose a path you can write, or fix its permissions",
    errno.EPERM: "the operation is not permitted there; choose another path",
    errno.ENAMETOOLONG: "the path is too long; choose a shorter one",
    errno.ENOTDIR: "a file stands where a folder is expected in that path; choose another path",
    errno.EISDIR: "a folder stands where a file is expected; choose another path",
    errno.ELOOP: "the path has a symbolic-link loop; fix the links or choose another path",
    errno.ENXIO: "the path is a device or a pipe nobody writes to; pass a regular file",
}


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def os_error(e: OSError, path: object = None) -> EdgesegError | None:
    """The one-line EdgesegError for an OSError a user's path or disk caused (a full disk, a read-only or
    forbidden folder, ...), naming ``path`` (else the error's own file name); None for any other OSError."""
    if isinstance(e, shutil.SpecialFileError):  # shutil's copy refusing a FIFO or a socket (no errno)
        return EdgesegError(f"{e}: expected a regular file; pass a regular file")
    fix = _OS_FIXES.get(e.errno or -1)
    if fix is None:
        return None
    if path is None and e.filename2 is not None and e.errno in _DISK_FULL:  # a copy (shutil): the target is 2nd
        path = e.filename2
    what = (f"cannot write {path}" if path is not None else f"{e.filename}" if e.filename is not None
            else "a write failed")
    return EdgesegError(f"{what}: {e.strerror or e} ({errno.errorcode.get(e.errno, e.errno)}); {fix}")


@contextlib.contextmanager
def user_os_errors(path: object = None) -> Iterator[None]:
    """Inside the block, an OSError a user's path or disk caused becomes one EdgesegError line (``os_error``)
    naming ``path``; any other OSError propagates unchanged."""
    try:
        yield
    except OSError as e:
        error = os_error(e, path)
        if error is None:
            raise
        raise error from None
