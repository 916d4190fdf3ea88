"""Atomic file and directory writes: a reader never sees a half-written file or dataset."""

from __future__ import annotations

import contextlib
import csv
import ctypes
import errno
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``.

    The old file (if any) stays intact until the new one is complete and fsynced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, path)
        fsync_path(path.parent)  # the rename itself survives a power cut
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write UTF-8 text to ``path``."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> None:
    """Atomically write ``obj`` as JSON (sorted keys are not forced; order is the caller's)."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_write_csv(
    path: str | os.PathLike[str], fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> None:
    """Atomically write ``rows`` as CSV with a header; keys outside ``fieldnames`` are ignored."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Read a JSON file, raising ``ValueError`` naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e


@contextlib.contextmanager
def _temp_sibling(final: Path) -> Iterator[Path]:
    """A fresh ``.<name>.tmp-*`` directory beside ``final`` (usual permissions), removed if the block raises."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a directory under a temporary sibling name and rename it into place on success.

    Yields the temporary path. If the block raises (or the process is killed), ``final`` is untouched
    and only a hidden ``.<name>.tmp-*`` sibling may remain. With ``overwrite=False`` an existing
    non-empty ``final`` is an error raised before any work is done.
    """
    final = Path(final)
    if final.exists() and any(final.iterdir()) and not overwrite:
        raise FileExistsError(f"{final} already exists and is not empty (pass overwrite=True to replace it)")
    with _temp_sibling(final) as tmp:
        yield tmp
    if final.exists():
        trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.replace(final, trash / "old")
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


# ----------------------------------------------------------------------------------------------------
# Durable directory replacement (checkpoints)
# ----------------------------------------------------------------------------------------------------


def fsync_path(path: str | os.PathLike[str]) -> None:
    """``fsync`` a file or a directory by path (a directory's fsync makes renames inside it durable)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on directories
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """``fsync`` every regular file and directory under ``root`` (files first, ``root`` last)."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                fsync_path(p)
        fsync_path(dirpath)


_RENAME_EXCHANGE = 2  # linux/fs.h


def exchange_paths(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Atomically swap two existing paths (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns False when the platform or filesystem does not support it (nothing changed); raises
    ``OSError`` on other failures.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd = -100
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(err)}")


def recover_directory(final: str | os.PathLike[str]) -> bool:
    """Undo a :func:`durable_directory` replacement killed half-way; returns True if it restored one.

    Only the fallback path (no ``RENAME_EXCHANGE``) has such a moment: ``final`` was renamed to
    ``.<name>.prev-*`` and the new one not yet renamed in. The old directory was complete, so it is
    renamed back.
    """
    final = Path(final)
    if final.exists() or final.is_symlink() or not final.parent.is_dir():
        return False
    olds = sorted(final.parent.glob(f".{final.name}.prev-*"), key=lambda p: p.stat().st_mtime)
    olds = [p for p in olds if p.is_dir() and not p.is_symlink()]
    if not olds:
        return False
    os.rename(olds[-1], final)
    fsync_path(final.parent)
    return True


def clean_stale_siblings(final: str | os.PathLike[str]) -> list[Path]:
    """Remove the ``.<name>.tmp-*`` / ``.prev-*`` / ``.old-*`` siblings that killed saves of ``final`` left.

    Call it only while no other process writes ``final`` (one writer per run directory). Returns the
    removed paths.
    """
    final = Path(final)
    removed = []
    for pattern in (f".{final.name}.tmp-*", f".{final.name}.prev-*", f".{final.name}.old-*"):
        for p in final.parent.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
            removed.append(p)
    return removed


@contextlib.contextmanager
def durable_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Replace directory ``final`` so that a SIGKILL or power cut at any point leaves a complete one.

    Yields a temporary sibling ``.<name>.tmp-*`` to fill. On success every file in it and the
    directory are fsynced, then it is swapped with ``final`` in one atomic ``renameat2(RENAME_EXCHANGE)``
    (``final`` is never absent; a plain rename when ``final`` does not exist yet), the parent is
    fsynced and the old contents removed. Where the exchange is unsupported, ``final`` is renamed
    to ``.<name>.prev-*`` and the new directory renamed in; a kill between the two renames is undone
    by :func:`recover_directory`, which runs first on every save. Stale temporaries of killed
    saves are removed at the start of the next save.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(final)
    clean_stale_siblings(final)
    with _temp_sibling(final) as tmp:
        yield tmp
    fsync_tree(tmp)
    fsync_path(final.parent)
    if not (final.exists() or final.is_symlink()):
        os.rename(tmp, final)
        fsync_path(final.parent)
        return
    if exchange_paths(tmp, final):
        fsync_path(final.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # now holds the old contents
        return
    old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.prev-"))
    os.rmdir(old)  # a fresh unique name; rename() below recreates it
    os.rename(final, old)
    os.rename(tmp, final)
    fsync_path(final.parent)
    shutil.rmtree(old, ignore_errors=True)
