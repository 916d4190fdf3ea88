"""VLADataset storage="disk": bit-identical to memory, cache reused, rebuilt on change, corruption caught."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_episodes import CAMERAS, make_episode, write_dataset

from mmvla.data import dataset as dataset_module
from mmvla.data.dataset import VLADataset
from mmvla.data.image_cache import HEADER_BYTES, CacheMismatch, ImageCache
from mmvla.data.lerobot_format import Episode

DATA = "data/chunk-000/file-000.parquet"


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / ".mmvla_cache").glob("*.u8"))


def _assert_same(a: object, b: object) -> None:
    """Exact equality of nested batches/items (tensors compared bit for bit, dtype included)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize(("k", "h"), [(1, 0), (8, 3)])
def test_disk_matches_memory_bit_for_bit(dataset_root: Path, episodes: list[Episode], k: int, h: int) -> None:
    mem = VLADataset(dataset_root, chunk_size=k, history=h, progress=False, storage="memory")
    disk = VLADataset(dataset_root, chunk_size=k, history=h, progress=False, storage="disk")
    assert mem.storage == "memory" and disk.storage == "disk"
    assert isinstance(disk.images["front"], ImageCache) and len(_cache_files(dataset_root)) == len(CAMERAS)
    n = len(mem)
    assert len(disk) == n
    for cam in CAMERAS:  # whole arrays, slices and single rows
        np.testing.assert_array_equal(disk.images[cam][:], mem.images[cam])
        np.testing.assert_array_equal(disk.images[cam][3:9], mem.images[cam][3:9])
        np.testing.assert_array_equal(disk.images[cam][n - 1], mem.images[cam][n - 1])
    rng = np.random.default_rng(1)
    for idx in (
        np.arange(n),
        rng.integers(-n, n, 64),
        np.array([5, 5, 0, n - 1, 2]),
        np.array([], dtype=int),
    ):
        _assert_same(disk.get_batch(idx), mem.get_batch(idx))
    for i in range(n):
        _assert_same(disk[i], mem[i])
    sub_mem = VLADataset(dataset_root, episodes=[3, 0], history=h, progress=False, storage="memory")
    sub_disk = VLADataset(dataset_root, episodes=[3, 0], history=h, progress=False, storage="disk")
    _assert_same(sub_disk.get_batch(np.arange(len(sub_disk))), sub_mem.get_batch(np.arange(len(sub_mem))))


