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
import re
import string
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from mmvla.core.io import atomic_write_json, read_json
from mmvla.core.keys import (
    ACTION_KEY,
    ACTION_NAMES,
    ENV_STATE_KEY,
    IMAGE_PREFIX,
    ROBOT_TYPE,
    STATE_KEY,
    STATE_NAMES,
)
from mmvla.data.stats import (
    REQUIRED_STATS,
    ImageStats,
    VectorStats,
    channel_histogram,
    stats_from_json,
    stats_to_json,
)

CODEBASE_VERSION = "v3.0"
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

# Bounds a dataset from a stranger must respect (a hostile meta/info.json is refused, not obeyed).
MAX_META_BYTES = 64 * 1024 * 1024  # meta/info.json and meta/stats.json
MAX_TEMPLATE_CHARS = 512  # data_path / video_path
MAX_FORMAT_WIDTH = 32  # "{chunk_index:03d}": at most this width
MAX_FILE_INDEX = 10**6  # chunk_index / file_index of the episodes table
MAX_IMAGE_SIDE = 8192  # pixels, per image side declared in features
MAX_VECTOR_DIM = 65536  # entries of a 1-D float feature
MAX_COUNT = 2**40  # total_frames, total_episodes, total_tasks, chunks_size
#: The format fields each path template may use (the documented ones, nothing else).
TEMPLATE_FIELDS: dict[str, tuple[str, ...]] = {
    "data_path": ("chunk_index", "file_index"),
    "video_path": ("video_key", "chunk_index", "file_index"),
}
IMAGE_FORMATS = ("PNG", "JPEG")  # the only decoders PIL may use on dataset images
_INT_SPEC = re.compile(r"(?P<zero>0?)(?P<width>[0-9]{0,3})d?")

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


class ImageSizeError(ValueError):
    """An image's header declares a size other than the expected one (raised before any decoding)."""


