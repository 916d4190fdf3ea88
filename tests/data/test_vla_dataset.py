"""VLADataset: exact round trip, action chunks / history against a naive reference, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from synthetic_episodes import CAMERAS, TASKS

from mmvla.data.dataset import VLADataset
from mmvla.data.lerobot_format import Episode

DATA = "data/chunk-000/file-000.parquet"


def test_round_trip_is_exact(dataset_root: Path, episodes: list[Episode]) -> None:
    ds = VLADataset(dataset_root, progress=False)
    assert len(ds) == sum(e.length for e in episodes)
    assert ds.cameras == CAMERAS and ds.num_episodes == len(episodes)
    assert ds.instructions == sorted(TASKS)
    for cam in CAMERAS:
        ref = np.concatenate([e.images[cam] for e in episodes]).transpose(0, 3, 1, 2)  # (N, 3, H, W)
        np.testing.assert_array_equal(ds.images[cam], ref)
    np.testing.assert_array_equal(ds.state, np.concatenate([e.state for e in episodes]))
    np.testing.assert_array_equal(ds.action, np.concatenate([e.action for e in episodes]))
    assert ds.episodes["family"] == [e.extra["family"] for e in episodes]
    assert ds.episodes["seed"] == [e.extra["seed"] for e in episodes]
    row = 0
    for i, e in enumerate(episodes):
        for t in range(e.length):
            item = ds[row]
            assert item["episode_index"] == i and item["frame_index"] == t
            assert item["instruction"] == e.task
            for cam in CAMERAS:
                assert item["images"][cam].dtype == torch.uint8
                np.testing.assert_array_equal(
                    item["images"][cam].numpy(), e.images[cam][t].transpose(2, 0, 1)
                )
            np.testing.assert_array_equal(item["state"].numpy(), e.state[t])
            np.testing.assert_array_equal(item["action"].numpy(), e.action[t : t + 1])
            row += 1
        assert ds.episode_rows(i) == slice(row - e.length, row)
    assert set(ds.stats) >= {"observation.state", "action", "observation.images.front"}
    assert ds.stats["observation.images.front"]["mean"].shape == (3, 1, 1)
    assert ds.meta["fps"] == ds.fps == 10


def _naive_item(episodes: list[Episode], ep: int, t: int, k: int, h: int) -> dict[str, np.ndarray]:
    e = episodes[ep]
    last = e.length - 1
    action = np.stack([e.action[min(t + j, last)] for j in range(k)])
    mask = np.array([t + j <= last for j in range(k)])
    hist = [max(t - h + j, 0) for j in range(h + 1)]
    return {
        "action": action,
        "action_mask": mask,
        "state": np.stack([e.state[s] for s in hist]),
        "front": np.stack([e.images["front"][s].transpose(2, 0, 1) for s in hist]),
        "history_mask": np.array([t - h + j >= 0 for j in range(h + 1)]),
    }


@pytest.mark.parametrize(("k", "h"), [(1, 0), (4, 0), (8, 3), (15, 1)])
def test_chunks_and_history_match_naive_reference(
    dataset_root: Path, episodes: list[Episode], k: int, h: int
) -> None:
    ds = VLADataset(dataset_root, chunk_size=k, history=h, progress=False)
    batch = ds.get_batch(np.arange(len(ds)))
    row = 0
    for ep, e in enumerate(episodes):
        for t in range(e.length):
            ref = _naive_item(episodes, ep, t, k, h)
            item = ds[row]
            for src in (
                item,
                {key: v[row] for key, v in batch.items() if key not in ("images", "instruction")},
            ):
                np.testing.assert_array_equal(src["action"].numpy(), ref["action"])
                np.testing.assert_array_equal(src["action_mask"].numpy(), ref["action_mask"])
                state = src["state"].numpy()
                np.testing.assert_array_equal(state, ref["state"] if h else ref["state"][-1])
                if h:
                    np.testing.assert_array_equal(src["history_mask"].numpy(), ref["history_mask"])
                else:
                    assert "history_mask" not in src
            img = batch["images"]["front"][row].numpy()
            np.testing.assert_array_equal(img, ref["front"] if h else ref["front"][-1])
            np.testing.assert_array_equal(item["images"]["front"].numpy(), img)
            assert batch["instruction"][row] == e.task
            assert item["action_mask"].dtype == torch.bool and item["action"].shape == (k, 7)
            row += 1


def test_get_batch_shapes_and_dtypes(dataset_root: Path) -> None:
    ds = VLADataset(dataset_root, chunk_size=4, history=2, progress=False)
    b = ds.get_batch(torch.tensor([0, 5, len(ds) - 1, -1]))
    assert b["images"]["wrist"].shape == (4, 3, 3, 16, 16) and b["images"]["wrist"].dtype == torch.uint8
    assert b["state"].shape == (4, 3, 5) and b["state"].dtype == torch.float32
    assert b["action"].shape == (4, 4, 7) and b["action_mask"].shape == (4, 4)
    assert b["history_mask"].shape == (4, 3)
    assert b["episode_index"].dtype == torch.int64 and len(b["instruction"]) == 4
    np.testing.assert_array_equal(b["action"][2].numpy(), b["action"][3].numpy())
    with pytest.raises(IndexError):
        ds.get_batch([len(ds)])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_items_do_not_alias_the_dataset(dataset_root: Path) -> None:
    ds = VLADataset(dataset_root, progress=False)
    before = ds.images["front"][0].copy()
    ds[0]["images"]["front"].zero_()
    ds.get_batch([0])["images"]["front"].zero_()
    np.testing.assert_array_equal(ds.images["front"][0], before)


def test_camera_and_episode_selection(dataset_root: Path, episodes: list[Episode]) -> None:
    ds = VLADataset(dataset_root, cameras=["wrist"], episodes=[3, 0], image_size=16, progress=False)
    assert ds.cameras == ("wrist",) and set(ds[0]["images"]) == {"wrist"}
    assert ds.episodes["episode_index"] == [0, 3]
    assert len(ds) == episodes[0].length + episodes[3].length
    np.testing.assert_array_equal(ds.action[episodes[0].length :], episodes[3].action)
    with pytest.raises(ValueError, match="camera"):
        VLADataset(dataset_root, cameras=["top"], progress=False)
    with pytest.raises(ValueError, match=r"16x16.*image_size=64"):
        VLADataset(dataset_root, image_size=64, progress=False)
    with pytest.raises(ValueError, match=r"episode\(s\) \[9\]"):
        VLADataset(dataset_root, episodes=[9], progress=False)
    with pytest.raises(ValueError, match="chunk_size"):
        VLADataset(dataset_root, chunk_size=0, progress=False)


# ---------------------------------------------------------------------------- corrupt or missing files


def _load_error(root: Path) -> Exception:
    with pytest.raises((ValueError, FileNotFoundError)) as info:
        VLADataset(root, progress=False)
    assert not isinstance(info.value, pa.ArrowException), "raw pyarrow error leaked"
    return info.value


def _rewrite_data(root: Path, fn) -> None:  # type: ignore[no-untyped-def]
    path = root / DATA
    table = pq.read_table(path)
    pq.write_table(fn(table), path)


def test_missing_info_json(dataset_root: Path) -> None:
    (dataset_root / "meta/info.json").unlink()
    err = _load_error(dataset_root)
    assert isinstance(err, FileNotFoundError) and "meta/info.json" in str(err)


def test_malformed_info_json(dataset_root: Path) -> None:
    (dataset_root / "meta/info.json").write_text("{not json")
    assert "info.json" in str(_load_error(dataset_root))
    info = {"codebase_version": "v3.0"}
    (dataset_root / "meta/info.json").write_text(json.dumps(info))
    assert "lacks key" in str(_load_error(dataset_root))


def test_info_without_state_feature(dataset_root: Path) -> None:
    path = dataset_root / "meta/info.json"
    info = json.loads(path.read_text())
    del info["features"]["observation.state"]
    path.write_text(json.dumps(info))
    err = _load_error(dataset_root)
    assert "observation.state" in str(err) and "info.json" in str(err)


def test_truncated_data_parquet(dataset_root: Path) -> None:
    path = dataset_root / DATA
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    err = _load_error(dataset_root)
    assert isinstance(err, ValueError) and str(path) in str(err) and "truncated or corrupt" in str(err)


def test_truncated_episodes_parquet(dataset_root: Path) -> None:
    path = dataset_root / "meta/episodes/chunk-000/file-000.parquet"
    path.write_bytes(path.read_bytes()[:100])
    err = _load_error(dataset_root)
    assert str(path) in str(err)


def test_missing_data_file(dataset_root: Path) -> None:
    (dataset_root / DATA).unlink()
    err = _load_error(dataset_root)
    assert isinstance(err, FileNotFoundError) and str(dataset_root / DATA) in str(err)


@pytest.mark.parametrize("column", ["observation.state", "action", "observation.images.wrist", "index"])
def test_missing_column(dataset_root: Path, column: str) -> None:
    _rewrite_data(dataset_root, lambda t: t.drop_columns([column]))
    err = _load_error(dataset_root)
    assert column in str(err) and str(dataset_root / DATA) in str(err)


def test_wrong_column_type(dataset_root: Path) -> None:
    def fn(t: pa.Table) -> pa.Table:
        i = t.schema.get_field_index("action")
        return t.set_column(i, "action", pa.array([str(x) for x in t.column("action").to_pylist()]))

    _rewrite_data(dataset_root, fn)
    err = _load_error(dataset_root)
    assert "'action'" in str(err) and str(dataset_root / DATA) in str(err)


def test_missing_rows(dataset_root: Path) -> None:
    _rewrite_data(dataset_root, lambda t: t.slice(0, t.num_rows - 3))
    err = _load_error(dataset_root)
    assert "episode 4" in str(err) and "truncated" in str(err)


def test_garbled_png(dataset_root: Path) -> None:
    def fn(t: pa.Table) -> pa.Table:
        key = "observation.images.wrist"
        rows = t.column(key).to_pylist()
        rows[9] = {"bytes": rows[9]["bytes"][:30] + b"garbage" * 5, "path": None}  # episode 2, frame 1
        i = t.schema.get_field_index(key)
        return t.set_column(i, t.schema.field(key), pa.array(rows, type=t.schema.field(key).type))

    _rewrite_data(dataset_root, fn)
    err = _load_error(dataset_root)
    msg = str(err)
    assert (
        "observation.images.wrist" in msg and "episode 2 frame 1" in msg and str(dataset_root / DATA) in msg
    )


def test_missing_stats(dataset_root: Path) -> None:
    path = dataset_root / "meta/stats.json"
    stats = json.loads(path.read_text())
    del stats["action"]["std"]
    path.write_text(json.dumps(stats))
    err = _load_error(dataset_root)
    assert "'action'" in str(err) and "std" in str(err) and "stats.json" in str(err)
    path.unlink()
    assert "meta/stats.json" in str(_load_error(dataset_root))


def test_missing_tasks_and_episodes(dataset_root: Path) -> None:
    tasks = dataset_root / "meta/tasks.parquet"
    saved = tasks.read_bytes()
    tasks.unlink()
    assert "meta/tasks.parquet" in str(_load_error(dataset_root))
    tasks.write_bytes(saved)
    shutil.rmtree(dataset_root / "meta/episodes")
    assert "episodes" in str(_load_error(dataset_root))


def test_missing_dataset_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="dataset directory"):
        VLADataset(tmp_path / "nope", progress=False)


@pytest.mark.parametrize("p", [1, 3])
def test_past_state_matches_naive_reference(dataset_root: Path, episodes: list[Episode], p: int) -> None:
    ds = VLADataset(dataset_root, chunk_size=2, state_history=p, progress=False)
    batch = ds.get_batch(np.arange(len(ds)))
    assert batch["past_state"].shape == (len(ds), p, 5) and batch["state"].shape == (len(ds), 5)
    row = 0
    for e in episodes:
        for t in range(e.length):
            want = np.stack([e.state[max(t - p + j, 0)] for j in range(p)])  # t-p .. t-1, clamped to 0
            np.testing.assert_array_equal(batch["past_state"][row].numpy(), want)
            np.testing.assert_array_equal(ds[row]["past_state"].numpy(), want)
            row += 1
    assert "past_state" not in VLADataset(dataset_root, progress=False)[0]
    with pytest.raises(ValueError, match="state_history"):
        VLADataset(dataset_root, state_history=-1, progress=False)
