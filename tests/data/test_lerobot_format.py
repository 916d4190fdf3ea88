"""The files on disk follow shared/formats/lerobot-v3.md, read back with plain pyarrow and json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synthetic_episodes import CAMERAS, TASKS, make_episode, write_dataset

from mmvla.data.lerobot_format import Episode, LeRobotWriter, decode_png, encode_episode

INFO_KEYS = {
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
}


def test_layout_matches_lerobot_v3_reference(dataset_root: Path, episodes: list[Episode]) -> None:
    root = dataset_root
    info = json.loads((root / "meta/info.json").read_text())
    assert set(info) >= INFO_KEYS
    assert info["codebase_version"] == "v3.0"
    assert info["robot_type"] == "mmvla_tabletop"
    assert info["total_episodes"] == len(episodes)
    assert info["total_frames"] == sum(e.length for e in episodes)
    assert info["total_tasks"] == len(TASKS)
    assert info["chunks_size"] == 1000
    assert info["data_files_size_in_mb"] == 100
    assert info["video_files_size_in_mb"] == 200
    assert info["fps"] == 10
    assert info["splits"] == {"train": f"0:{len(episodes)}"}
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] is None

    feats = info["features"]
    for name, ft in feats.items():
        assert set(ft) >= {"dtype", "shape", "names"}, name
    for cam in CAMERAS:
        assert feats[f"observation.images.{cam}"]["dtype"] == "image"
        assert feats[f"observation.images.{cam}"]["shape"] == [16, 16, 3]
    assert feats["observation.state"] == {
        "dtype": "float32",
        "shape": [5],
        "names": ["x", "y", "z", "yaw", "gripper"],
    }
    assert feats["action"]["dtype"] == "float32" and feats["action"]["shape"] == [7]
    assert len(feats["action"]["names"]) == 7
    assert feats["timestamp"] == {"dtype": "float32", "shape": [1], "names": None}
    for k in ("frame_index", "episode_index", "index", "task_index"):
        assert feats[k] == {"dtype": "int64", "shape": [1], "names": None}

    # data parquet: one column per feature, with the reference types
    data = pq.read_table(root / "data/chunk-000/file-000.parquet")
    assert set(data.column_names) == set(feats)
    sch = data.schema
    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for cam in CAMERAS:
        assert sch.field(f"observation.images.{cam}").type == img_type
    assert sch.field("observation.state").type == pa.list_(pa.float32(), 5)
    assert sch.field("action").type == pa.list_(pa.float32(), 7)
    assert sch.field("timestamp").type == pa.float32()
    for k in ("frame_index", "episode_index", "index", "task_index"):
        assert sch.field(k).type == pa.int64()
    cols = data.to_pydict()
    assert cols["index"] == list(range(info["total_frames"]))
    np.testing.assert_allclose(
        cols["timestamp"], np.array(cols["frame_index"], dtype=np.float32) / 10, rtol=0, atol=1e-6
    )
    first_png = cols["observation.images.front"][0]
    assert first_png["bytes"][:8] == b"\x89PNG\r\n\x1a\n"

    # tasks: pandas index "task" + column task_index (int64)
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.schema.field("task_index").type == pa.int64()
    assert tasks.schema.pandas_metadata["index_columns"] == ["task"]
    assert dict(
        zip(tasks.column("task").to_pylist(), tasks.column("task_index").to_pylist(), strict=True)
    ) == {t: i for i, t in enumerate(TASKS)}

    # episodes: every reference column, plus mmvla extras
    ep = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    es = ep.schema
    assert es.field("tasks").type == pa.list_(pa.string())
    for c in (
        "episode_index",
        "length",
        "data/chunk_index",
        "data/file_index",
        "dataset_from_index",
        "dataset_to_index",
        "meta/episodes/chunk_index",
        "meta/episodes/file_index",
    ):
        assert es.field(c).type == pa.int64(), c
    rows = ep.to_pylist()
    start = 0
    for i, (row, e) in enumerate(zip(rows, episodes, strict=True)):
        assert row["episode_index"] == i
        assert row["tasks"] == [e.task]
        assert row["length"] == e.length
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (start, start + e.length)
        assert (row["data/chunk_index"], row["data/file_index"]) == (0, 0)
        assert (row["family"], row["split"], row["seed"], row["target"]) == (
            e.extra["family"],
            "train",
            e.extra["seed"],
            "red cube",
        )
        start += e.length

    # stats: every feature, every statistic; images (3, 1, 1)
    stats = json.loads((root / "meta/stats.json").read_text())
    assert set(stats) == set(feats)
    for name, s in stats.items():
        assert set(s) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}, name
        assert s["count"] == [info["total_frames"]]
    assert np.asarray(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert np.asarray(stats["action"]["q99"]).shape == (7,)
    assert not (root / "videos").exists()


def test_stats_equal_numpy_on_recorded_arrays(dataset_root: Path, episodes: list[Episode]) -> None:
    stats = json.loads((dataset_root / "meta/stats.json").read_text())
    qs = {"q01": 0.01, "q10": 0.1, "q50": 0.5, "q90": 0.9, "q99": 0.99}
    arrays = {
        "observation.state": np.concatenate([e.state for e in episodes]).astype(np.float64),
        "action": np.concatenate([e.action for e in episodes]).astype(np.float64),
    }
    for cam in CAMERAS:
        arrays[f"observation.images.{cam}"] = np.concatenate([e.images[cam] for e in episodes]) / 255.0
    for name, x in arrays.items():
        axis = 0 if x.ndim == 2 else (0, 1, 2)
        ref = {"min": x.min(axis), "max": x.max(axis), "mean": x.mean(axis), "std": x.std(axis)}
        ref.update({k: np.quantile(x, q, axis=axis) for k, q in qs.items()})
        for k, v in ref.items():
            np.testing.assert_allclose(np.asarray(stats[name][k]).ravel(), v, rtol=1e-12, atol=1e-12)
    frame_index = np.concatenate([np.arange(e.length) for e in episodes])
    assert stats["frame_index"]["max"] == [frame_index.max()]
    np.testing.assert_allclose(stats["frame_index"]["mean"], [frame_index.mean()], rtol=1e-12)


def test_data_files_roll_over_and_episodes_point_to_their_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    eps = [make_episode(rng, 20, i, size=32) for i in range(6)]  # ~125 KB of PNG per episode
    per_episode = pa.Table.from_pylist([{"b": b} for b in encode_episode(eps[0]).pngs["front"]]).nbytes * 2
    limit_mb = 2.5 * per_episode / 2**20  # two episodes fit in a file, a third does not
    info = write_dataset(tmp_path / "ds", eps, data_files_size_in_mb=limit_mb)
    files = sorted((tmp_path / "ds/data/chunk-000").glob("file-*.parquet"))
    assert [f.name for f in files] == ["file-000.parquet", "file-001.parquet", "file-002.parquet"]
    ep = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert ep["data/file_index"] == [0, 0, 1, 1, 2, 2]
    for i, f in enumerate(ep["data/file_index"]):
        t = pq.read_table(files[f], columns=["episode_index", "index"]).to_pydict()
        rows = [j for j, e in enumerate(t["episode_index"]) if e == i]
        got = [t["index"][j] for j in rows]
        assert got == list(range(ep["dataset_from_index"][i], ep["dataset_to_index"][i]))
    assert info["total_frames"] == 120


def test_chunk_directory_rolls_over_after_chunks_size_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    eps = [make_episode(rng, 3, i) for i in range(3)]
    write_dataset(tmp_path / "ds", eps, data_files_size_in_mb=1e-6, chunks_size=2)
    ep = pq.read_table(tmp_path / "ds/meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert list(zip(ep["data/chunk_index"], ep["data/file_index"], strict=True)) == [(0, 0), (0, 1), (1, 0)]
    assert (tmp_path / "ds/data/chunk-001/file-000.parquet").is_file()


def test_png_is_lossless() -> None:
    rng = np.random.default_rng(7)
    ep = make_episode(rng, 4, 0)
    enc = encode_episode(ep)
    for cam in CAMERAS:
        for png, frame in zip(enc.pngs[cam], ep.images[cam], strict=True):
            np.testing.assert_array_equal(decode_png(png), frame)


def test_writer_validates_its_input(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    ep = make_episode(rng, 3, 0)
    with (
        pytest.raises(ValueError, match="image size"),
        LeRobotWriter(tmp_path / "a", cameras=CAMERAS, image_size=32, fps=10) as w,
    ):
        w.add_episode(ep)
    with (
        pytest.raises(ValueError, match="cameras"),
        LeRobotWriter(tmp_path / "b", cameras=("front",), image_size=16, fps=10) as w,
    ):
        w.add_episode(ep)
    with (
        pytest.raises(ValueError, match="no episodes"),
        LeRobotWriter(tmp_path / "c", cameras=CAMERAS, image_size=16, fps=10) as w,
    ):
        w.finish()
    with (
        pytest.raises(ValueError, match="extra columns"),
        LeRobotWriter(tmp_path / "d", cameras=CAMERAS, image_size=16, fps=10) as w,
    ):
        w.add_episode(ep)
        other = make_episode(rng, 3, 1)
        other.extra["seed"] = "not an int"
        w.add_episode(other)
    with pytest.raises(ValueError, match="share T"):
        Episode(images=ep.images, state=ep.state[:2], action=ep.action, task="x")
    with pytest.raises(ValueError, match="uint8"):
        Episode(
            images={"front": ep.images["front"].astype(np.float32)},
            state=ep.state,
            action=ep.action,
            task="x",
        )
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "junk").write_text("x")
    with pytest.raises(FileExistsError):
        LeRobotWriter(tmp_path / "e", cameras=CAMERAS, image_size=16, fps=10)


def test_tasks_index_with_pandas(dataset_root: Path) -> None:
    """LeRobot reads meta/tasks.parquet with pandas and looks tasks up by the index (optional check)."""
    pd = pytest.importorskip("pandas")
    tasks = pd.read_parquet(dataset_root / "meta/tasks.parquet")
    assert tasks.index.name == "task" and list(tasks.columns) == ["task_index"]
    assert [int(tasks.loc[t, "task_index"]) for t in TASKS] == [0, 1, 2]


def test_loads_like_lerobot_with_hf_datasets(dataset_root: Path, episodes: list[Episode]) -> None:
    """LeRobot's loader path: HF features from info.json, Dataset.from_parquet (optional check)."""
    datasets = pytest.importorskip("datasets")
    info = json.loads((dataset_root / "meta/info.json").read_text())
    hf = {}
    for key, ft in info["features"].items():
        if ft["dtype"] == "image":
            hf[key] = datasets.Image()
        elif ft["shape"] == [1]:
            hf[key] = datasets.Value(dtype=ft["dtype"])
        else:
            hf[key] = datasets.Sequence(length=ft["shape"][0], feature=datasets.Value(dtype=ft["dtype"]))
    data = datasets.Dataset.from_parquet(
        str(dataset_root / "data/chunk-000/file-000.parquet"),
        features=datasets.Features(hf),
        cache_dir=str(dataset_root.parent / "hf-cache"),
    )
    row = data[episodes[0].length + 0]  # first frame of episode 1
    np.testing.assert_array_equal(np.asarray(row["observation.images.front"]), episodes[1].images["front"][0])
    np.testing.assert_array_equal(np.asarray(row["action"], dtype=np.float32), episodes[1].action[0])
    eps = datasets.Dataset.from_parquet(
        str(dataset_root / "meta/episodes/chunk-000/file-000.parquet"),
        cache_dir=str(dataset_root.parent / "hf-cache"),
    )
    assert eps[1]["dataset_from_index"] == episodes[0].length
