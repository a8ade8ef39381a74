"""Outputs: what a command may replace, and replacing a folder so a kill never loses the old one.

The one output rule, for every command that writes a folder (build, infer, deploy, train, calibrate)
or a file (export, quantize): ``OUT`` may be missing (it is created, with its missing parents), an
empty folder, or the command's own earlier output of the same kind (an edgeseg bundle whose files are
all in its manifest, an earlier ``edgeseg infer`` folder, an ONNX edgeseg export wrote, ...): that is
replaced. Anything else is refused with a one-line error naming the file that would have been
destroyed, unless ``overwrite`` (``--overwrite``) is given (a file never replaces a folder).
``check_out_dir`` / ``check_out_file`` apply it; ``check_inputs_outside`` refuses, even with
``overwrite``, an input (file or folder the command reads) that is ``OUT`` or lies inside it. A
command runs all three, and every other check of its arguments, before it writes anything.

``staging_dir(out)`` builds the new folder beside ``out`` under ``.NAME.edgeseg-staging-XXXX``,
holds an flock on it while it is written, fsyncs it, and swaps it with ``out`` in one
``renameat2(RENAME_EXCHANGE)`` (Linux; elsewhere two renames, recovered by the next run). A run
that is killed leaves ``out`` as it was plus an unlocked staging folder, which the next run into
the same ``out`` removes (a locked one belongs to a live run and is left alone).
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from edgeseg.errors import EdgesegError
from edgeseg.io_utils import ensure_parent, fsync_path, fsync_tree, make_dirs, new_temp_dir

STAGING = "edgeseg-staging-"
OLD = "edgeseg-old-"  # only the two-rename fallback: the previous folder, moved aside for a moment
RENAME_EXCHANGE = 2
AT_FDCWD = -100

# ``foreign(out)`` -> the first entry of an existing, non-empty folder that is NOT the command's own
# output (None when everything in it is), so the error can name what would be destroyed.
Foreign = Callable[[Path], "Path | None"]


def first_foreign(out: Path, own: Callable[[Path], bool]) -> Path | None:
    """The first entry of ``out`` (sorted) for which ``own(entry)`` is False."""
    return next((p for p in sorted(out.iterdir()) if not own(p)), None)


def only_names(folder: Path, names: Iterable[str]) -> Path | None:
    """The first entry of ``folder`` whose name is not in ``names`` (None when all are)."""
    allowed = set(names)
    return first_foreign(folder, lambda p: p.name in allowed)


def check_out_dir(out: str | Path, foreign: Foreign, what: str, *, overwrite: bool = False,
                  flag: str = "--out") -> Path:
    """Apply the rule above to ``out`` before any work; return it as a Path. ``what`` names the
    command's output kind in the error (e.g. "edgeseg bundle")."""
    out = Path(out)
    if overwrite or not (out.exists() or out.is_symlink()):
        return out
    if out.is_symlink() or not out.is_dir():
        victim: Path | None = out
    elif not any(out.iterdir()):
        return out
    else:
        victim = foreign(out)
    if victim is None:
        return out
    raise EdgesegError(f"{flag} {out}: {victim} is {_kind(victim)} that is not part of an {what}, and writing {out} "
                       f"would delete it; expected a new or empty folder or an earlier {what}; choose another "
                       f"{flag} or pass --overwrite to replace {out} with everything in it")


def _kind(path: Path) -> str:
    if path.is_symlink():
        return "a symbolic link"
    if path.is_dir():
        return "a folder"
    return "a file" if path.is_file() else "a special file (FIFO, socket or device)"


def check_out_file(out: str | Path, own: Callable[[Path], bool], what: str, *, overwrite: bool = False,
                   flag: str = "--out") -> Path:
    """The rule above for a command writing one file ``out``, before any work; return it as a Path.
    ``own(out)`` says whether an existing regular file is the command's earlier output of its kind
    (asked of nothing else: a FIFO is never opened). ``what`` names that kind, with its article (e.g. "an
    edgeseg ONNX export").
    Parents that are files are refused; missing parents are left for the writer to create."""
    out = Path(out)
    if out.is_dir():
        raise EdgesegError(f"{flag} {out} is a folder; expected a file path to write; choose another {flag}")
    ensure_parent(out)
    if overwrite or not (out.exists() or out.is_symlink()):
        return out
    if out.is_file() and not out.is_symlink() and own(out):
        return out
    raise EdgesegError(f"{flag} {out} is {_kind(out)} that is not {what}, and writing it would replace it; "
                       f"expected a new file or {what}; choose another {flag} or pass --overwrite to replace it")


def check_inputs_outside(out: str | Path, inputs: dict[str, str | Path | None], flag: str = "--out") -> None:
    """Refuse, whatever ``overwrite`` says, when an input the command reads (``{"--onnx": path, ...}``; None
    skipped) is ``out`` or lies inside it, symlinks followed: replacing ``out`` would destroy it."""
    target = Path(out).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        where = Path(path).resolve()
        if where == target or target in where.parents:
            inside = "is" if where == target else "lies inside"
            raise EdgesegError(f"{name} {path} {inside} {flag} {out}, which this command replaces, so writing the "
                               f"output would destroy its own input; choose another {flag} outside it")


