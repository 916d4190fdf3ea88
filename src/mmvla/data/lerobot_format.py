"""Demonstrations on disk in LeRobot's v3.0 layout (``shared/formats/lerobot-v3.md``), with pyarrow only.

Layout written by :class:`LeRobotWriter` under a dataset root::

    meta/info.json                            schema (features), totals, path templates, fps, splits
    meta/stats.json                           per-feature min/max/mean/std/count/q01/q10/q50/q90/q99
    meta/tasks.parquet                        pandas index "task" (the instruction), column task_index
    meta/episodes/chunk-000/file-000.parquet  one row per episode (+ mmvla extras: family, split, seed, target)
    data/chunk-CCC/file-FFF.parquet           frames of many episodes; a new file once one would pass
                                              ``data_files_size_in_mb``; an episode never spans two files

Frame columns: ``observation.images.<camera>`` (``struct<bytes: binary, path: string>`` holding a PNG),
``observation.state`` (``fixed_size_list<float32>[5]``), ``action`` (``fixed_size_list<float32>[7]``),
``timestamp`` (float32, seconds = frame_index / fps), ``frame_index``, ``episode_index``, ``index``
(global frame number), ``task_index`` (int64). No video features are written.

The read helpers at the bottom (:func:`read_info`, :func:`read_tasks`, :func:`read_episodes`,
:func:`read_stats`, :func:`read_parquet`) turn every missing or malformed file into a
``FileNotFoundError``/``ValueError`` that names the file and the feature or column.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmvla.data.stats import (
    REQUIRED_STATS,
    ImageStats,
    VectorStats,
    channel_histogram,
    stats_from_json,
    stats_to_json,
)
from mmvla.io import atomic_write_json, read_json

CODEBASE_VERSION = "v3.0"
ROBOT_TYPE = "mmvla_tabletop"
DEFAULT_CHUNKS_SIZE = 1000  # files per chunk directory
DEFAULT_DATA_FILES_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILES_SIZE_IN_MB = 200
DEFAULT_PNG_COMPRESS_LEVEL = 1  # zlib level: 1 is ~3x faster than 6 and ~10% larger at 64²

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"

STATE_KEY = "observation.state"
ACTION_KEY = "action"
ENV_STATE_KEY = "observation.environment_state"  # LeRobot's name for privileged simulator state
IMAGE_PREFIX = "observation.images."
STATE_NAMES: tuple[str, ...] = ("x", "y", "z", "yaw", "gripper")
ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")

#: Bookkeeping features LeRobot always expects, with their parquet types.
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
INFO_KEYS: tuple[str, ...] = (
    "codebase_version",
    "robot_type",
    "total_episodes",
    "total_frames",
    "total_tasks",
    "chunks_size",
    "data_files_size_in_mb",
    "video_files_size_in_mb",
    "fps",
    "splits",
    "data_path",
    "video_path",
    "features",
)
EPISODE_COLUMNS: tuple[str, ...] = (
    "episode_index",
    "tasks",
    "length",
    "data/chunk_index",
    "data/file_index",
    "dataset_from_index",
    "dataset_to_index",
    "meta/episodes/chunk_index",
    "meta/episodes/file_index",
)
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

ExtraValue = str | int | float | bool


def image_key(camera: str) -> str:
    """Feature name of a camera's images: ``observation.images.<camera>``."""
    return f"{IMAGE_PREFIX}{camera}"