def decode_png(data: bytes, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 (H, W, 3) array from PNG (or JPEG) bytes; raises on corrupt data.

    With ``expected_hw`` = (H, W) the size in the image header is checked *before* the pixels are
    decompressed: a header declaring another size (a decompression bomb among them) raises
    :class:`ImageSizeError` without decoding anything. Other formats than :data:`IMAGE_FORMATS` are refused.
    """
    try:
        with warnings.catch_warnings():
            # Our own size check below is stricter than PIL's warning threshold.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as e:
        raise ImageSizeError(f"image header declares too many pixels (decompression bomb?): {e}") from e
    with img:
        if expected_hw is not None and (img.height, img.width) != tuple(expected_hw):
            raise ImageSizeError(
                f"image header says {img.height}x{img.width} (HxW), expected {expected_hw[0]}x{expected_hw[1]}; "
                "refused before decoding"
            )
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

    Usage (``root`` is normally the temporary directory of :func:`mmvla.core.io.atomic_directory`)::

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


def inside_root(root: str | Path, path: str | Path, what: str) -> Path:
    """``path`` resolved (symlinks followed); ``ValueError`` naming ``what`` unless it lies inside ``root``.

    Every file of a dataset is read through this check, so a template, a ``..`` or a symlink cannot make
    the reader open a file outside the dataset directory.
    """
    root_r = Path(root).resolve()
    resolved = (Path(root) / path).resolve()
    if not resolved.is_relative_to(root_r):
        raise ValueError(
            f"{what}: {Path(root) / path} resolves to {resolved}, outside the dataset root {root_r} "
            "(a '..', an absolute path or a symlink leading out); refused"
        )
    return resolved


def check_path_template(template: Any, key: str, source: str | Path) -> str:
    """Validate a path template of ``meta/info.json`` (``data_path`` or ``video_path``); returns it.

    Allowed: at most :data:`MAX_TEMPLATE_CHARS` characters; plain fields named in :data:`TEMPLATE_FIELDS`
    (no attribute or index access such as ``{chunk_index.__class__}`` or ``{chunk_index[0]}``, no
    ``!r`` conversion, no nested fields); integer fields with a format spec like ``03d`` of width at
    most :data:`MAX_FORMAT_WIDTH`; a relative POSIX path without ``..`` components, backslashes or NUL.
    Raises ``ValueError`` naming ``source`` and ``key``.
    """
    fields = TEMPLATE_FIELDS[key]
    where = f"{source}: '{key}'"
    if not isinstance(template, str):
        raise ValueError(f"{where} must be a string, got {type(template).__name__}")
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ValueError(f"{where} is {len(template)} characters long (at most {MAX_TEMPLATE_CHARS})")
    if "\x00" in template or "\\" in template:
        raise ValueError(f"{where} {template!r} contains a NUL or a backslash")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"{where} {template!r} is not a valid format string: {e}") from e
    skeleton = []
    for text, name, spec, conversion in parsed:
        skeleton.append(text)
        if name is None:
            continue
        if name not in fields:
            raise ValueError(
                f"{where} {template!r}: format field {{{name}}} is not allowed; only "
                f"{', '.join('{' + f + '}' for f in fields)} (no attribute or index access, no positional fields)"
            )
        if conversion is not None:
            raise ValueError(f"{where} {template!r}: conversion !{conversion} on {{{name}}} is not allowed")
        if name == "video_key":
            if spec:
                raise ValueError(f"{where} {template!r}: {{video_key}} takes no format spec, got {spec!r}")
        else:
            m = _INT_SPEC.fullmatch(spec or "")
            if m is None:
                raise ValueError(
                    f"{where} {template!r}: format spec {spec!r} of {{{name}}} is not an integer width like '03d'"
                )
            width = int(m["width"] or 0)
            if width > MAX_FORMAT_WIDTH:
                raise ValueError(
                    f"{where} {template!r}: width {width} of {{{name}}} exceeds {MAX_FORMAT_WIDTH}"
                )
        skeleton.append("0")
    _check_relative_path("".join(skeleton), where, template)
    return template


def _check_relative_path(rel: str, where: str, shown: str) -> None:
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute():
        raise ValueError(f"{where} {shown!r} must be a non-empty path relative to the dataset root")
    if ".." in pure.parts:
        raise ValueError(f"{where} {shown!r} contains a '..' component; refused")


def dataset_file(root: str | Path, info: dict[str, Any], key: str, **values: int | str) -> Path:
    """The file a path template of ``info`` names for ``values``, checked to lie inside ``root``.

    ``key`` is ``"data_path"`` or ``"video_path"``; integer values must be in [0, MAX_FILE_INDEX]
    (e.g. ``dataset_file(root, info, "data_path", chunk_index=0, file_index=3)``). Raises ``ValueError``
    naming ``meta/info.json`` and the field.
    """
    source = Path(root) / INFO_PATH
    template = check_path_template(info[key], key, source)
    fields = TEMPLATE_FIELDS[key]
    if set(values) != set(fields):
        raise ValueError(f"dataset_file: {key} needs values for {list(fields)}, got {sorted(values)}")
    for name, v in values.items():
        if name == "video_key":
            if not isinstance(v, str) or not v or "/" in v or "\\" in v or v in (".", ".."):
                raise ValueError(f"{source}: video key {v!r} is not a plain name")
        elif isinstance(v, bool) or not isinstance(v, int | np.integer) or not 0 <= int(v) <= MAX_FILE_INDEX:
            raise ValueError(f"{source}: {name}={v!r} for '{key}' is not an integer in 0..{MAX_FILE_INDEX}")
    rel = template.format(**{k: (int(v) if k != "video_key" else v) for k, v in values.items()})
    _check_relative_path(rel, f"{source}: '{key}'", rel)
    return inside_root(root, rel, f"{source}: '{key}'")


def _read_meta_json(root: str | Path, rel: str, what: str) -> Any:
    path = Path(root) / rel
    if path.is_file():
        inside_root(root, rel, what)
        size = path.stat().st_size
        if size > MAX_META_BYTES:
            raise ValueError(f"{what} {path} is {size} bytes (at most {MAX_META_BYTES}); refused")
    return read_json(path, what=what)


def _count(info: dict[str, Any], key: str, path: Path, minimum: int = 0) -> int:
    v = info[key]
    if isinstance(v, bool) or not isinstance(v, int) or not minimum <= v <= MAX_COUNT:
        raise ValueError(f"{path}: '{key}' must be an integer in {minimum}..{MAX_COUNT}, got {v!r}")
    return v


def _shape(ft: dict[str, Any], name: str, path: Path) -> list[int]:
    shape = ft["shape"]
    if not isinstance(shape, list) or not shape or len(shape) > 4:
        raise ValueError(f"{path}: feature '{name}' shape must be a list of 1-4 integers, got {shape!r}")
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"{path}: feature '{name}' shape {shape!r} must hold positive integers")
    return shape


def read_info(root: str | Path) -> dict[str, Any]:
    """Load and validate ``meta/info.json`` (v3.0, every key of the layout, image/state/action features).

    A dataset from a stranger is checked, not obeyed: path templates (:func:`check_path_template`),
    totals (integers in 0..MAX_COUNT, fps > 0), feature shapes (positive integers; images [H, W, 3] with
    sides <= MAX_IMAGE_SIDE; vectors <= MAX_VECTOR_DIM entries). Each refusal is a ``ValueError``
    naming the file and the field.
    """
    path = Path(root) / INFO_PATH
    info = _read_meta_json(root, INFO_PATH, "dataset info (meta/info.json)")
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object")
    missing = [k for k in INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"{path} lacks key(s) {missing}")
    if info["codebase_version"] != CODEBASE_VERSION:
        raise ValueError(
            f"{path}: codebase_version {info['codebase_version']!r} is not supported (expected {CODEBASE_VERSION!r})"
        )
    for key in ("total_episodes", "total_frames", "total_tasks"):
        _count(info, key, path)
    _count(info, "chunks_size", path, minimum=1)
    _count(info, "fps", path, minimum=1)
    check_path_template(info["data_path"], "data_path", path)
    if info["video_path"] is not None:
        check_path_template(info["video_path"], "video_path", path)
    feats = info["features"]
    if not isinstance(feats, dict):
        raise ValueError(f"{path}: 'features' must be an object")
    for name, ft in feats.items():
        if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
            raise ValueError(f"{path}: feature '{name}' needs 'dtype' and 'shape'")
        _shape(ft, name, path)
    for name in (STATE_KEY, ACTION_KEY, *DEFAULT_FEATURES):
        if name not in feats:
            raise ValueError(f"{path}: feature '{name}' is missing from 'features'")
    for name in (STATE_KEY, ACTION_KEY, ENV_STATE_KEY):
        if name not in feats:
            continue
        if feats[name]["dtype"] != "float32" or len(feats[name]["shape"]) != 1:
            raise ValueError(f"{path}: feature '{name}' must be float32 with a 1-D shape, got {feats[name]}")
        if feats[name]["shape"][0] > MAX_VECTOR_DIM:
            raise ValueError(
                f"{path}: feature '{name}' declares {feats[name]['shape'][0]} entries (at most {MAX_VECTOR_DIM})"
            )
    cams = image_features(info)
    if not cams:
        raise ValueError(f"{path}: no image feature ('{IMAGE_PREFIX}<camera>' with dtype 'image')")
    for key in cams.values():
        shape = feats[key]["shape"]
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"{path}: image feature '{key}' must have shape [H, W, 3], got {shape}")
        if max(shape[0], shape[1]) > MAX_IMAGE_SIDE:
            raise ValueError(
                f"{path}: image feature '{key}' declares {shape[0]}x{shape[1]} pixels "
                f"(each side at most {MAX_IMAGE_SIDE}); refused"
            )
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
    if path.exists():
        inside_root(root, TASKS_PATH, "tasks table (meta/tasks.parquet)")
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
    """Column -> values of all ``meta/episodes/chunk-*/file-*.parquet`` rows, sorted by episode_index.

    Checked: every file lies inside ``root``; the integer columns of :data:`EPISODE_COLUMNS` are integer
    typed without nulls; ``episode_index`` is unique; ``length`` >= 1 and equals
    ``dataset_to_index - dataset_from_index``; chunk and file indices are in 0..MAX_FILE_INDEX.
    ``ValueError`` names the directory and the column.
    """
    ep_dir = Path(root) / EPISODES_DIR
    paths = sorted(ep_dir.glob("chunk-*/file-*.parquet"))
    if not paths:
        raise FileNotFoundError(f"episodes table not found: no {ep_dir}/chunk-*/file-*.parquet")
    for p in paths:
        inside_root(root, p.relative_to(root), "episodes table")
    tables = [read_parquet(p, "episodes table", required=EPISODE_COLUMNS) for p in paths]
    try:
        table = pa.concat_tables(tables, promote_options="default")
    except pa.ArrowException as e:
        raise ValueError(f"episodes tables under {ep_dir} have incompatible schemas: {e}") from e
    ints: dict[str, np.ndarray] = {}
    for name in EPISODE_COLUMNS:
        if name == "tasks":
            continue
        col = table.column(name)
        if not pa.types.is_integer(col.type) or col.null_count:
            raise ValueError(
                f"episodes table under {ep_dir}: column '{name}' must be integers without nulls, "
                f"got {col.type} with {col.null_count} null(s)"
            )
        ints[name] = np.asarray(col.to_numpy(), dtype=np.int64)
        if ints[name].size and ints[name].min() < 0:
            raise ValueError(f"episodes table under {ep_dir}: column '{name}' has negative values")
    for name in (
        "data/chunk_index",
        "data/file_index",
        "meta/episodes/chunk_index",
        "meta/episodes/file_index",
    ):
        if ints[name].size and ints[name].max() > MAX_FILE_INDEX:
            raise ValueError(
                f"episodes table under {ep_dir}: column '{name}' exceeds {MAX_FILE_INDEX} ({ints[name].max()})"
            )
    length = ints["length"]
    if np.any(length < 1) or np.any(ints["dataset_to_index"] - ints["dataset_from_index"] != length):
        bad = int(
            np.flatnonzero((length < 1) | (ints["dataset_to_index"] - ints["dataset_from_index"] != length))[
                0
            ]
        )
        raise ValueError(
            f"episodes table under {ep_dir}: episode {int(ints['episode_index'][bad])} has length "
            f"{int(length[bad])} but dataset_from_index..dataset_to_index "
            f"{int(ints['dataset_from_index'][bad])}..{int(ints['dataset_to_index'][bad])}"
        )
    if len(np.unique(ints["episode_index"])) != len(ints["episode_index"]):
        raise ValueError(f"episodes table under {ep_dir}: column 'episode_index' has duplicates")
    cols = table.to_pydict()
    order = np.argsort(ints["episode_index"], kind="stable")
    return {k: [v[i] for i in order] for k, v in cols.items()}


def read_stats(root: str | Path, features: Sequence[str] = ()) -> dict[str, dict[str, np.ndarray]]:
    """``meta/stats.json`` as float64 arrays; ``ValueError`` naming the feature when one in ``features``
    lacks min/max/mean/std."""
    path = Path(root) / STATS_PATH
    stats = stats_from_json(
        _read_meta_json(root, STATS_PATH, "dataset statistics (meta/stats.json)"), source=str(path)
    )
    for feat in features:
        if feat not in stats:
            raise ValueError(f"{path}: no statistics for feature '{feat}'")
        missing = [s for s in REQUIRED_STATS if s not in stats[feat]]
        if missing:
            raise ValueError(f"{path}: feature '{feat}' lacks statistic(s) {missing}")
    return stats
