"""Datasets from strangers: every crafted hostile folder is refused with an error naming file and field.

Where a case could make the reader open a file outside the dataset root, a *valid* copy of the data is
planted at that outside location: a reader that followed the path would load successfully, so the
test fails unless the path is refused. Reads are also recorded (every parquet file and image the
reader opens) and none may lie outside the root.
"""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mmvla.data import dataset as dataset_module
from mmvla.data import lerobot_format
from mmvla.data.dataset import VLADataset
from mmvla.data.lerobot_format import check_path_template, decode_png, encode_png, read_info

DATA_FILE = "data/chunk-000/file-000.parquet"
TEMPLATE = "chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Every parquet file the reader opens, resolved."""
    seen: list[Path] = []
    real = pq.ParquetFile

    def spy(source: Any, *a: Any, **kw: Any) -> Any:
        seen.append(Path(source).resolve())
        return real(source, *a, **kw)

    monkeypatch.setattr(lerobot_format.pq, "ParquetFile", spy)
    monkeypatch.setattr(dataset_module.pq, "ParquetFile", spy)
    yield seen


def _edit_info(root: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def _plant_outside(root: Path) -> Path:
    """A valid copy of the data file at <root>/../outside/chunk-000/file-000.parquet; returns the folder."""
    outside = root.parent / "outside"
    (outside / "chunk-000").mkdir(parents=True)
    shutil.copy(root / DATA_FILE, outside / "chunk-000/file-000.parquet")
    return outside


def _refused(root: Path, opened: list[Path], *match: str) -> str:
    with pytest.raises(ValueError) as err:
        VLADataset(root, progress=False)
    msg = str(err.value)
    for m in match:
        assert m in msg, msg
    root_r = root.resolve()
    assert all(p.is_relative_to(root_r) for p in opened), opened
    return msg


def test_sanity_the_fixture_loads(dataset_root: Path, opened: list[Path]) -> None:
    VLADataset(dataset_root, progress=False)  # the hostile cases below differ from this one only as stated
    assert opened and all(p.is_relative_to(dataset_root.resolve()) for p in opened)


def test_dotdot_data_path_is_refused(dataset_root: Path, opened: list[Path]) -> None:
    _plant_outside(dataset_root)
    _edit_info(dataset_root, lambda i: i.update(data_path="../outside/" + TEMPLATE))
    _refused(dataset_root, opened, "meta/info.json", "'data_path'", "'..'")


def test_dotdot_hidden_inside_the_path_is_refused(dataset_root: Path, opened: list[Path]) -> None:
    _plant_outside(dataset_root)
    _edit_info(dataset_root, lambda i: i.update(data_path="data/../../outside/" + TEMPLATE))
    _refused(dataset_root, opened, "'data_path'", "'..'")


def test_absolute_data_path_is_refused(dataset_root: Path, opened: list[Path]) -> None:
    outside = _plant_outside(dataset_root)
    _edit_info(dataset_root, lambda i: i.update(data_path=str(outside.resolve()) + "/" + TEMPLATE))
    _refused(dataset_root, opened, "'data_path'", "relative")


def test_symlink_leading_out_is_refused(dataset_root: Path, opened: list[Path]) -> None:
    outside = _plant_outside(dataset_root)
    target = dataset_root / DATA_FILE
    target.unlink()
    target.symlink_to(outside / "chunk-000/file-000.parquet")
    _refused(dataset_root, opened, "outside the dataset root", "file-000.parquet")


def test_symlinked_meta_file_leading_out_is_refused(dataset_root: Path, opened: list[Path]) -> None:
    outside = dataset_root.parent / "secret.json"
    outside.write_text((dataset_root / "meta/info.json").read_text())
    (dataset_root / "meta/info.json").unlink()
    (dataset_root / "meta/info.json").symlink_to(outside)
    _refused(dataset_root, opened, "meta/info.json", "outside the dataset root")


def test_symlink_inside_the_root_is_allowed(dataset_root: Path) -> None:
    target = dataset_root / DATA_FILE
    moved = dataset_root / "data/real.parquet"
    target.rename(moved)
    target.symlink_to(moved)
    assert len(VLADataset(dataset_root, progress=False)) > 0


@pytest.mark.parametrize(
    "field",
    [
        "{chunk_index.__class__}",
        "{chunk_index.__class__.__mro__}",
        "{chunk_index[0]}",
        "{0}",
        "{}",
        "{episode_index}",
        "{chunk_index!r}",
        "{chunk_index:{file_index}}",
    ],
)
def test_format_fields_beyond_the_documented_ones_are_refused(
    dataset_root: Path, opened: list[Path], field: str
) -> None:
    _edit_info(
        dataset_root, lambda i: i.update(data_path=f"data/chunk-{field}/file-{{file_index:03d}}.parquet")
    )
    _refused(dataset_root, opened, "meta/info.json", "'data_path'")
    assert not opened  # refused while reading info.json, before any data file


def test_huge_format_width_is_refused_without_building_the_string(dataset_root: Path) -> None:
    _edit_info(
        dataset_root,
        lambda i: i.update(data_path="data/chunk-{chunk_index:0999999999999d}/file-{file_index:03d}.parquet"),
    )
    with pytest.raises(ValueError, match=r"'data_path'.*format spec|'data_path'.*width"):
        read_info(dataset_root)


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("data/{chunk_index:033d}/f.parquet", "width 33"),
        ("data/{chunk_index:>5}/f.parquet", "format spec"),
        ("data/{chunk_index:,}/f.parquet", "format spec"),
        ("data/" + "a" * 600 + "/{chunk_index}.parquet", "characters long"),
        ("data/{chunk_index}\\..\\x.parquet", "backslash"),
        ("data/{chunk_index", "not a valid format string"),
        ("", "non-empty"),
        (7, "must be a string"),
    ],
)
def test_path_template_bounds(template: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        check_path_template(template, "data_path", "meta/info.json")


def test_documented_templates_pass() -> None:
    assert check_path_template(lerobot_format.DATA_PATH, "data_path", "x")
    assert check_path_template(lerobot_format.VIDEO_PATH, "video_path", "x")
    assert check_path_template("data/{chunk_index}/{file_index:5d}.parquet", "data_path", "x")


def test_hostile_video_path_is_refused(dataset_root: Path) -> None:
    _edit_info(dataset_root, lambda i: i.update(video_path="videos/{video_key.__dict__}/x.mp4"))
    with pytest.raises(ValueError, match=r"'video_path'.*\{video_key.__dict__\}"):
        read_info(dataset_root)


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [
        ("data/chunk_index", -1, "negative"),
        ("data/file_index", 10**9, "exceeds"),
        ("length", 10**12, "length"),
        ("dataset_to_index", 10**12, "length"),
    ],
)
def test_hostile_episode_columns_are_refused(
    dataset_root: Path, opened: list[Path], column: str, value: int, match: str
) -> None:
    path = dataset_root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    vals = table.column(column).to_pylist()
    vals[0] = value
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(vals, pa.int64()))
    pq.write_table(table, path)
    _refused(dataset_root, opened, "episodes table", column if match != "length" else "length", match)