def test_cache_reused_then_rebuilt_when_a_data_file_changes(
    dataset_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    VLADataset(dataset_root, progress=False, storage="disk")
    (front, *_) = _cache_files(dataset_root)
    built = front.stat().st_mtime_ns
    decoded: list[int] = []
    real = dataset_module.decode_png

    def counting(*a: object, **kw: object) -> np.ndarray:
        decoded.append(1)
        return real(*a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(dataset_module, "decode_png", counting)
    VLADataset(dataset_root, progress=False, storage="disk")
    assert not decoded and front.stat().st_mtime_ns == built  # reused: nothing decoded

    # The data file rewritten with other images (same episodes): the fingerprint changes, the cache follows.
    rng = np.random.default_rng(7)
    new = [make_episode(rng, length, i) for i, length in enumerate([7, 1, 12, 5, 9])]
    write_dataset(dataset_root.parent / "new", new)
    os.replace(dataset_root.parent / "new" / DATA, dataset_root / DATA)
    ds = VLADataset(dataset_root, progress=False, storage="disk")
    assert decoded
    ref = np.concatenate([e.images["front"] for e in new]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(ds.images["front"][:], ref)
    assert _cache_files(dataset_root) == [front, _cache_files(dataset_root)[1]]  # same names, no stale files
    assert not list((dataset_root / ".mmvla_cache").glob(".*.tmp"))

    # Only the modification time changes: rebuilt too (size + mtime fingerprint, no content hashing).
    decoded.clear()
    st = (dataset_root / DATA).stat()
    os.utime(dataset_root / DATA, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    VLADataset(dataset_root, progress=False, storage="disk")
    assert decoded


@pytest.mark.parametrize("damage", ["truncate", "extend", "magic", "header", "shape", "empty"])
def test_corrupt_cache_is_detected_and_rebuilt(
    dataset_root: Path, episodes: list[Episode], damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    ds = VLADataset(dataset_root, progress=False, storage="disk")
    good = ds.images["front"][:]
    cache = ds.images["front"]
    assert isinstance(cache, ImageCache)
    shape, path = cache.shape, cache.path
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        raw = raw[:-100]
    elif damage == "extend":
        raw += b"\0" * 100
    elif damage == "magic":
        raw[:8] = b"NOTMMVLA"
    elif damage == "header":
        raw[16:40] = b"{garbage" * 3
    elif damage == "shape":
        raw[16 : HEADER_BYTES - 1] = raw[16 : HEADER_BYTES - 1].replace(b'"shape": [', b'"shape": [9')
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    with pytest.raises(CacheMismatch, match="image cache"):
        ImageCache(path, shape, {})  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="mmvla.data.dataset"):
        again = VLADataset(dataset_root, progress=False, storage="disk")
    assert "rebuilding" in caplog.text
    np.testing.assert_array_equal(again.images["front"][:], good)


def test_cache_truncated_while_open_is_a_clear_error(dataset_root: Path) -> None:
    ds = VLADataset(dataset_root, progress=False, storage="disk")
    cache = ds.images["wrist"]
    assert isinstance(cache, ImageCache)
    os.truncate(cache.path, HEADER_BYTES + 3 * 16 * 16 * 3)  # three rows left
    with pytest.raises(CacheMismatch, match="short read"):
        ds.get_batch([len(ds) - 1])


def test_storage_argument_and_auto(
    dataset_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match="storage must be one of"):
        VLADataset(dataset_root, progress=False, storage="ssd")
    assert VLADataset(dataset_root, progress=False).storage == "memory"  # tiny: auto keeps it in RAM
    monkeypatch.setattr(dataset_module, "physical_memory_bytes", lambda: 4096)  # images > a quarter of RAM
    ds = VLADataset(dataset_root, progress=False, cache_dir=tmp_path / "cache", storage="auto")
    assert ds.storage == "disk" and len(list((tmp_path / "cache").glob("*.u8"))) == len(CAMERAS)
    assert not (dataset_root / ".mmvla_cache").exists()
    with pytest.raises(ValueError, match="storage='disk' keeps the images in a file"):
        VLADataset(dataset_root, progress=False, storage="memory")


def test_pickled_disk_dataset_reads_the_same(dataset_root: Path) -> None:
    ds = VLADataset(dataset_root, history=2, progress=False, storage="disk")
    clone = pickle.loads(pickle.dumps(ds))  # e.g. a DataLoader worker started with spawn
    _assert_same(clone.get_batch([0, 7, 20]), ds.get_batch([0, 7, 20]))


def test_cache_shipped_with_the_dataset_is_not_trusted(dataset_root: Path, tmp_path: Path) -> None:
    """A copy keeping mtimes (as tar or ``cp -p`` do) with a doctored cache beside it: rebuilt, never read."""
    ds = VLADataset(dataset_root, progress=False, storage="disk")
    good = ds.images["front"][:]
    for f in _cache_files(dataset_root):  # doctored images, header and size intact
        raw = bytearray(f.read_bytes())
        raw[HEADER_BYTES:] = bytes(len(raw) - HEADER_BYTES)
        f.write_bytes(bytes(raw))
    shipped = tmp_path / "shipped"
    shutil.copytree(dataset_root, shipped)  # copy2: mtimes preserved; ctime and inode are new
    again = VLADataset(shipped, progress=False, storage="disk")
    np.testing.assert_array_equal(again.images["front"][:], good)


@pytest.mark.parametrize("plant", ["fifo", "symlink"])
def test_fifo_or_symlink_in_place_of_the_cache(dataset_root: Path, tmp_path: Path, plant: str) -> None:
    ds = VLADataset(dataset_root, progress=False, storage="disk")
    good = ds.images["front"][:]
    path = ds.images["front"].path  # type: ignore[union-attr]
    target = tmp_path / "elsewhere.u8"
    shutil.copy(path, target)
    path.unlink()
    if plant == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(target)
    again = VLADataset(dataset_root, progress=False, storage="disk")  # no hang; rebuilt as a regular file
    assert path.is_file() and not path.is_symlink()
    np.testing.assert_array_equal(again.images["front"][:], good)


def test_symlinked_cache_dir_is_refused(dataset_root: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (dataset_root / ".mmvla_cache").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="is a symlink"):
        VLADataset(dataset_root, progress=False, storage="disk")
    assert not list((tmp_path / "outside").iterdir())
    VLADataset(dataset_root, progress=False, storage="memory")  # memory mode never touches it
