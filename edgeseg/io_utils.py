"""Atomic, durable file writes: write to a temporary file in the target folder, fsync it, rename it
over the target, fsync the folder; an interrupted run (Ctrl-C, SIGKILL, power cut) leaves the old
file or the complete new one under the name, never a half-written or empty one.

Files and folders get the modes a plain ``open()`` / ``mkdir`` gives under the user's umask
(0644 / 0755 under umask 022): ``tempfile.mkstemp`` / ``mkdtemp`` would force 0600 / 0700, so a
Triton or DeepStream process running as another user could not read what edgeseg wrote.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from edgeseg.errors import EdgesegError, user_os_errors

FILE_MODE = 0o666  # before the umask, as open() uses
DIR_MODE = 0o777  # before the umask, as mkdir uses


def make_dirs(folder: str | Path, flag: str = "") -> Path:
    """Create ``folder`` and its missing parents; a one-line error when that is impossible."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise EdgesegError(f"{flag}{' ' if flag else ''}{folder}: cannot create this folder: {blocker} is a file; expected a folder "
                           "path; choose another path") from None
    except OSError as e:
        raise EdgesegError(f"{flag}{' ' if flag else ''}{folder}: cannot create this folder ({e.strerror or type(e).__name__}); "
                           "expected a folder you can create; choose another path") from None
    return folder


def ensure_parent(path: str | Path, create: bool = False) -> Path:
    """Return ``path`` as a Path once it can be written as a file: not a folder, and its missing parent
    folders creatable (no file in the way); ``create=True`` creates them (the check alone leaves no trace)."""
    path = Path(path)
    if path.is_dir():
        raise EdgesegError(f"{path} is a folder; expected a file path to write; choose another path")
    if create:
        make_dirs(path.parent)
        return path
    existing = next(p for p in [path.parent, *path.parent.parents] if p.exists() or p == Path(p.anchor or "."))
    if existing.exists() and not existing.is_dir():
        raise EdgesegError(f"{path}: cannot create folder {path.parent}: {existing} is a file; expected a folder "
                           "path; choose another path")
    return path


_NOT_REGULAR = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def require_file(path: str | Path, what: str = "file", fix: str = "check the path",
                 error: type[EdgesegError] = EdgesegError) -> Path:
    """``path`` as a Path when it is a regular file (symbolic links followed); else a one-line ``error``
    saying what it is, raised BEFORE anything opens it (opening a FIFO waits forever for a writer).
    Every reader of a user-given file path calls this: images, masks, checkpoints, ONNX files, manifests."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; {fix}") from None
    except OSError as e:
        raise error(f"{what} {path} cannot be read ({e.strerror}); {fix}") from None
    if stat.S_ISDIR(mode):
        raise error(f"{what} {path} is a folder: expected a file; {fix}")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
        raise error(f"{what} {path} is {kind}: expected a regular file; {fix}")
    return path


def fsync_path(path: str | Path) -> None:
    """Flush a file's or a folder's data and metadata to the storage device."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if Path(path).is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and folder under ``root`` (folders after their contents), then ``root``."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files:
            if not os.path.islink(os.path.join(folder, name)):
                fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def new_temp_file(folder: Path, prefix: str, suffix: str = ".tmp") -> Path:
    """Create an empty, unique file in ``folder`` with the umask's mode (unlike mkstemp's 0600)."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
            return path
        except FileExistsError:
            continue
    raise EdgesegError(f"cannot create a temporary file in {folder} (100 names taken); clean the folder")


def new_temp_dir(folder: Path, prefix: str) -> Path:
    """Create an empty, unique folder in ``folder`` with the umask's mode (unlike mkdtemp's 0700)."""
    for _ in range(100):
        path = folder / f"{prefix}{secrets.token_hex(4)}"
        try:
            with user_os_errors(folder):  # a read-only or forbidden folder: one line naming it
                os.mkdir(path, DIR_MODE)
            return path
        except FileExistsError:
            continue
    raise EdgesegError(f"cannot create a temporary folder in {folder} (100 names taken); clean the folder")


@contextlib.contextmanager
def atomic_path(path: str | Path, sync_folder: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for the caller to write (and close); on success it is
    fsynced and renamed to ``path`` (then the folder is fsynced unless ``sync_folder=False``: callers
    writing many files sync the folder once at the end); on error it is removed."""
    path = ensure_parent(path, create=True)
    with user_os_errors(path):  # a full disk, a read-only folder, ...: one line naming the target
        tmp_path = new_temp_file(path.parent, f".{path.name}.")
        try:
            yield tmp_path
            fsync_path(tmp_path)
            os.replace(tmp_path, path)
            if sync_folder:
                fsync_path(path.parent)
        finally:
            tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a regular file (anything else refused: a FIFO would block), read in 1 MiB chunks: the one
    hash every manifest uses."""
    h = hashlib.sha256()
    with open(require_file(path), "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
