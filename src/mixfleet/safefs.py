"""Files in run directories, opened safely (docs/security.md).

A run directory is its user's: created private (0700, files 0600; 0750/0640 when the run
is shared with the group), refused when another user owns it or others may write it, and
every file in it is opened without following a symbolic link (``O_NOFOLLOW``, then the
check on the descriptor). A link or a non-regular file where a file should be raises
:class:`UnsafePathError` naming it. This module sits at the bottom of the package: the run
directory, the checkpoints, the block list and ``mixfleet clean`` all go through it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from mixfleet.errors import ConfigError, UnsafePathError

__all__ = ["DIR_MODE", "FILE_MODE", "SHARED_DIR_MODE", "SHARED_FILE_MODE", "file_mode_of",
           "dir_mode_in", "file_mode_in", "check_run_dir", "check_entries", "make_dir",
           "open_fd", "read_bytes", "read_text", "write_atomic", "open_append",
           "remove_owned_file", "is_owned_dir", "read_secret_file"]

DIR_MODE, FILE_MODE = 0o700, 0o600
SHARED_DIR_MODE, SHARED_FILE_MODE = 0o750, 0o640
_NOFOLLOW = os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _euid() -> int:
    return os.geteuid()


def file_mode_of(dir_mode: int) -> int:
    """The mode of files created in a directory of ``dir_mode`` (group may read them only
    when it may enter the directory)."""
    return SHARED_FILE_MODE if dir_mode & 0o050 else FILE_MODE


def _shared(parent: Path) -> bool:
    try:
        return bool(os.stat(parent).st_mode & 0o050)
    except OSError:
        return False


def dir_mode_in(parent: Path) -> int:
    """The mode of a directory created in ``parent``: 0750 in a group-shared one, else 0700."""
    return SHARED_DIR_MODE if _shared(parent) else DIR_MODE


def file_mode_in(parent: Path) -> int:
    """The mode of a file created in ``parent``: 0640 in a group-shared one, else 0600."""
    return SHARED_FILE_MODE if _shared(parent) else FILE_MODE


def check_run_dir(root: Path, *, what: str = "--run-dir") -> None:
    """Refuse an existing ``root`` that is a link or not a directory, is owned by another
    user, or that group or others may write (UnsafePathError with the fix)."""
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{what} {str(root)!r} is a link or not a directory; pass a "
                              f"directory path of your own (links are not followed)")
    if st.st_uid != _euid():
        raise UnsafePathError(f"{what} {str(root)!r} belongs to uid {st.st_uid}, not to you "
                              f"(uid {_euid()}); a teammate's run is read (report, export, "
                              f"dashboard), never trained in: pass a new --run-dir")
    if st.st_mode & 0o022:
        raise UnsafePathError(f"{what} {str(root)!r} has mode {stat.S_IMODE(st.st_mode):o}: "
                              f"others may write it and plant files; run `chmod go-w "
                              f"{root}` (or `chmod 700`), or pass a new --run-dir")


def check_entries(root: Path, files: tuple[str, ...], dirs: tuple[str, ...]) -> None:
    """Refuse (UnsafePathError naming it) a link or a non-regular file at any of ``files``
    in ``root``, and a link or another user's directory at any of ``dirs``."""
    for name in files + dirs:
        try:
            st = os.lstat(root / name)
        except FileNotFoundError:
            continue
        want_dir = name in dirs
        if stat.S_ISLNK(st.st_mode) or (stat.S_ISDIR(st.st_mode) != want_dir) or (
                not want_dir and not stat.S_ISREG(st.st_mode)):
            raise UnsafePathError(f"{root / name} is a link or not a regular "
                                  f"{'directory' if want_dir else 'file'}; links are not "
                                  f"followed: remove it, or pass a new --run-dir")
        if st.st_uid != _euid():
            raise UnsafePathError(f"{root / name} belongs to uid {st.st_uid}, not to you; "
                                  f"remove it, or pass a new --run-dir")