def spec_path(spec: str | None) -> Path | None:
    """The PATH of an input spec ``KIND:PATH`` (``camvid:/data/CamVid``, ``images:DIR``); None for a spec
    naming no path (``synthetic``, ``synthetic:HxW``), for ``check_inputs_outside``."""
    if not spec:
        return None
    kind, _, arg = spec.partition(":")
    return Path(arg.strip()) if arg.strip() and kind.strip().lower() != "synthetic" else None


def relative_path_problem(relative: object) -> str | None:
    """Why ``relative`` is not a relative POSIX path of plain names (None when it is)."""
    if not isinstance(relative, str) or not relative:
        return f"{relative!r} is not a path"
    parts = relative.split("/")
    if relative.startswith("/") or "\\" in relative or "\0" in relative or any(p in ("", ".", "..") for p in parts) \
            or Path(relative).is_absolute():
        return f"{relative!r} is not a relative path of plain names (no '..', '.', '\\', empty or absolute part)"
    return None


def contained_path(root: Path, relative: object, what: str) -> Path:
    """``root / relative`` once ``relative`` is a plain relative path that resolves inside ``root``
    (symlinks followed: one leading out is refused); else a one-line error naming ``what``."""
    problem = relative_path_problem(relative)
    if problem:
        raise EdgesegError(f"{what} {problem}; a manifest may only name files inside its folder: re-create it")
    path = Path(root) / str(relative)
    base, target = Path(root).resolve(), path.resolve()
    if base not in target.parents:
        raise EdgesegError(f"{what} {relative!r} resolves to {target}, outside {root}; a manifest may only name "
                           "files inside its folder: remove the link or re-create the manifest")
    return path


def remove(path: Path) -> None:
    """Delete a file, link or folder tree (missing is fine)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clear_dir(out: Path) -> None:
    """Empty ``out`` (an output folder the rule above allows to be replaced in place)."""
    for entry in list(out.iterdir()):
        remove(entry)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on folder ``path``, or None when another process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _leftovers(out: Path, tag: str) -> list[Path]:
    prefix = f".{out.name}.{tag}"
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(prefix))


def clean_leftovers(out: Path) -> list[Path]:
    """Remove what killed runs into ``out`` left beside it (unlocked staging folders); put back a
    previous folder the two-rename fallback had moved aside when ``out`` is missing. Returns what
    was removed."""
    removed = []
    for old in _leftovers(out, OLD):
        fd = _try_lock(old)
        if fd is None:
            continue
        try:
            if not out.exists():
                os.rename(old, out)  # killed between the two renames: the previous folder comes back
            else:
                remove(old)
                removed.append(old)
        finally:
            os.close(fd)
    for stage in _leftovers(out, STAGING):
        fd = _try_lock(stage)
        if fd is None:  # a live run is writing it
            continue
        try:
            remove(stage)
            removed.append(stage)
        finally:
            os.close(fd)
    return removed


def _new_locked_stage(out: Path) -> tuple[Path, int]:
    """A fresh staging folder beside ``out``, flock-ed by us (so no other run cleans it away)."""
    for _ in range(10):
        stage = new_temp_dir(out.parent, f".{out.name}.{STAGING}")
        fd = _try_lock(stage)
        if fd is None:
            continue
        try:  # another run's cleaner may have removed it between mkdir and flock: then try a new one
            if os.path.samestat(os.fstat(fd), os.stat(stage)):
                return stage, fd
        except FileNotFoundError:
            pass
        os.close(fd)
    raise EdgesegError(f"cannot create a staging folder beside {out}; check that {out.parent} is writable")


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False when the system or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish(stage: Path, out: Path) -> None:
    """Make the finished ``stage`` folder ``out``: fsync it, swap it in, remove the previous one."""
    fsync_tree(stage)
    if out.exists() or out.is_symlink():
        if _exchange(stage, out):
            previous = stage  # the swap put the previous folder under the staging name
        else:
            previous = out.parent / f".{out.name}.{OLD}{secrets.token_hex(4)}"
            os.rename(out, previous)
            os.rename(stage, out)
        fsync_path(out.parent)
        remove(previous)
    else:
        os.rename(stage, out)
    fsync_path(out.parent)


@contextlib.contextmanager
def scratch_dir(out: str | Path) -> Iterator[Path]:
    """A hidden working folder beside ``out`` (e.g. the demo build's model), removed when the block ends,
    also on error; locked like a staging folder, so a killed run's is removed by the next run into ``out``."""
    out = Path(out)
    make_dirs(out.parent)
    stage, fd = _new_locked_stage(out)
    try:
        yield stage
    finally:
        os.close(fd)
        remove(stage)


@contextlib.contextmanager
def staging_dir(out: str | Path) -> Iterator[Path]:
    """A staging folder beside ``out`` that replaces ``out`` only when the block succeeds (see the
    module docstring). Missing parents of ``out`` are created; leftovers of killed runs are cleaned."""
    out = Path(out)
    make_dirs(out.parent)
    clean_leftovers(out)
    stage, fd = _new_locked_stage(out)
    try:
        yield stage
        publish(stage, out)
    finally:
        os.close(fd)
        if stage.exists():
            remove(stage)
