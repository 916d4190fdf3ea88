"""A PyTorch dataset over a LeRobot v3.0 dataset written by :mod:`mmvla.data.lerobot_format`.

Every PNG is decoded once, at construction. With ``storage="memory"`` the images are one uint8 array
per camera held in memory (datasets here are ~300 episodes x 60 frames x 2 cameras x 64² ≈ 150 MB), so
reads are array indexing: :meth:`VLADataset.get_batch` serves a whole batch with a few fancy-indexing
operations. With ``storage="disk"`` they are decoded once into one raw cache file per camera
(:mod:`mmvla.data.image_cache`, under ``<root>/.mmvla_cache/`` by default, reused while the data files
are unchanged) and batches are positional reads from it, so resident memory does not grow with the
dataset; both modes return bit-identical items. ``storage="auto"`` (the default) picks disk when the
decoded images would exceed a quarter of this machine's memory. State, actions and bookkeeping stay in
memory in both modes (~100 bytes per frame).

Item layout (T = history + 1, K = chunk_size)::

    images        {camera: uint8 (3, H, W)}, or (T, 3, H, W) with history > 0 (oldest first)
    state         float32 (5,), or (T, 5) with history > 0
    history_mask  bool (T,), True = a real frame (only with history > 0; frames before the episode
                  start repeat its first frame and are False)
    past_state    float32 (P, 5): states t-P .. t-1, oldest first (only with state_history = P > 0;
                  before the episode start, its first state)
    action        float32 (K, 7): actions t .. t+K-1 of the same episode, past its end repeating the last
    action_mask   bool (K,), True = a real action of this episode
    instruction   str
    episode_index, frame_index, task_index   int
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mmvla.data.image_cache import CacheMismatch, ImageCache, ImageCacheWriter, cache_file_name
from mmvla.data.lerobot_format import (
    ACTION_KEY,
    ENV_STATE_KEY,
    STATE_KEY,
    ImageSizeError,
    dataset_file,
    decode_png,
    image_features,
    read_episodes,
    read_info,
    read_parquet,
    read_stats,
    read_tasks,
)

_BOOK_COLUMNS = ("frame_index", "episode_index", "index", "task_index")
STORAGE_MODES = ("auto", "memory", "disk")
AUTO_DISK_FRACTION = 0.25  # storage="auto" goes to disk when decoded images exceed this share of RAM
CACHE_VERSION = 1
log = logging.getLogger(__name__)


def _vector_column(table: pa.Table, name: str, dim: int, path: Path) -> np.ndarray:
    """float32 (N, dim) from a fixed_size_list / list column; ValueError naming file and feature."""
    col = table.column(name)
    typ = col.type
    if not (pa.types.is_fixed_size_list(typ) or pa.types.is_list(typ) or pa.types.is_large_list(typ)):
        raise ValueError(
            f"data file {path}: feature '{name}' has type {typ}, expected fixed_size_list<float>"
        )
    arr = col.combine_chunks()
    if arr.null_count:
        raise ValueError(f"data file {path}: feature '{name}' has {arr.null_count} null row(s)")
    values = arr.flatten()
    if len(values) != len(arr) * dim:
        raise ValueError(f"data file {path}: feature '{name}' rows do not all have length {dim}")
    try:
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(len(arr), dim)
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise ValueError(f"data file {path}: feature '{name}' is not numeric: {e}") from e


def _parquet_rows(path: Path) -> int:
    """Rows of a parquet file from its footer (nothing decoded); ValueError naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except (pa.ArrowException, OSError, EOFError) as e:
        raise ValueError(f"data file {path} cannot be read (truncated or corrupt parquet?): {e}") from e


