"""Safe output files: check the target before long work, write atomically, lock output directories.

Every command (and every ``save_*`` function of :mod:`golden`) that writes a file goes through this
module, so a hostile or mistaken output path is refused in one line *before* any training, export or
Verilog generation runs, and a write that fails leaves nothing behind:

- :func:`check_output_path` -- the target of a file output must be a regular file (or a symlink to one)
  or a new name whose nearest existing ancestor is a writable directory; never ``''``, a directory, a
  FIFO, a socket, a device, a dangling symlink or a path under a regular file.
- :func:`check_output_dir` -- the same for a directory output (``generate --out DIR``).
- :func:`atomic_output` -- yields a temporary path in the target's directory; on success the file is
  ``fsync``-ed and ``os.replace``-d onto the target, on any failure it is removed.
  :func:`write_text_atomic` / :func:`write_bytes_atomic` wrap it.
- :func:`locked_dir` -- an exclusive ``flock`` on ``DIR/.post-accel.lock`` while a command writes into
  ``DIR``, so two concurrent ``generate`` runs into one ``--out`` do not interleave (the second waits).

Failures raise :class:`OutputPathError` (an :class:`golden.errors.InputError`: exit status 2) naming the
flag (``what``), the path and the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
from pathlib import Path

from .errors import InputError

__all__ = ["OutputPathError", "check_input_file", "check_output_path", "check_output_dir", "atomic_output", "write_text_atomic",
           "write_bytes_atomic", "locked_dir", "LOCK_NAME"]

#: The lock file :func:`locked_dir` keeps inside an output directory.
LOCK_NAME = ".post-accel.lock"


class OutputPathError(InputError):
    """An output path that cannot (or must not) be written; the message names the flag and the fix."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return name
    return "a special file"


def _nonempty(path, what: str) -> Path:
    if path is None or os.fspath(path) == "":
        raise OutputPathError(f"{what} is empty; give a path to write to")
    text = os.fspath(path)
    if "\0" in text:
        raise OutputPathError(f"{what} {text!r} contains a NUL byte; give a plain path")
    return Path(text)


def _check_new_name(p: Path, what: str) -> None:
    """``p`` does not exist: its nearest existing ancestor must be a writable, searchable directory."""
    anc = p.absolute().parent
    while not os.path.lexists(anc):
        if anc == anc.parent:
            break
        anc = anc.parent
    try:
        st = os.stat(anc)
    except OSError as exc:
        raise OutputPathError(f"{what} {p}: cannot use its directory {anc} ({exc.strerror}); "
                              f"choose a path in an existing directory") from None
    if not stat.S_ISDIR(st.st_mode):
        raise OutputPathError(f"{what} {p}: {anc} is {_kind(st.st_mode)}, not a directory, so nothing can be "
                              f"created under it; choose a path in a directory")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise OutputPathError(f"{what} {p}: directory {anc} is not writable; choose a writable directory")


def check_input_file(path, what: str) -> Path:
    """Check that input ``path`` is an existing regular file (or a symlink to one) before opening it:
    reading a FIFO would block forever and a device has no end. Raises :class:`golden.errors.InputError`."""
    p = Path(os.fspath(path))
    if os.fspath(path) == "":
        raise InputError(f"{what} is empty; give the path of a file")
    try:
        st = os.stat(p)
    except OSError as exc:
        raise InputError(f"{p}: {exc.strerror.lower() if exc.strerror else 'cannot open'}; check the {what} "
                         f"path") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p} is {_kind(st.st_mode)}, not a regular file; pass the {what} file itself")
    return p