# ----------------------------------------------------------------------------------------------------
# Episodes in memory
# ----------------------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One recorded episode of T frames, as the recorder saw it.

    ``images``: camera -> uint8 (T, H, W, 3); ``state``: float32 (T, 5); ``action``: float32 (T, 7), the
    label for frame t (the expert's clean action); ``task``: the instruction; ``extra``: per-episode
    metadata stored as extra columns of the episodes table (e.g. family, split, seed, target);
    ``env_state``: optional float32 (T, E) privileged simulator state (e.g. the target object's
    position), stored as ``observation.environment_state`` for auxiliary training losses.
    """

    images: dict[str, np.ndarray]
    state: np.ndarray
    action: np.ndarray
    task: str
    extra: dict[str, ExtraValue] = field(default_factory=dict)
    env_state: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.state = np.ascontiguousarray(self.state, dtype=np.float32)
        self.action = np.ascontiguousarray(self.action, dtype=np.float32)
        if self.env_state is not None:
            self.env_state = np.ascontiguousarray(self.env_state, dtype=np.float32)
            if self.env_state.ndim != 2 or self.env_state.shape[0] != self.state.shape[0]:
                raise ValueError(
                    f"Episode: env_state must be (T, E) with T = {self.state.shape[0]}, got {self.env_state.shape}"
                )
        t = self.state.shape[0]
        if self.state.ndim != 2 or self.action.ndim != 2 or self.action.shape[0] != t:
            raise ValueError(
                f"Episode: state (T, S) and action (T, A) must share T; got {self.state.shape} and {self.action.shape}"
            )
        if t == 0:
            raise ValueError("Episode: an episode needs at least one frame")
        if not self.images:
            raise ValueError("Episode: at least one camera image stream is required")
        for cam, img in self.images.items():
            if img.dtype != np.uint8 or img.ndim != 4 or img.shape[0] != t or img.shape[3] != 3:
                raise ValueError(
                    f"Episode: images of camera '{cam}' must be uint8 (T={t}, H, W, 3); got {img.dtype} {img.shape}"
                )

    @property
    def length(self) -> int:
        """Number of frames T."""
        return int(self.state.shape[0])


@dataclass
class EncodedEpisode:
    """An :class:`Episode` with PNG-encoded frames and per-camera (3, 256) pixel histograms.

    Encoding is the expensive part of writing; collection workers do it in parallel and send this
    (about 10x smaller than the raw frames) to the process that writes the files.
    """

    pngs: dict[str, list[bytes]]
    histograms: dict[str, np.ndarray]
    image_shape: tuple[int, int]  # (H, W)
    state: np.ndarray
    action: np.ndarray
    task: str
    extra: dict[str, ExtraValue] = field(default_factory=dict)
    env_state: np.ndarray | None = None  # (T, E) or None

    @property
    def length(self) -> int:
        """Number of frames T."""
        return int(self.state.shape[0])


def encode_png(image: np.ndarray, compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL) -> bytes:
    """Lossless PNG bytes of a uint8 (H, W, 3) image."""
    buf = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """uint8 (H, W, 3) array from PNG (or any PIL-readable) bytes; raises on corrupt data."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        if img.mode != "RGB":
            return np.asarray(img.convert("RGB"))
        return np.asarray(img)


def encode_episode(episode: Episode, compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL) -> EncodedEpisode:
    """PNG-encode every frame of ``episode`` and histogram its pixels (for exact image statistics)."""
    shapes = {img.shape[1:3] for img in episode.images.values()}
    if len(shapes) != 1:
        raise ValueError(f"encode_episode: all cameras must share one image size, got {sorted(shapes)}")
    (shape,) = shapes
    return EncodedEpisode(
        pngs={cam: [encode_png(f, compress_level) for f in img] for cam, img in episode.images.items()},
        histograms={cam: channel_histogram(img) for cam, img in episode.images.items()},
        image_shape=(int(shape[0]), int(shape[1])),
        state=episode.state,
        action=episode.action,
        task=episode.task,
        extra=dict(episode.extra),
        env_state=episode.env_state,
    )


def _arrow_type_of(value: ExtraValue) -> pa.DataType:
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int | np.integer):
        return pa.int64()
    if isinstance(value, float | np.floating):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    raise ValueError(f"episode extra values must be str, int, float or bool; got {type(value).__name__}")


# ----------------------------------------------------------------------------------------------------
# Writer
# ----------------------------------------------------------------------------------------------------