def is_owned_dir(path: Path) -> bool:
    """True when ``path`` is a real directory (not a link) of this user."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == _euid()


def make_dir(path: Path, mode: int | None = None) -> Path:
    """Create directory ``path`` with ``mode`` (default: as private as its parent, see
    :func:`dir_mode_in`; missing parents with the umask); an existing one must be a real
    directory (not a link) of this user."""
    if mode is None:
        mode = dir_mode_in(path.parent)
    try:
        os.mkdir(path, mode)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
        try:
            os.fchmod(fd, mode)  # the umask may have taken bits
        finally:
            os.close(fd)
        return path
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        return make_dir(path, mode)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{path} is a link or not a directory where mixfleet keeps a "
                              f"directory; remove it (links are not followed)")
    if st.st_uid != _euid():
        raise UnsafePathError(f"{path} belongs to uid {st.st_uid}, not to you; remove it or "
                              f"use another run directory")
    return path


def open_fd(path: Path, flags: int = os.O_RDONLY, mode: int | None = None, *,
            own: bool = False) -> int:
    """``os.open`` without following a link; the descriptor must be a regular file (and,
    with ``own`` or when writing, this user's). A created file gets ``mode`` (default:
    :func:`file_mode_in` its directory). UnsafePathError names the file."""
    if mode is None:
        mode = file_mode_in(path.parent) if flags & os.O_CREAT else FILE_MODE
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePathError(f"{path} is a symbolic link where mixfleet expects a file; "
                                  f"it was not followed: remove the link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafePathError(f"{path} is not a regular file; remove it")
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        if (own or writing) and st.st_uid != _euid():
            raise UnsafePathError(f"{path} belongs to uid {st.st_uid}, not to you; remove "
                                  f"it or use another run directory")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(path: Path, *, max_bytes: int | None = None) -> bytes:
    """The bytes of regular file ``path`` (never through a link)."""
    fd = open_fd(path)
    with os.fdopen(fd, "rb") as f:
        data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise UnsafePathError(f"{path} is larger than the {max_bytes} bytes it can be; it "
                              f"is not what mixfleet writes")
    return data


def read_text(path: Path, *, max_bytes: int | None = None) -> str:
    return read_bytes(path, max_bytes=max_bytes).decode("utf-8")


def write_atomic(path: Path, data: bytes, *, mode: int | None = None,
                 durable: bool = False) -> None:
    """Replace ``path`` with ``data``: a new private temporary file (exclusive, no link
    followed), optionally fsynced, renamed over ``path`` (a link there is replaced, never
    written through)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        os.unlink(tmp)  # a leftover (or planted) temporary file or link
    except FileNotFoundError:
        pass
    fd = open_fd(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def open_append(path: Path, mode: int | None = None) -> int:
    """A descriptor appending to ``path`` (created with ``mode``; never through a link)."""
    return open_fd(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, mode)


def remove_owned_file(path: Path) -> str | None:
    """Unlink ``path`` if it is a regular file of this user; else (a link, dangling or
    not, another user's file, a directory, gone) the reason it was left, never followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "gone already"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link (not followed)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_uid != _euid():
        return f"owned by uid {st.st_uid}, not by you"
    os.unlink(path)  # unlink removes the entry itself, never what a link points to
    return None


def read_secret_file(path: str | Path, flag: str, fix: str) -> bytes:
    """The content (up to 4 KiB) of a secret the user keeps in ``path`` (a token file given
    as ``flag``): a regular file of the user's that nobody else can read, opened without
    following a link and checked on the descriptor; else ConfigError naming the flag, the
    file and ``fix`` (how to make a good one)."""
    p = str(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise ConfigError(f"{flag} {p!r} cannot be opened ({e.strerror}); {fix}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{flag} {p!r} is not a regular file; {fix}")
        if st.st_uid != _euid():
            raise ConfigError(f"{flag} {p!r} belongs to uid {st.st_uid}, not to you (uid "
                              f"{_euid()}); use a file of your own")
        if st.st_mode & 0o077:
            raise ConfigError(f"{flag} {p!r} has mode {stat.S_IMODE(st.st_mode):04o}: other "
                              f"users can read it; run chmod 600 {p}")
        return os.read(fd, 4096)
    finally:
        os.close(fd)