def check_output_path(path, what: str) -> Path:
    """Check that ``path`` (given by flag ``what``) can be written as a regular file; return it as a Path.

    Run this before any long work. Accepted: an existing regular file (or symlink to one) that is
    writable, or a new name whose nearest existing ancestor is a writable directory (missing parent
    directories are created by :func:`atomic_output`). Anything else raises :class:`OutputPathError`.
    """
    p = _nonempty(path, what)
    if os.fspath(path).endswith(os.sep):
        raise OutputPathError(f"{what} {p}/ ends in '/', which names a directory; give a file name")
    if os.path.lexists(p):
        try:
            st = os.stat(p)                               # follows symlinks: the file that would be replaced
        except OSError as exc:
            raise OutputPathError(f"{what} {p}: cannot inspect it ({exc.strerror}; a dangling symlink?); "
                                  f"remove it or choose another path") from None
        if not stat.S_ISREG(st.st_mode):
            fix = ("give a file path inside it" if stat.S_ISDIR(st.st_mode)
                   else "post-accel only replaces regular files; choose a file path")
            raise OutputPathError(f"{what} {p} is {_kind(st.st_mode)}, not a regular file; {fix}")
        if not os.access(p, os.W_OK):
            raise OutputPathError(f"{what} {p} is not writable; choose another path or fix its permissions")
        _check_new_name(Path(os.path.realpath(p)), what)   # the rename needs a writable directory too
        return p
    _check_new_name(p, what)
    return p


def check_output_dir(path, what: str) -> Path:
    """Check that ``path`` (given by flag ``what``) can be used as an output directory; return it."""
    p = _nonempty(path, what)
    if os.path.lexists(p):
        try:
            st = os.stat(p)
        except OSError as exc:
            raise OutputPathError(f"{what} {p}: cannot inspect it ({exc.strerror}; a dangling symlink?); "
                                  f"remove it or choose another directory") from None
        if not stat.S_ISDIR(st.st_mode):
            raise OutputPathError(f"{what} {p} is {_kind(st.st_mode)}, not a directory; choose a directory path")
        if not os.access(p, os.W_OK | os.X_OK):
            raise OutputPathError(f"{what} {p}: directory is not writable; choose a writable directory")
        return p
    _check_new_name(p, what)
    return p


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path, what: str):
    """Yield a temporary path beside ``path``; write it, and on a clean exit it replaces ``path``.

    The temporary file is fsync-ed and renamed with ``os.replace`` (atomic on POSIX); on any exception
    it is removed and the exception propagates. An ``OSError`` while writing or renaming becomes an
    :class:`OutputPathError` saying that ``path`` was not written. New files get the usual
    ``0666 & ~umask`` mode; an existing file keeps its mode.
    """
    p = check_output_path(path, what)
    target = Path(os.path.realpath(p)) if os.path.islink(p) else p
    parent = target.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise OutputPathError(f"{what} {p} was not written: {exc.strerror or exc}; choose a writable path") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode) if target.exists() else 0o666 & ~_umask()
            os.chmod(tmp, mode)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            if os.path.lexists(target) and not os.path.isfile(target):    # replaced meanwhile by a special file
                raise OutputPathError(f"{what} {p} was replaced by a non-regular file while writing; not written")
            os.replace(tmp, target)
        except OSError as exc:
            raise OutputPathError(f"{what} {p} was not written: {exc.strerror or exc}; "
                                  f"check the disk and the directory's permissions") from None
        _fsync_dir(parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path, data: bytes, what: str) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`); return the path."""
    with atomic_output(path, what) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:
            raise OutputPathError(f"{what} {path} was not written: {exc.strerror or exc}") from None
    return Path(path)


def write_text_atomic(path, text: str, what: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    return write_bytes_atomic(path, text.encode(), what)


@contextlib.contextmanager
def locked_dir(path, what: str):
    """Create directory ``path`` if needed and hold an exclusive lock on it while the block runs.

    A second writer into the same directory (another process) waits until the first is done, so the
    files of one run are never mixed with another's. The lock file ``LOCK_NAME`` stays in the directory.
    """
    d = check_output_dir(path, what)
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd = os.open(d / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputPathError(f"{what} {d}: cannot create or lock the directory ({exc.strerror or exc}); "
                              f"choose a writable directory") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield d
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