def test_string_chunk_index_is_refused(dataset_root: Path, opened: list[Path]) -> None:
    path = dataset_root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    col = "data/chunk_index"
    vals = ["../../outside"] * table.num_rows
    table = table.set_column(table.schema.get_field_index(col), col, pa.array(vals, pa.string()))
    pq.write_table(table, path)
    _plant_outside(dataset_root)
    _refused(dataset_root, opened, "episodes table", "'data/chunk_index'", "integers")


def test_consistent_but_inflated_lengths_are_refused_before_allocation(
    dataset_root: Path, opened: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """length, from/to index and total_frames all agree on 10^9 frames; the data file holds 34 rows."""
    path = dataset_root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    big = 10**9
    for col, val in (
        ("length", big),
        ("dataset_to_index", table.column("dataset_from_index")[0].as_py() + big),
    ):
        vals = table.column(col).to_pylist()
        vals[0] = val
        table = table.set_column(table.schema.get_field_index(col), col, pa.array(vals, pa.int64()))
    pq.write_table(table, path)
    lengths = table.column("length").to_pylist()
    _edit_info(dataset_root, lambda i: i.update(total_frames=sum(lengths)))
    allocated: list[tuple[int, ...]] = []
    real_empty = np.empty
    monkeypatch.setattr(
        dataset_module.np,
        "empty",
        lambda shape, *a, **k: allocated.append(shape) or real_empty(shape, *a, **k),
    )
    _refused(dataset_root, opened, "file-000.parquet", "holds 34 rows", "puts")
    assert not any(isinstance(s, tuple) and s[0] >= big for s in allocated), allocated


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda i: i.update(total_frames=10**6), "total_frames"),
        (lambda i: i.update(total_frames=-1), "'total_frames'"),
        (lambda i: i.update(total_frames="34"), "'total_frames'"),
        (lambda i: i.update(fps=0), "'fps'"),
        (lambda i: i["features"]["observation.state"].update(shape=[10**7]), "observation.state"),
        (lambda i: i["features"]["observation.state"].update(shape=[6]), "observation.state"),
        (lambda i: i["features"]["observation.state"].update(shape=["5"]), "observation.state"),
        (
            lambda i: i["features"]["observation.images.front"].update(shape=[100000, 100000, 3]),
            "100000x100000",
        ),
        (lambda i: i["features"]["observation.images.front"].update(shape=[16, 16, 4]), "[H, W, 3]"),
        (lambda i: i["features"]["action"].update(shape=[]), "'action'"),
    ],
)
def test_declared_sizes_are_checked(
    dataset_root: Path, opened: list[Path], edit: Callable[[dict[str, Any]], None], match: str
) -> None:
    _edit_info(dataset_root, edit)
    _refused(dataset_root, opened, match)