def physical_memory_bytes() -> int:
    """Installed RAM in bytes (``sysconf``); 0 when unknown."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 0


def _int_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    col = table.column(name)
    if not pa.types.is_integer(col.type):
        raise ValueError(f"data file {path}: column '{name}' has type {col.type}, expected int64")
    if col.null_count:
        raise ValueError(f"data file {path}: column '{name}' has null values")
    return np.asarray(col.to_numpy(), dtype=np.int64)


class VLADataset(Dataset[dict[str, Any]]):
    """Frames of a LeRobot v3.0 dataset, decoded into memory, with action chunks and history frames.

    Args:
        root: dataset directory (the one holding ``meta/`` and ``data/``).
        cameras: cameras to load (default: every image feature, in schema order).
        chunk_size: K, the number of future actions per item (>= 1).
        history: number of past frames added to images/state (>= 0).
        state_history: P, the number of past robot states added as ``past_state`` (>= 0; no images).
        image_size: if given, the stored images must be this size (int or (H, W)); ValueError otherwise.
        episodes: restrict to these episode indices (e.g. a train/validation split); default all.
        progress: show a tqdm bar while decoding images.
        storage: where decoded images live: ``"memory"`` (uint8 arrays in RAM), ``"disk"`` (a raw
            uint8 cache file per camera read with positional reads; built on first use, ~N·3·H·W
            bytes per camera, rebuilt when a data file's size, inode, modification or status-change
            time differs or the file is corrupt, truncated or not a regular file) or ``"auto"`` (disk when the images would exceed
            ``AUTO_DISK_FRACTION`` of physical memory). Items are bit-identical in both modes.
        cache_dir: folder of the disk cache (default ``<root>/.mmvla_cache``).

    Attributes:
        meta: ``meta/info.json``.
        stats: feature -> statistic -> float64 array (images (3, 1, 1) in [0, 1] units).
        tasks: instruction strings by task_index.
        storage: ``"memory"`` or ``"disk"``, the mode in use (``"auto"`` resolved).
        images: camera -> uint8 (N, 3, H, W): an array in memory, or an
            :class:`~mmvla.data.image_cache.ImageCache` (indexing returns a new array) on disk.
        episodes: column -> list, one entry per loaded episode (including mmvla extras such as
            ``family``, ``split``, ``seed``).
    """

    def __init__(
        self,
        root: str | Path,
        cameras: Sequence[str] | None = None,
        chunk_size: int = 1,
        history: int = 0,
        state_history: int = 0,
        image_size: int | tuple[int, int] | None = None,
        episodes: Sequence[int] | None = None,
        progress: bool = True,
        storage: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        if storage not in STORAGE_MODES:
            raise ValueError(f"VLADataset: storage must be one of {STORAGE_MODES}, got {storage!r}")
        if chunk_size < 1:
            raise ValueError(f"VLADataset: chunk_size must be >= 1, got {chunk_size}")
        if history < 0:
            raise ValueError(f"VLADataset: history must be >= 0, got {history}")
        if state_history < 0:
            raise ValueError(f"VLADataset: state_history must be >= 0, got {state_history}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset directory not found: {self.root}")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.root / ".mmvla_cache"
        self.chunk_size = int(chunk_size)
        self.history = int(history)
        self.state_history = int(state_history)
        self.meta: dict[str, Any] = read_info(self.root)
        feats = self.meta["features"]
        available = image_features(self.meta)
        if cameras is None:
            cameras = list(available)
        unknown = [c for c in cameras if c not in available]
        if unknown or not cameras:
            raise ValueError(
                f"{self.root}: camera(s) {unknown or list(cameras)} not in the dataset; available: {list(available)}"
            )
        self.cameras: tuple[str, ...] = tuple(cameras)
        self.image_keys = {cam: available[cam] for cam in self.cameras}
        shapes = {tuple(feats[k]["shape"][:2]) for k in self.image_keys.values()}
        if len(shapes) != 1:
            raise ValueError(f"{self.root}: cameras {list(self.cameras)} have different image sizes {shapes}")
        (hw,) = shapes
        self.image_shape: tuple[int, int] = (int(hw[0]), int(hw[1]))
        if image_size is not None:
            want = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
            if tuple(want) != self.image_shape:
                raise ValueError(
                    f"{self.root}: images are {self.image_shape[0]}x{self.image_shape[1]} "
                    f"(meta/info.json), but image_size={image_size} was requested"
                )
        self.state_dim = int(feats[STATE_KEY]["shape"][0])
        self.action_dim = int(feats[ACTION_KEY]["shape"][0])
        # Optional privileged simulator state (e.g. the target's position), for auxiliary losses.
        self.env_state_dim = int(feats[ENV_STATE_KEY]["shape"][0]) if ENV_STATE_KEY in feats else 0
        vector_keys = [STATE_KEY, ACTION_KEY, *([ENV_STATE_KEY] if self.env_state_dim else [])]

        self.tasks: list[str] = read_tasks(self.root)
        self.stats: dict[str, dict[str, np.ndarray]] = read_stats(
            self.root, [*vector_keys, *self.image_keys.values()]
        )
        # Vectors: one value per dimension; images: one per channel, (3, 1, 1) as LeRobot writes them.
        stat_shapes: dict[str, tuple[int, ...]] = {key: (int(feats[key]["shape"][0]),) for key in vector_keys}
        stat_shapes.update({key: (3, 1, 1) for key in self.image_keys.values()})
        for key, shape in stat_shapes.items():
            for stat in ("mean", "std", "min", "max"):
                if self.stats[key][stat].shape != shape:
                    raise ValueError(
                        f"{self.root / 'meta/stats.json'}: '{stat}' of feature '{key}' has shape "
                        f"{self.stats[key][stat].shape}, expected {shape}"
                    )
        all_eps = read_episodes(self.root)
        total = len(all_eps["episode_index"])
        if total != self.meta["total_episodes"]:
            raise ValueError(
                f"{self.root}: episodes table has {total} rows but meta/info.json says total_episodes="
                f"{self.meta['total_episodes']}"
            )
        frames = int(np.sum(all_eps["length"], dtype=np.int64))
        if frames != self.meta["total_frames"]:
            raise ValueError(
                f"{self.root}: episodes table lengths sum to {frames} frames but meta/info.json says "
                f"total_frames={self.meta['total_frames']}"
            )
        if episodes is None:
            keep = list(range(total))
        else:
            pos = {e: i for i, e in enumerate(all_eps["episode_index"])}
            missing = [e for e in episodes if e not in pos]
            if missing:
                raise ValueError(f"{self.root}: episode(s) {missing} not in the dataset (0..{total - 1})")
            keep = sorted({pos[e] for e in episodes})
        self.episodes: dict[str, list[Any]] = {k: [v[i] for i in keep] for k, v in all_eps.items()}
        self._load_frames(progress, storage)

    # -- loading --------------------------------------------------------------------------------------

    def _load_frames(self, progress: bool, storage: str) -> None:
        eps = self.episodes
        n_ep = len(eps["episode_index"])
        lengths = np.asarray(eps["length"], dtype=np.int64)
        n = int(lengths.sum())
        h, w = self.image_shape

        by_file: dict[tuple[int, int], list[int]] = {}
        for i in range(n_ep):
            by_file.setdefault((int(eps["data/chunk_index"][i]), int(eps["data/file_index"][i])), []).append(
                i
            )
        # Declared sizes against the files, before anything is allocated: each data file must hold at
        # least the frames the episodes table puts in it (footer row counts, nothing decoded), and the
        # decoded arrays must fit in this machine's memory.
        paths: dict[tuple[int, int], Path] = {}
        for (chunk, file), ep_rows in sorted(by_file.items()):
            path = dataset_file(self.root, self.meta, "data_path", chunk_index=chunk, file_index=file)
            paths[chunk, file] = path
            claimed = int(lengths[ep_rows].sum())
            n_rows = _parquet_rows(path)
            if claimed > n_rows:
                over = int(
                    eps["episode_index"][ep_rows[int(np.argmax(np.cumsum(lengths[ep_rows]) > n_rows))]]
                )
                raise ValueError(
                    f"data file {path} holds {n_rows} rows but the episodes table ('length') puts {claimed} "
                    f"frames in it: episode {over} and later do not fit (truncated or inconsistent)"
                )
        image_bytes = n * len(self.cameras) * 3 * h * w
        vector_bytes = n * (4 * (self.state_dim + self.action_dim + self.env_state_dim) + 48)
        ram = physical_memory_bytes()
        if storage == "auto":
            storage = "disk" if ram and image_bytes > AUTO_DISK_FRACTION * ram else "memory"
        self.storage = storage
        in_ram = vector_bytes + (image_bytes if storage == "memory" else 0)
        if ram and in_ram > ram:
            raise ValueError(
                f"{self.root}: {n} frames of {len(self.cameras)} camera(s) at {h}x{w} need "
                f"{in_ram / 2**30:.1f} GiB decoded, more than this machine's {ram / 2**30:.1f} GiB"
                + (" (storage='disk' keeps the images in a file)" if storage == "memory" else "")
            )
        self.images: dict[str, np.ndarray | ImageCache] = {}  # camera -> (N, 3, H, W)
        writers: dict[str, ImageCacheWriter] = {}
        if storage == "memory":
            self.images = {cam: np.empty((n, 3, h, w), dtype=np.uint8) for cam in self.cameras}
        else:
            writers = self._open_caches(paths, (n, 3, h, w))
        decode = storage == "memory" or bool(writers)
        self.state = np.empty((n, self.state_dim), dtype=np.float32)  # (N, S)
        self.action = np.empty((n, self.action_dim), dtype=np.float32)  # (N, A)
        self.env_state = np.empty((n, self.env_state_dim), dtype=np.float32)  # (N, E), E may be 0
        book = {k: np.empty(n, dtype=np.int64) for k in _BOOK_COLUMNS}
        self.episode_start = np.empty(n, dtype=np.int64)  # (N,) row of the episode's first frame
        self.episode_end = np.empty(n, dtype=np.int64)  # (N,) row one past the episode's last frame

        offsets = np.concatenate([[0], np.cumsum(lengths)])
        env_cols = [ENV_STATE_KEY] if self.env_state_dim else []
        image_cols = [self.image_keys[cam] for cam in self.cameras if storage == "memory" or cam in writers]
        columns = [*image_cols, STATE_KEY, ACTION_KEY, *env_cols, *_BOOK_COLUMNS]
        what = "decoding" if storage == "memory" else "decoding into the image cache" if decode else "reading"
        bar = tqdm(total=n, desc=f"{what} {self.root.name}", unit="frame", disable=not progress)
        try:
            for (chunk, file), ep_rows in sorted(by_file.items()):
                path = paths[chunk, file]
                table = read_parquet(path, "data file", columns)
                file_book = {k: _int_column(table, k, path) for k in _BOOK_COLUMNS}
                file_state = _vector_column(table, STATE_KEY, self.state_dim, path)
                file_action = _vector_column(table, ACTION_KEY, self.action_dim, path)
                file_env = (
                    _vector_column(table, ENV_STATE_KEY, self.env_state_dim, path)
                    if self.env_state_dim
                    else None
                )
                for key in image_cols:
                    typ = table.column(key).type
                    if not pa.types.is_struct(typ) or typ.get_field_index("bytes") < 0:
                        raise ValueError(
                            f"data file {path}: feature '{key}' has type {typ}, expected struct<bytes, path>"
                        )
                global_index = file_book["index"]
                for i in ep_rows:
                    lo, hi = int(eps["dataset_from_index"][i]), int(eps["dataset_to_index"][i])
                    ep_idx = int(eps["episode_index"][i])
                    rows = np.flatnonzero((global_index >= lo) & (global_index < hi))
                    if len(rows) != hi - lo or hi - lo != lengths[i]:
                        raise ValueError(
                            f"data file {path}: episode {ep_idx} should hold frames index {lo}..{hi - 1} "
                            f"({lengths[i]} frames) but {len(rows)} were found (truncated or inconsistent)"
                        )
                    rows = rows[np.argsort(global_index[rows], kind="stable")]
                    if not (
                        np.array_equal(file_book["frame_index"][rows], np.arange(hi - lo))
                        and np.all(file_book["episode_index"][rows] == ep_idx)
                    ):
                        raise ValueError(
                            f"data file {path}: frames of episode {ep_idx} have inconsistent "
                            "frame_index/episode_index columns"
                        )
                    dst = slice(int(offsets[i]), int(offsets[i + 1]))
                    self.state[dst] = file_state[rows]
                    self.action[dst] = file_action[rows]
                    if file_env is not None:
                        self.env_state[dst] = file_env[rows]
                    for k in _BOOK_COLUMNS:
                        book[k][dst] = file_book[k][rows]
                    self.episode_start[dst] = offsets[i]
                    self.episode_end[dst] = offsets[i + 1]
                    for cam, key in self.image_keys.items():
                        if cam in writers:  # one episode decoded at a time: bounded memory
                            ep_images = np.empty((hi - lo, 3, h, w), dtype=np.uint8)
                            self._decode_images(table, key, rows, path, ep_idx, ep_images)
                            writers[cam].write(dst.start, ep_images)
                        elif storage == "memory":
                            out = self.images[cam]
                            assert isinstance(out, np.ndarray)
                            self._decode_images(table, key, rows, path, ep_idx, out[dst])
                    bar.update(hi - lo)
            for writer in writers.values():
                writer.commit()
        finally:
            bar.close()
            for writer in writers.values():
                writer.abort()  # removes the temporary file unless committed
        for cam, writer in writers.items():
            self.images[cam] = ImageCache(writer.path, (n, 3, h, w), writer.key)
        bad_task = (book["task_index"] < 0) | (book["task_index"] >= len(self.tasks))
        if np.any(bad_task):
            raise ValueError(
                f"{self.root}: data column 'task_index' refers to task {int(book['task_index'][bad_task][0])} "
                f"but meta/tasks.parquet has {len(self.tasks)} task(s)"
            )
        self.frame_index = book["frame_index"]  # (N,)
        self.episode_index = book["episode_index"]  # (N,)
        self.global_index = book["index"]  # (N,)
        self.task_index = book["task_index"]  # (N,)

    def _decode_images(
        self, table: pa.Table, key: str, rows: np.ndarray, path: Path, ep_idx: int, out: np.ndarray
    ) -> None:
        """Decode column ``key`` at table ``rows`` (R,) into ``out`` uint8 (R, 3, H, W)."""
        h, w = self.image_shape
        blobs = table.column(key).take(pa.array(rows)).combine_chunks().field("bytes")
        for frame, blob in enumerate(blobs.to_pylist()):
            if blob is None:
                raise ValueError(
                    f"data file {path}: feature '{key}' has no image bytes at episode {ep_idx} frame {frame}"
                )
            try:
                img = decode_png(blob, expected_hw=(h, w))
            except ImageSizeError as e:
                raise ValueError(
                    f"data file {path}: feature '{key}' episode {ep_idx} frame {frame}: {e} "
                    f"(meta/info.json declares shape {[h, w, 3]})"
                ) from e
            except Exception as e:
                raise ValueError(
                    f"data file {path}: feature '{key}' episode {ep_idx} frame {frame}: "
                    f"image does not decode ({type(e).__name__}: {e})"
                ) from e
            if img.shape != (h, w, 3):
                raise ValueError(
                    f"data file {path}: feature '{key}' episode {ep_idx} frame {frame}: "
                    f"image is {img.shape}, meta/info.json says {(h, w, 3)}"
                )
            out[frame] = img.transpose(2, 0, 1)

    def _cache_key(
        self, cam: str, paths: dict[tuple[int, int], Path], shape: tuple[int, int, int, int]
    ) -> dict[str, Any]:
        """What a camera's cache file must have been built from: the data files (relative path, size,
        inode, modification and status-change times in ns), the selected episodes and their frame ranges,
        the feature and shape. The status-change time is set by the kernel, not by an archive."""
        sources = []
        for path in sorted(set(paths.values())):
            st = path.stat()
            rel = path.relative_to(self.root).as_posix()
            sources.append([rel, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
        eps = self.episodes
        selection = [
            eps["episode_index"],
            eps["dataset_from_index"],
            eps["dataset_to_index"],
            eps["data/chunk_index"],
            eps["data/file_index"],
        ]

        def digest(obj: Any) -> str:
            return hashlib.sha256(json.dumps(obj, default=int).encode()).hexdigest()

        return {
            "version": CACHE_VERSION,
            "feature": self.image_keys[cam],
            "shape": list(shape),
            "episodes": digest(selection),
            "sources": digest(sources),
        }

    def _open_caches(
        self, paths: dict[tuple[int, int], Path], shape: tuple[int, int, int, int]
    ) -> dict[str, ImageCacheWriter]:
        """Open each camera's valid cache file into :attr:`images`; a writer for each one to (re)build."""
        if self.cache_dir.is_symlink():  # a dataset from elsewhere must not make us write outside it
            raise ValueError(
                f"{self.cache_dir} is a symlink: pass cache_dir= a real folder or storage='memory'"
            )
        writers: dict[str, ImageCacheWriter] = {}
        for cam in self.cameras:
            key = self._cache_key(cam, paths, shape)
            file = self.cache_dir / cache_file_name(self.image_keys[cam], key)
            try:
                self.images[cam] = ImageCache(file, shape, key)
            except CacheMismatch as e:
                if file.exists():
                    log.warning("%s; rebuilding it", e)
                try:
                    writers[cam] = ImageCacheWriter(file, shape, key)
                except OSError as err:
                    for writer in writers.values():
                        writer.abort()
                    raise OSError(
                        f"{self.root}: cannot write the image cache in {self.cache_dir} ({err}); pass "
                        "cache_dir= a writable folder or storage='memory'"
                    ) from err
        return writers

    # -- access ---------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.state.shape[0])

    @property
    def num_episodes(self) -> int:
        """Number of loaded episodes."""
        return len(self.episodes["episode_index"])

    @property
    def instructions(self) -> list[str]:
        """Distinct instruction strings of the loaded frames, sorted."""
        return sorted({self.tasks[int(t)] for t in np.unique(self.task_index)})

    @property
    def fps(self) -> int:
        """Frames per second of the recording (meta/info.json)."""
        return int(self.meta["fps"])

    def _rows(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        """Row indices for a batch ``idx`` (B,): action rows (B, K) + mask, history rows (B, T) + mask."""
        k = np.arange(self.chunk_size)
        act = idx[:, None] + k[None, :]  # (B, K)
        end = self.episode_end[idx][:, None]  # (B, 1)
        act_mask = act < end
        act = np.minimum(act, end - 1)
        out = {"action": act, "action_mask": act_mask}
        if self.history:
            t = np.arange(-self.history, 1)
            hist = idx[:, None] + t[None, :]  # (B, T)
            start = self.episode_start[idx][:, None]
            out["history_mask"] = hist >= start
            out["history"] = np.maximum(hist, start)
        if self.state_history:
            past = idx[:, None] + np.arange(-self.state_history, 0)[None, :]  # (B, P)
            out["past_state"] = np.maximum(past, self.episode_start[idx][:, None])
        return out

    def frames(self, camera: str, rows: np.ndarray) -> torch.Tensor:
        """uint8 (B, 3, H, W) frames of ``camera`` at dataset ``rows`` (B,) (e.g. a last good frame)."""
        if camera not in self.images:
            raise ValueError(f"VLADataset: camera {camera!r} is not loaded {sorted(self.images)}")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"VLADataset: rows out of range for {len(self)} frames")
        return torch.from_numpy(np.ascontiguousarray(self.images[camera][rows]))

    def get_batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> dict[str, Any]:
        """Stacked batch for row ``indices`` (B,): the item layout of the module docstring with a leading B.

        ``instruction`` is a list of B strings; integer fields are int64 tensors (B,).
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"VLADataset: index out of range for {n} frames")
        idx = np.where(idx < 0, idx + n, idx)
        rows = self._rows(idx)
        obs_rows = rows["history"] if self.history else idx  # (B, T) or (B,)
        batch: dict[str, Any] = {
            "images": {cam: torch.from_numpy(self.images[cam][obs_rows]) for cam in self.cameras},
            "state": torch.from_numpy(self.state[obs_rows]),
            "action": torch.from_numpy(self.action[rows["action"]]),  # (B, K, A)
            "action_mask": torch.from_numpy(rows["action_mask"]),  # (B, K)
            "instruction": [self.tasks[t] for t in self.task_index[idx]],
            "episode_index": torch.from_numpy(self.episode_index[idx]),
            "frame_index": torch.from_numpy(self.frame_index[idx]),
            "task_index": torch.from_numpy(self.task_index[idx]),
        }
        if self.history:
            batch["history_mask"] = torch.from_numpy(rows["history_mask"])  # (B, T)
        if self.state_history:
            batch["past_state"] = torch.from_numpy(self.state[rows["past_state"]])  # (B, P, S)
        if self.env_state_dim:
            batch["environment_state"] = torch.from_numpy(self.env_state[idx])  # (B, E), current frame
        return batch

    def __getitem__(self, i: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"VLADataset: index {i} out of range for {n} frames")
        i = int(i) % n
        idx = np.array([i])
        rows = self._rows(idx)
        obs = rows["history"][0] if self.history else i
        item: dict[str, Any] = {
            "images": {cam: torch.from_numpy(self.images[cam][obs].copy()) for cam in self.cameras},
            "state": torch.from_numpy(self.state[obs].copy()),
            "action": torch.from_numpy(self.action[rows["action"][0]]),
            "action_mask": torch.from_numpy(rows["action_mask"][0]),
            "instruction": self.tasks[int(self.task_index[i])],
            "episode_index": int(self.episode_index[i]),
            "frame_index": int(self.frame_index[i]),
            "task_index": int(self.task_index[i]),
        }
        if self.history:
            item["history_mask"] = torch.from_numpy(rows["history_mask"][0])
        if self.state_history:
            item["past_state"] = torch.from_numpy(self.state[rows["past_state"][0]])
        return item

    def episode_rows(self, episode_index: int) -> slice:
        """Rows of this dataset holding ``episode_index`` (for evaluation or visualisation)."""
        try:
            i = self.episodes["episode_index"].index(episode_index)
        except ValueError:
            raise ValueError(f"VLADataset: episode {episode_index} is not loaded") from None
        start = int(np.sum(self.episodes["length"][:i]))
        return slice(start, start + int(self.episodes["length"][i]))