class LeRobotWriter:
    """Streams episodes into a LeRobot v3.0 dataset at ``root`` (which must not exist or be empty).

    Usage (``root`` is normally the temporary directory of :func:`mmvla.io.atomic_directory`)::

        with LeRobotWriter(tmp, cameras=("front", "wrist"), image_size=64, fps=10) as w:
            for ep in episodes:
                w.add_episode(ep)          # Episode or EncodedEpisode
            info = w.finish(split="train")

    Data files roll over to the next ``file-NNN`` before an episode would push the current file past
    ``data_files_size_in_mb`` (measured as Arrow bytes, so the layout is deterministic); episodes are
    numbered in the order they are added.
    """

    def __init__(
        self,
        root: str | Path,
        cameras: Sequence[str],
        image_size: int | tuple[int, int],
        fps: int,
        *,
        state_names: Sequence[str] = STATE_NAMES,
        action_names: Sequence[str] = ACTION_NAMES,
        env_state_names: Sequence[str] = (),
        robot_type: str = ROBOT_TYPE,
        data_files_size_in_mb: float = DEFAULT_DATA_FILES_SIZE_IN_MB,
        chunks_size: int = DEFAULT_CHUNKS_SIZE,
        compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL,
    ) -> None:
        self.root = Path(root)
        if self.root.exists() and any(self.root.iterdir()):
            raise FileExistsError(f"LeRobotWriter: {self.root} is not empty")
        if not cameras:
            raise ValueError("LeRobotWriter: at least one camera is required")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"LeRobotWriter: duplicate camera names in {list(cameras)}")
        if fps <= 0:
            raise ValueError(f"LeRobotWriter: fps must be positive, got {fps}")
        if data_files_size_in_mb <= 0 or chunks_size <= 0:
            raise ValueError("LeRobotWriter: data_files_size_in_mb and chunks_size must be positive")
        self.cameras = tuple(cameras)
        self.image_shape = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.fps = int(fps)
        self.state_names = tuple(state_names)
        self.action_names = tuple(action_names)
        self.env_state_names = tuple(env_state_names)  # empty: no observation.environment_state
        self.robot_type = robot_type
        self.data_files_size_in_mb = data_files_size_in_mb
        self.chunks_size = chunks_size
        self.compress_level = compress_level

        self.features = self._features()
        self.schema = self._schema()
        self._tasks: dict[str, int] = {}
        self._episode_rows: list[dict[str, Any]] = []
        self._extra_types: dict[str, pa.DataType] | None = None
        self._stats_vec = {
            STATE_KEY: VectorStats(len(self.state_names)),
            ACTION_KEY: VectorStats(len(self.action_names)),
            **({ENV_STATE_KEY: VectorStats(len(self.env_state_names))} if self.env_state_names else {}),
            **{k: VectorStats(1) for k in DEFAULT_FEATURES},
        }
        self._stats_img = {cam: ImageStats(3) for cam in self.cameras}
        self._total_frames = 0
        self._chunk = 0
        self._file = 0
        self._file_bytes = 0
        self._file_rows = 0
        self._pq_writer: pq.ParquetWriter | None = None
        self._finished = False

    # -- schema ---------------------------------------------------------------------------------------

    def _features(self) -> dict[str, dict[str, Any]]:
        h, w = self.image_shape
        feats: dict[str, dict[str, Any]] = {}
        for cam in self.cameras:
            feats[image_key(cam)] = {
                "dtype": "image",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
            }
        feats[STATE_KEY] = {
            "dtype": "float32",
            "shape": [len(self.state_names)],
            "names": list(self.state_names),
        }
        feats[ACTION_KEY] = {
            "dtype": "float32",
            "shape": [len(self.action_names)],
            "names": list(self.action_names),
        }
        if self.env_state_names:
            feats[ENV_STATE_KEY] = {
                "dtype": "float32",
                "shape": [len(self.env_state_names)],
                "names": list(self.env_state_names),
            }
        feats.update(json.loads(json.dumps(DEFAULT_FEATURES)))
        return feats

    def _schema(self) -> pa.Schema:
        fields = [pa.field(image_key(cam), IMAGE_STRUCT) for cam in self.cameras]
        fields += [
            pa.field(STATE_KEY, pa.list_(pa.float32(), len(self.state_names))),
            pa.field(ACTION_KEY, pa.list_(pa.float32(), len(self.action_names))),
            *(
                [pa.field(ENV_STATE_KEY, pa.list_(pa.float32(), len(self.env_state_names)))]
                if self.env_state_names
                else []
            ),
            pa.field("timestamp", pa.float32()),
            pa.field("frame_index", pa.int64()),
            pa.field("episode_index", pa.int64()),
            pa.field("index", pa.int64()),
            pa.field("task_index", pa.int64()),
        ]
        return pa.schema(fields)

    # -- writing --------------------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        """Episodes added so far."""
        return len(self._episode_rows)

    @property
    def num_frames(self) -> int:
        """Frames added so far."""
        return self._total_frames

    def add_episode(self, episode: Episode | EncodedEpisode) -> int:
        """Append one episode (encoding it first if needed); returns its ``episode_index``."""
        if self._finished:
            raise RuntimeError("LeRobotWriter: add_episode() after finish()")
        enc = encode_episode(episode, self.compress_level) if isinstance(episode, Episode) else episode
        self._check_episode(enc)
        t = enc.length
        ep_idx = len(self._episode_rows)
        task_idx = self._tasks.setdefault(enc.task, len(self._tasks))
        start = self._total_frames
        frame_index = np.arange(t, dtype=np.int64)
        columns: list[pa.Array] = []
        for cam in self.cameras:
            columns.append(
                pa.StructArray.from_arrays(
                    [pa.array(enc.pngs[cam], type=pa.binary()), pa.nulls(t, type=pa.string())],
                    fields=list(IMAGE_STRUCT),
                )
            )
        vectors = [enc.state, enc.action] + ([enc.env_state] if self.env_state_names else [])
        for arr in vectors:
            arr32 = np.ascontiguousarray(arr, dtype=np.float32)
            columns.append(pa.FixedSizeListArray.from_arrays(pa.array(arr32.reshape(-1)), arr32.shape[1]))
        book: dict[str, np.ndarray] = {
            "timestamp": (frame_index / self.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(t, ep_idx, dtype=np.int64),
            "index": start + frame_index,
            "task_index": np.full(t, task_idx, dtype=np.int64),
        }
        columns += [pa.array(v) for v in book.values()]
        table = pa.Table.from_arrays(columns, schema=self.schema)

        limit = self.data_files_size_in_mb * 1024 * 1024
        if self._pq_writer is not None and self._file_rows > 0 and self._file_bytes + table.nbytes > limit:
            self._close_data_file()
            self._file += 1
            if self._file >= self.chunks_size:
                self._chunk, self._file = self._chunk + 1, 0
        if self._pq_writer is None:
            path = self.root / DATA_PATH.format(chunk_index=self._chunk, file_index=self._file)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._pq_writer = pq.ParquetWriter(path, self.schema, compression="snappy", use_dictionary=False)
        self._pq_writer.write_table(table)
        self._file_bytes += table.nbytes
        self._file_rows += t

        self._stats_vec[STATE_KEY].update(enc.state)
        self._stats_vec[ACTION_KEY].update(enc.action)
        if enc.env_state is not None:  # present exactly when env_state_names are (checked above)
            self._stats_vec[ENV_STATE_KEY].update(enc.env_state)
        for k, v in book.items():
            self._stats_vec[k].update(v)
        for cam in self.cameras:
            self._stats_img[cam].update_histogram(enc.histograms[cam], t)
        self._total_frames += t
        self._episode_rows.append(
            {
                "episode_index": ep_idx,
                "tasks": [enc.task],
                "length": t,
                "data/chunk_index": self._chunk,
                "data/file_index": self._file,
                "dataset_from_index": start,
                "dataset_to_index": start + t,
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
                **enc.extra,
            }
        )
        return ep_idx

    def _check_episode(self, enc: EncodedEpisode) -> None:
        t = enc.length
        if set(enc.pngs) != set(self.cameras):
            raise ValueError(
                f"episode cameras {sorted(enc.pngs)} differ from the dataset's {list(self.cameras)}"
            )
        if tuple(enc.image_shape) != tuple(self.image_shape):
            raise ValueError(
                f"episode image size {enc.image_shape} differs from the dataset's {self.image_shape}"
            )
        if enc.state.shape != (t, len(self.state_names)):
            raise ValueError(f"episode state shape {enc.state.shape} != ({t}, {len(self.state_names)})")
        if enc.action.shape != (t, len(self.action_names)):
            raise ValueError(f"episode action shape {enc.action.shape} != ({t}, {len(self.action_names)})")
        e = len(self.env_state_names)
        if e and (enc.env_state is None or enc.env_state.shape != (t, e)):
            got = None if enc.env_state is None else enc.env_state.shape
            raise ValueError(f"episode env_state shape {got} != ({t}, {e}) declared by env_state_names")
        if not e and enc.env_state is not None:
            raise ValueError("episode has env_state but the writer declares no env_state_names")
        for cam in self.cameras:
            if len(enc.pngs[cam]) != t:
                raise ValueError(f"episode camera '{cam}' has {len(enc.pngs[cam])} frames, expected {t}")
        clash = set(enc.extra) & (set(EPISODE_COLUMNS) | {"stats"})
        if clash or any(k.startswith(("stats/", "videos/")) for k in enc.extra):
            raise ValueError(f"episode extra keys clash with LeRobot's episode columns: {sorted(enc.extra)}")
        types = {k: _arrow_type_of(v) for k, v in enc.extra.items()}
        if self._extra_types is None:
            self._extra_types = types
        elif types != self._extra_types:
            raise ValueError(
                f"episode extra columns {types} differ from the first episode's {self._extra_types}"
            )

    def _close_data_file(self) -> None:
        if self._pq_writer is not None:
            self._pq_writer.close()
        self._pq_writer = None
        self._file_bytes = 0
        self._file_rows = 0

    def abort(self) -> None:
        """Close open files without writing metadata (the caller discards ``root``)."""
        self._close_data_file()
        self._finished = True

    def __enter__(self) -> LeRobotWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None or not self._finished:
            self.abort()

    def finish(self, split: str = "train", splits: dict[str, str] | None = None) -> dict[str, Any]:
        """Close the data files and write the metadata (info.json last); returns the info dict.

        ``splits`` defaults to ``{split: "0:<episodes>"}``. Raises ``ValueError`` when no episode was added.
        """
        if self._finished:
            raise RuntimeError("LeRobotWriter: finish() called twice")
        if not self._episode_rows:
            self.abort()
            raise ValueError("LeRobotWriter: no episodes to write")
        self._close_data_file()
        self._finished = True
        n_ep = len(self._episode_rows)

        self._write_episodes()
        self._write_tasks()
        stats = {k: s.compute() for k, s in self._stats_vec.items()}
        stats.update({image_key(cam): s.compute() for cam, s in self._stats_img.items()})
        ordered = {k: stats[k] for k in self.features}
        atomic_write_json(self.root / STATS_PATH, stats_to_json(ordered), indent=4)

        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": n_ep,
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_files_size_in_mb,
            "video_files_size_in_mb": DEFAULT_VIDEO_FILES_SIZE_IN_MB,
            "fps": self.fps,
            "splits": splits if splits is not None else {split: f"0:{n_ep}"},
            "data_path": DATA_PATH,
            "video_path": None,
            "features": self.features,
        }
        atomic_write_json(self.root / INFO_PATH, info, indent=4)
        return info

    def _write_episodes(self) -> None:
        extra_types = self._extra_types or {}
        fields = [
            pa.field("episode_index", pa.int64()),
            pa.field("tasks", pa.list_(pa.string())),
            pa.field("length", pa.int64()),
            *(pa.field(c, pa.int64()) for c in EPISODE_COLUMNS[3:]),
            *(pa.field(k, t) for k, t in extra_types.items()),
        ]
        schema = pa.schema(fields)
        table = pa.Table.from_pylist(self._episode_rows, schema=schema)
        path = self.root / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)

    def _write_tasks(self) -> None:
        tasks = sorted(self._tasks, key=self._tasks.__getitem__)
        table = pa.table(
            {
                "task_index": pa.array([self._tasks[t] for t in tasks], pa.int64()),
                "task": pa.array(tasks, pa.string()),
            }
        )
        # pandas metadata so that ``pd.read_parquet`` (LeRobot's reader) restores "task" as the index.
        pandas_meta = {
            "index_columns": ["task"],
            "column_indexes": [
                {
                    "name": None,
                    "field_name": None,
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": {"encoding": "UTF-8"},
                }
            ],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": "task",
                    "field_name": "task",
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.3",
        }
        table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
        path = self.root / TASKS_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)


