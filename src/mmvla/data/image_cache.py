"""An on-disk cache of decoded images: one raw uint8 ``(N, 3, H, W)`` file per camera, read by row.

:class:`mmvla.data.dataset.VLADataset` with ``storage="disk"`` decodes each camera's PNGs once into a
cache file and then serves batches with positional reads (``os.preadv`` into a fresh buffer), so its
resident memory does not grow with the dataset (pages of an ``np.memmap`` would count toward RSS once
touched; pages read by ``preadv`` stay in the kernel's page cache, which the kernel reclaims).

File layout::

    bytes 0..7          magic b"MMVLAIM1"
    bytes 8..15         header length L, little-endian uint64
    bytes 16..16+L      UTF-8 JSON header: {"shape": [N, 3, H, W], "key": {...}}
    padding to HEADER_BYTES (4096)
    N * 3 * H * W bytes the images, row-major

``key`` fingerprints what the images came from (the data files' relative paths, sizes, inode numbers,
modification and status-change times, the selected episodes, the camera; the status-change time cannot
be set by whoever ships a dataset, so a cache file shipped beside the data is never taken as built from
it); a file whose header, key or size does not
match is rebuilt, never read. A cache file is written under a temporary name and renamed into place
only when complete, so a crash leaves no half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from mmvla.core.io import fsync_path

MAGIC = b"MMVLAIM1"
HEADER_BYTES = 4096
_PREFIX = struct.Struct("<8sQ")


class CacheMismatch(ValueError):
    """A cache file is missing, corrupt, truncated, or was built from other source files."""


def cache_file_name(camera: str, key: dict[str, Any]) -> str:
    """``<camera>-<16 hex digits of the key's episodes and shape>.u8``: one file per camera and selection.

    The data files' sizes and times are left out of the name, so a changed source rebuilds the same
    file instead of leaving the stale one beside it.
    """
    stable = {k: v for k, v in key.items() if k != "sources"}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", camera)
    return f"{safe}-{digest}.u8"


def _encode_header(shape: tuple[int, ...], key: dict[str, Any]) -> bytes:
    body = json.dumps({"shape": list(shape), "key": key}, sort_keys=True).encode()
    if _PREFIX.size + len(body) > HEADER_BYTES:
        raise ValueError(f"image cache header of {len(body)} bytes does not fit in {HEADER_BYTES}")
    return (_PREFIX.pack(MAGIC, len(body)) + body).ljust(HEADER_BYTES, b"\0")


class ImageCache:
    """Read-only rows of one cache file: ``cache[idx]`` is a fresh uint8 array ``idx.shape + (3, H, W)``.

    Args:
        path: the cache file.
        shape: expected ``(N, 3, H, W)``.
        key: expected source fingerprint (see the module docstring).

    Raises:
        CacheMismatch: the file is missing, its magic/header/shape/key differ, or its size is not
            ``HEADER_BYTES + N·3·H·W`` (truncated or padded).
    """

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, int, int, int], key: dict[str, Any]):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(np.uint8)
        self._key = key
        self._row_bytes = int(np.prod(self.shape[1:]))
        self._fd = -1
        self._open()

    def _open(self) -> None:
        try:  # a symlink or a FIFO planted under the cache's name is refused, without blocking
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise CacheMismatch(f"image cache {self.path} does not exist") from None
        except OSError as e:
            raise CacheMismatch(f"image cache {self.path} cannot be opened ({e}; a symlink?)") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise CacheMismatch(f"image cache {self.path} is not a regular file")
            head = os.pread(fd, HEADER_BYTES, 0)
            self._check(head, st.st_size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _check(self, head: bytes, size: int) -> None:
        if len(head) < HEADER_BYTES:
            raise CacheMismatch(f"image cache {self.path}: {len(head)} bytes, shorter than its header")
        magic, length = _PREFIX.unpack_from(head)
        if magic != MAGIC or length > HEADER_BYTES - _PREFIX.size:
            raise CacheMismatch(f"image cache {self.path}: not an mmvla image cache (bad magic or header)")
        try:
            header = json.loads(head[_PREFIX.size : _PREFIX.size + length])
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CacheMismatch(f"image cache {self.path}: header is not valid JSON ({e})") from None
        if not isinstance(header, dict) or tuple(header.get("shape", ())) != self.shape:
            raise CacheMismatch(
                f"image cache {self.path}: header shape differs from the expected {self.shape}"
            )
        if header.get("key") != self._key:
            raise CacheMismatch(f"image cache {self.path}: built from other source files or episodes")
        want = HEADER_BYTES + self.shape[0] * self._row_bytes
        if size != want:
            raise CacheMismatch(
                f"image cache {self.path}: {size} bytes, expected {want} (truncated or corrupt)"
            )

    @property
    def nbytes(self) -> int:
        """Bytes of image data (the file less its header)."""
        return self.shape[0] * self._row_bytes

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int | slice | np.ndarray) -> np.ndarray:
        """Rows ``index`` (int, slice, or integer array of any shape) as a new uint8 array."""
        n = self.shape[0]
        if isinstance(index, slice):
            idx = np.arange(n)[index]
        else:
            idx = np.asarray(index)
            if not np.issubdtype(idx.dtype, np.integer):
                raise IndexError(f"ImageCache: index must be integers, got dtype {idx.dtype}")
        flat = idx.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < -n or flat.max() >= n):
            raise IndexError(f"ImageCache: index out of range for {n} rows")
        flat = np.where(flat < 0, flat + n, flat)
        rows, inverse = np.unique(flat, return_inverse=True)  # sorted unique rows
        buf = np.empty((len(rows), *self.shape[1:]), dtype=np.uint8)  # (U, 3, H, W)
        if len(rows):
            # Runs of consecutive rows (history windows, slices) are one read each.
            breaks = np.flatnonzero(np.diff(rows) != 1) + 1
            starts = np.concatenate([[0], breaks])
            ends = np.concatenate([breaks, [len(rows)]])
            flat_buf = buf.reshape(-1)
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
                self._read_into(flat_buf[a * self._row_bytes : b * self._row_bytes], int(rows[a]))
        out = buf if len(rows) == flat.size and np.array_equal(rows, flat) else buf[inverse.reshape(-1)]
        return out.reshape(*idx.shape, *self.shape[1:])

    def _read_into(self, dst: np.ndarray, row: int) -> None:
        offset = HEADER_BYTES + row * self._row_bytes
        view = dst.data.cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise CacheMismatch(
                    f"image cache {self.path}: short read at byte {offset + done} (truncated?)"
                )
            done += got

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fd"] = -1
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()  # a worker process (spawn) opens and checks the file again


class ImageCacheWriter:
    """Builds a cache file: :meth:`write` rows at any position, then :meth:`commit` renames it into place.

    Rows not written stay zero; the caller writes all of them. Used as a context manager, an exception
    removes the temporary file and leaves any previous cache file untouched.
    """

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, int, int, int], key: dict[str, Any]):
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.key = key
        self._row_bytes = int(np.prod(self.shape[1:]))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._fd, self._tmp = fd, Path(tmp)
        try:
            os.pwrite(fd, _encode_header(self.shape, key), 0)
            os.ftruncate(fd, HEADER_BYTES + self.shape[0] * self._row_bytes)
        except BaseException:
            self.abort()
            raise

    def write(self, row: int, images: np.ndarray) -> None:
        """Write ``images`` uint8 (R, 3, H, W) at rows ``row .. row+R-1``."""
        if images.dtype != np.uint8 or images.shape[1:] != self.shape[1:]:
            raise ValueError(
                f"ImageCacheWriter: rows must be uint8 {self.shape[1:]}, got {images.dtype} {images.shape}"
            )
        if row < 0 or row + len(images) > self.shape[0]:
            raise ValueError(
                f"ImageCacheWriter: rows {row}..{row + len(images) - 1} outside 0..{self.shape[0] - 1}"
            )
        data = np.ascontiguousarray(images).data.cast("B")
        offset = HEADER_BYTES + row * self._row_bytes
        done = 0
        while done < len(data):
            done += os.pwrite(self._fd, data[done:], offset + done)

    def commit(self) -> None:
        """fsync the file and rename it to :attr:`path` (replacing any old cache)."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.chmod(self._tmp, 0o644)
        os.replace(self._tmp, self.path)
        fsync_path(self.path.parent)

    def abort(self) -> None:
        """Close and remove the temporary file (no-op after :meth:`commit`)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp)

    def __enter__(self) -> ImageCacheWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or self._fd >= 0:
            self.abort()
