"""Folders and files the user names, handled one way everywhere: a name that becomes a folder is one folder
name (`folder_name`); a file is written whole or not at all, never through a link (`atomic_write_bytes`); a
run folder's file is read, and copied, only as a regular file of its own (`read_run_file`, `copy_run_folder`);
an OS error on a folder becomes one line naming the path and the fix (`FolderError`, `folder_error`)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import signal
import stat
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .formats import excerpt


class FolderError(RuntimeError):
    """A folder or file the user named that cannot be used as asked (missing, a file, read-only, full, a link, a
    name that is a path); the message names the path and the fix."""

_DEFERRED_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def present(path: str | Path) -> bool:
    """Whether anything is at `path`: a file, a folder, or a link (even one to nothing)."""
    return os.path.lexists(path)


NAME_MAX = 100  # characters of a name that becomes a folder (suffixes such as -s0, .db, _importance.csv follow)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def folder_name(name: Any, what: str, under: str | Path) -> str:
    """`name` where it is one folder name under `under` (letters, digits, '.', '-' and '_', not starting with a
    dot or a dash, at most `NAME_MAX` characters); else a one-line `FolderError` saying so, `what` naming the
    option or key it came from (`--name`, `--study`, `runs[2].name`). Every name a user gives that becomes a
    folder (a record, a sweep's runs, a search study) passes here: none is a path, so none leads outside."""
    if isinstance(name, str) and _NAME.fullmatch(name) and len(name) <= NAME_MAX:
        return name
    shown = excerpt(name)
    raise FolderError(f"{what} {shown}: must be one folder name under {under} (letters, digits, '.', '-' and '_', "
                      f"starting with a letter or digit, at most {NAME_MAX} characters), not a path")


def folder_error(err: OSError, path: str | Path | None = None) -> FolderError:
    """A one-line `FolderError` for an OS error on `path` (else the path the error names): what is wrong and
    the fix, for a missing path, a file where a folder should be, a read-only or full file system, a link."""
    where = path if path is not None else (err.filename or "a file")
    code = err.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        fix = "no space left on its device: free space there, or choose a folder on another device, and run it again"
    elif code == errno.EROFS:
        fix = "on a read-only file system: choose a folder on a writable one"
    elif code in (errno.EACCES, errno.EPERM):
        fix = "permission denied: make it writable for you (chmod u+w), or choose another folder"
    elif code == errno.ENOTDIR:
        fix = "a part of this path is a file, not a folder: choose another path"
    elif code == errno.EISDIR:
        fix = "is a folder where a file should be: move it away, or choose another path"
    elif code == errno.ENOENT:
        fix = "does not exist: create it, or check the path"
    elif code == errno.ELOOP:
        fix = "is a symbolic link: replace it by the file itself (or a copy of it)"
    elif code == errno.ENAMETOOLONG:
        fix = "the path, or a name in it, is too long for the file system: choose a shorter one"
    elif code == errno.EEXIST:
        fix = "exists already: remove it, or choose another path"
    else:
        fix = f"{err.strerror or type(err).__name__}: check the path"
    return FolderError(f"{where}: {fix}")


def make_folder(path: str | Path) -> Path:
    """Create the folder `path` (and its parents) where absent; `FolderError` where it cannot be a folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FolderError(f"{path} is a file, not a folder: choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise folder_error(err, err.filename if err.errno == errno.ENOTDIR and err.filename else path) from None
    return path


def writable_folder(path: str | Path, *, what: str = "folder", other: str = "path") -> Path:
    """`path` where it is (or can be made) a folder this process may write to, checked before anything is
    written there; else a one-line `FolderError` (`what` the folder is, `other` what to choose instead where
    `path` is a file). A folder that does not exist yet is checked at its nearest existing parent, and not
    created."""
    path = Path(path)
    check_path_length(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():  # a dangling link where the folder would be
            raise FolderError(f"{probe} is a link to a missing place: remove it, or choose another path")
        probe = probe.parent
    if not probe.is_dir():
        raise FolderError(f"{probe} is a file, not a {what if probe == path else 'folder'}: choose another "
                          f"{other if probe == path else 'path'}")
    if not os.access(probe, os.W_OK | os.X_OK):
        code = errno.EROFS if _read_only_mount(probe) else errno.EACCES
        raise folder_error(OSError(code, os.strerror(code)), probe)
    return path


PATH_ROOM = 64  # bytes of the longest name written inside a folder the user names (a temporary file's)


def check_path_length(path: str | Path) -> None:
    """A one-line `FolderError` where the folder `path`, with the names a command writes inside it, would pass
    the system's limit on a path (PATH_MAX) or a name (NAME_MAX): found before any work, not at its end."""
    full = os.fsencode(os.path.abspath(path))
    path_max, name_max = _limit("PC_PATH_MAX", 4096), _limit("PC_NAME_MAX", 255)
    longest = max(full.split(b"/"), key=len)
    shown = excerpt(str(path), 70)
    if len(longest) > name_max:
        raise FolderError(f"{shown}: a name in it is {len(longest)} bytes long, over the file system's limit of "
                          f"{name_max}: choose a shorter one")
    if len(full) + PATH_ROOM > path_max:
        raise FolderError(f"{shown}: the path is {len(full)} bytes long, and with the names written inside it "
                          f"passes the system's limit of {path_max} bytes for a path: choose a shorter one")


def _limit(name: str, default: int) -> int:
    try:
        return os.pathconf("/", name)
    except (OSError, ValueError, AttributeError):
        return default


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once, at import: os.umask can only be read by setting it


def atomic_write_bytes(path: Path, data: bytes, *, new: bool = False) -> None:
    """Write `data` to `path` whole or not at all. The temporary file beside it is created exclusively under a
    random name (O_EXCL, O_NOFOLLOW: never through a link planted there, never another writer's), flushed to
    disk, then renamed over `path` (a link at `path` is replaced, not followed). With `new`, `path` must not
    exist, also when another writer makes it meanwhile: the file is linked into place (a link to an existing
    name fails), and the later of two writers gets FileExistsError. On any error, Ctrl-C and a full disk
    included, the temporary file is removed; an OS error becomes a one-line `FolderError`."""
    path = Path(path)
    try:
        existing = os.lstat(path)
        mode = stat.S_IMODE(existing.st_mode) if stat.S_ISREG(existing.st_mode) else 0o666 & ~_UMASK
    except OSError:
        mode = 0o666 & ~_UMASK
    # Ctrl-C, SIGTERM and SIGHUP wait while the temporary file is made, so that none lands between its
    # creation and the cleanup below (a signal that came meanwhile is raised inside it, once unblocked).
    deferred = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED_SIGNALS) if deferred else None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    except OSError as err:
        if deferred:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        raise folder_error(err, path.parent) from None
    try:
        if deferred:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        try:
            os.fchmod(fd, mode)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if new:
            _link_new(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if new and isinstance(err, FileExistsError):
            raise FileExistsError(f"{path} exists (written by another process meanwhile): nothing was replaced; "
                                  "remove it, or choose another name") from None
        if isinstance(err, OSError):
            raise folder_error(err, path) from None
        raise


def _link_new(tmp: str, path: Path) -> None:
    """Put the file `tmp` in place as `path`, which must not exist: a hard link, atomic and never over an
    existing name; on a file system without hard links, a check then a rename (a narrow race, no worse)."""
    try:
        os.link(tmp, path)
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(tmp, path)
        return
    os.unlink(tmp)


def atomic_write_text(path: Path, text: str, *, new: bool = False) -> None:
    """`atomic_write_bytes` of `text` in UTF-8."""
    atomic_write_bytes(path, text.encode(), new=new)


def _open_own_file(path: Path) -> int:
    """A read-only descriptor of `path`, a regular file of its own: never followed through a link, never a
    folder, pipe or device (opened without blocking, then checked), never a file with other names (a hard
    link makes another file's bytes look like the run's). `FolderError` otherwise; FileNotFoundError if absent."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP or os.path.islink(path):
            raise FolderError(f"{path} is a symbolic link (to {os.readlink(path)}): a run folder's files must be its "
                              "own; replace the link by a copy of the file") from None
        raise folder_error(err, path) from None
    info = os.fstat(fd)
    problem = ("is not a regular file (a folder, pipe or device)" if not stat.S_ISREG(info.st_mode)
               else f"has {info.st_nlink} names (a hard link)" if info.st_nlink > 1 else None)
    if problem:
        os.close(fd)
        raise FolderError(f"{path} {problem}: a run folder's files must be its own regular files; replace it by a "
                          "plain copy of the file")
    return fd


def read_run_file(path: str | Path) -> bytes:
    """The bytes of a run folder's file, read as `_open_own_file` allows (no link, no other kind of file)."""
    fd = _open_own_file(Path(path))
    with os.fdopen(fd, "rb") as f:
        return f.read()


def check_own_files(run_dir: str | Path, names: Sequence[str]) -> None:
    """`FolderError` where one of the files `names` in `run_dir` is present but not a regular file of its own
    (a link, a hard link, a folder, a pipe, a device): what `copy_run_folder` would refuse, found before
    anything is read."""
    for name in names:
        try:
            os.close(_open_own_file(Path(run_dir) / name))
        except FileNotFoundError:
            continue


def copy_run_folder(src: str | Path, dst: str | Path, names: Sequence[str],
                    replaced: dict[str, bytes] | None = None) -> list[str]:
    """Copy the files `names` of the run folder `src` that exist there into the new folder `dst`, which
    appears whole or not at all: the files go to a hidden temporary folder beside it (readers of a runs
    folder pass over names that begin with a dot), each read back and compared with the bytes read from
    `src`, then the folder is renamed to `dst`. Only regular files are copied: a link, a hard-linked file, a
    folder, a pipe or a device under one of the names is refused (`FolderError`). An existing `dst` (made by
    another process meanwhile, too) is refused with FileExistsError; on any error, Ctrl-C included, the
    temporary folder is removed. A name in `replaced` gets those bytes instead of its copy (a record's
    metrics.json, say, without the machine's data folder), in the same folder. Returns the names copied."""
    src, dst = Path(src), Path(dst)
    make_folder(dst.parent)
    if os.path.lexists(dst):
        raise FileExistsError(f"{dst} exists: choose another name, or remove it first")
    try:
        tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name[:40]}.", suffix=".tmp"))
    except OSError as err:
        raise folder_error(err, dst.parent) from None
    copied = []
    try:
        for name in names:
            try:
                fd = _open_own_file(src / name)
            except FileNotFoundError:
                continue
            with os.fdopen(fd, "rb") as f:
                data = f.read()
            data = (replaced or {}).get(name, data)
            atomic_write_bytes(tmp / name, data)
            if hashlib.sha256(read_run_file(tmp / name)).digest() != hashlib.sha256(data).digest():
                raise FolderError(f"{dst / name}: the copy differs from {src / name} when read back: check the "
                                  f"disk of {dst.parent}, then run the command again")
            copied.append(name)
        os.chmod(tmp, 0o777 & ~_UMASK)
        os.rename(tmp, dst)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, FolderError) and str(tmp) in str(err):  # name the folder asked for, not the temporary one
            raise FolderError(str(err).replace(str(tmp), str(dst))) from None
        if isinstance(err, OSError) and err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(f"{dst} exists (another process wrote it meanwhile): choose another name") from None
        if isinstance(err, OSError):
            raise folder_error(err, dst) from None
        raise
    return copied