# ----------------------------------------------------------------------------------------------------
# Reading with clear errors
# ----------------------------------------------------------------------------------------------------


def read_parquet(
    path: str | Path, what: str, columns: Sequence[str] | None = None, required: Sequence[str] = ()
) -> pa.Table:
    """Read ``columns`` (default all) of a parquet file; every failure names the file (and the column).

    ``required`` columns must be present even when all columns are read.

    Raises ``FileNotFoundError`` when the file is absent and ``ValueError`` when it is truncated, corrupt
    or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        wanted = [*(columns or ()), *required]
        if wanted:
            missing = [c for c in dict.fromkeys(wanted) if c not in names]
            if missing:
                raise ValueError(f"{what} {path} is missing column(s) {missing} (present: {names})")
        return pf.read(columns=list(columns) if columns is not None else None)
    except (pa.ArrowException, OSError, EOFError) as e:
        raise ValueError(f"{what} {path} cannot be read (truncated or corrupt parquet?): {e}") from e


def read_info(root: str | Path) -> dict[str, Any]:
    """Load and validate ``meta/info.json`` (v3.0, every key of the layout, image/state/action features)."""
    path = Path(root) / INFO_PATH
    info = read_json(path, what="dataset info (meta/info.json)")
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object")
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"{path} lacks key(s) {missing}")
    if info["codebase_version"] != CODEBASE_VERSION:
        raise ValueError(
            f"{path}: codebase_version {info['codebase_version']!r} is not supported (expected {CODEBASE_VERSION!r})"
        )
    feats = info["features"]
    if not isinstance(feats, dict):
        raise ValueError(f"{path}: 'features' must be an object")
    for name, ft in feats.items():
        if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
            raise ValueError(f"{path}: feature '{name}' needs 'dtype' and 'shape'")
    for name in (STATE_KEY, ACTION_KEY, *DEFAULT_FEATURES):
        if name not in feats:
            raise ValueError(f"{path}: feature '{name}' is missing from 'features'")
    for name in (STATE_KEY, ACTION_KEY):
        if feats[name]["dtype"] != "float32" or len(feats[name]["shape"]) != 1:
            raise ValueError(f"{path}: feature '{name}' must be float32 with a 1-D shape, got {feats[name]}")
    cams = image_features(info)
    if not cams:
        raise ValueError(f"{path}: no image feature ('{IMAGE_PREFIX}<camera>' with dtype 'image')")
    for key in cams.values():
        shape = feats[key]["shape"]
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"{path}: image feature '{key}' must have shape [H, W, 3], got {shape}")
    return info


def image_features(info: dict[str, Any]) -> dict[str, str]:
    """camera -> feature name for every inline image feature of ``info`` (in schema order)."""
    out: dict[str, str] = {}
    for name, ft in info["features"].items():
        if name.startswith(IMAGE_PREFIX):
            if ft.get("dtype") == "video":
                raise ValueError(f"feature '{name}' is stored as video; mmvla reads inline PNG images only")
            if ft.get("dtype") == "image":
                out[name[len(IMAGE_PREFIX) :]] = name
    return out


def read_tasks(root: str | Path) -> list[str]:
    """Task strings of ``meta/tasks.parquet`` ordered by ``task_index`` (which must be 0..n-1)."""
    path = Path(root) / TASKS_PATH
    table = read_parquet(path, "tasks table (meta/tasks.parquet)")
    if "task_index" not in table.column_names:
        raise ValueError(f"tasks table {path} is missing column 'task_index'")
    meta = table.schema.pandas_metadata or {}
    idx_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)]
    task_col = next((c for c in ("task", *idx_cols, "__index_level_0__") if c in table.column_names), None)
    if task_col is None:
        raise ValueError(f"tasks table {path} has no task string column (expected index 'task')")
    idx = table.column("task_index").to_pylist()
    texts = table.column(task_col).to_pylist()
    if sorted(idx) != list(range(len(idx))):
        raise ValueError(f"tasks table {path}: task_index must be 0..{len(idx) - 1}, got {sorted(idx)}")
    out = [""] * len(idx)
    for i, t in zip(idx, texts, strict=True):
        if not isinstance(t, str):
            raise ValueError(f"tasks table {path}: task {i} is not a string")
        out[i] = t
    return out


def read_episodes(root: str | Path) -> dict[str, list[Any]]:
    """Column -> values of all ``meta/episodes/chunk-*/file-*.parquet`` rows, sorted by episode_index."""
    ep_dir = Path(root) / EPISODES_DIR
    paths = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"episodes table not found: no {ep_dir}/chunk-*/file-*.parquet")
    tables = [read_parquet(p, "episodes table", required=EPISODE_COLUMNS) for p in paths]
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as e:
        raise ValueError(f"episodes tables under {ep_dir} have incompatible schemas: {e}") from e
    cols = table.to_pydict()
    order = np.argsort(np.asarray(cols["episode_index"], dtype=np.int64), kind="stable")
    return {k: [v[i] for i in order] for k, v in cols.items()}


def read_stats(root: str | Path, features: Sequence[str] = ()) -> dict[str, dict[str, np.ndarray]]:
    """``meta/stats.json`` as float64 arrays; ``ValueError`` naming the feature when one in ``features``
    lacks min/max/mean/std."""
    path = Path(root) / STATS_PATH
    stats = stats_from_json(read_json(path, what="dataset statistics (meta/stats.json)"), source=str(path))
    for feat in features:
        if feat not in stats:
            raise ValueError(f"{path}: no statistics for feature '{feat}'")
        missing = [s for s in REQUIRED_STATS if s not in stats[feat]]
        if missing:
            raise ValueError(f"{path}: feature '{feat}' lacks statistic(s) {missing}")
    return stats