def test_image_shape_mismatch_is_refused_before_decoding(
    dataset_root: Path, opened: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # info.json says 32x32 but the stored PNGs are 16x16 (and the stats still match): refused from the header.
    def edit(i: dict[str, Any]) -> None:
        for cam in ("front", "wrist"):
            i["features"][f"observation.images.{cam}"]["shape"] = [32, 32, 3]

    _edit_info(dataset_root, edit)
    loads: list[Any] = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(self) or real_load(self))
    from PIL import ImageFile

    real_file_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or real_file_load(self))
    msg = _refused(dataset_root, opened, "file-000.parquet", "observation.images.front", "16x16", "32x32")
    assert "before decoding" in msg
    assert not loads  # not a single image was decompressed


def _png_with_header_size(height: int, width: int) -> bytes:
    """A 1x1 PNG whose IHDR claims ``height`` x ``width`` (a decompression bomb's header)."""
    png = bytearray(encode_png(np.zeros((1, 1, 3), np.uint8)))
    # signature (8) | length (4) | b"IHDR" (4) | width, height (8) | ... | crc
    png[16:24] = struct.pack(">II", width, height)
    ihdr = bytes(png[12:29])
    png[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(png)


@pytest.mark.parametrize("side", [5000, 200_000])  # under and over PIL's own decompression-bomb threshold
def test_oversized_image_header_is_refused_before_decoding(
    dataset_root: Path, opened: list[Path], monkeypatch: pytest.MonkeyPatch, side: int
) -> None:
    bomb = _png_with_header_size(side, side)
    if side < 10_000:  # the crafted header is what PIL reads (PIL itself refuses the larger one)
        with Image.open(io.BytesIO(bomb)) as im:
            assert im.size == (side, side)
    path = dataset_root / DATA_FILE
    table = pq.read_table(path)
    key = "observation.images.front"
    blobs = table.column(key).to_pylist()
    blobs[0] = {"bytes": bomb, "path": None}
    table = table.set_column(
        table.schema.get_field_index(key), key, pa.array(blobs, table.schema.field(key).type)
    )
    pq.write_table(table, path)
    decoded: list[Any] = []
    real = dataset_module.decode_png

    def spy(data: bytes, expected_hw: tuple[int, int] | None = None) -> np.ndarray:
        out = real(data, expected_hw=expected_hw)
        decoded.append(out.shape)
        return out

    monkeypatch.setattr(dataset_module, "decode_png", spy)
    msg = _refused(dataset_root, opened, "file-000.parquet", key, "episode 0 frame 0")
    assert ("5000x5000" in msg) if side == 5000 else ("decompression bomb" in msg)
    assert not decoded  # refused at the first frame, nothing decoded


def test_decode_png_checks_header_and_format() -> None:
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    np.testing.assert_array_equal(decode_png(encode_png(img), expected_hw=(2, 3)), img)
    with pytest.raises(lerobot_format.ImageSizeError, match=r"2x3.*expected 3x2"):
        decode_png(encode_png(img), expected_hw=(3, 2))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="BMP")
    with pytest.raises(Exception, match="cannot identify"):
        decode_png(buf.getvalue())


def test_stats_shape_mismatch_is_refused(dataset_root: Path, opened: list[Path]) -> None:
    path = dataset_root / "meta/stats.json"
    stats = json.loads(path.read_text())
    stats["action"]["mean"] = [0.0] * 3
    path.write_text(json.dumps(stats))
    _refused(dataset_root, opened, "meta/stats.json", "'mean'", "'action'", "(7,)")


def test_image_stats_shape_mismatch_is_refused(dataset_root: Path, opened: list[Path]) -> None:
    path = dataset_root / "meta/stats.json"
    stats = json.loads(path.read_text())
    stats["observation.images.wrist"]["std"] = [1.0] * 5
    path.write_text(json.dumps(stats))
    _refused(dataset_root, opened, "'std'", "observation.images.wrist", "(3, 1, 1)")


def test_huge_info_json_is_refused_unread(dataset_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lerobot_format, "MAX_META_BYTES", 100)
    with pytest.raises(ValueError, match=r"meta/info.json.*bytes \(at most 100\)"):
        read_info(dataset_root)
