"""Demonstration collection and dataset reading: throughput and size on disk.

Measures, for the default dataset settings (front + wrist cameras at 64², pick + push, noise 0.1):

- collection throughput, frames written per wall-clock second, with 1 and 2 worker processes
  (``mmvla.data.collect.collect_dataset`` end to end: process start, simulation + rendering, PNG
  encoding in the workers, parquet writing, statistics, atomic rename);
- the cost of the recording step alone: PNG encoding + histograms per frame at zlib levels 1 and 6;
- size on disk per episode and per frame;
- reading: ``VLADataset`` construction (PNG decode) frames/s, ``__getitem__`` samples/s and
  ``get_batch`` samples/s (batch 256, action chunks of 8).

    .venv/bin/python benchmarks/collect.py            # ~1 min on a laptop CPU
    .venv/bin/python benchmarks/collect.py --quick    # smoke run
Writes benchmarks/results/collect.json and prints a summary. Timings on a shared machine are noisy:
the JSON records the CPU count and the load average at the start.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmvla.core.io import atomic_write_json

RESULTS = Path(__file__).resolve().parent / "results" / "collect.json"


def bench_collect(tmp: Path, episodes: int, workers: int, seed: int) -> dict[str, Any]:
    from mmvla.data.collect import collect_dataset

    out = tmp / f"ds-w{workers}"
    s = collect_dataset(out, episodes=episodes, workers=workers, seed=seed, progress=False)
    return {
        "workers": workers,
        "episodes_requested": episodes,
        "episodes_kept": s.kept,
        "frames": s.frames,
        "seconds": round(s.seconds, 3),
        "frames_per_s": round(s.frames_per_second, 1),
        "bytes_on_disk": s.bytes_on_disk,
        "bytes_per_episode": round(s.bytes_on_disk / max(s.kept, 1)),
        "bytes_per_frame": round(s.bytes_on_disk / max(s.frames, 1)),
    }


def bench_encode(root: Path) -> dict[str, Any]:
    from mmvla.data.dataset import VLADataset
    from mmvla.data.lerobot_format import Episode, encode_episode

    ds = VLADataset(root, progress=False)
    rows = ds.episode_rows(0)
    ep = Episode(
        images={c: ds.images[c][rows].transpose(0, 2, 3, 1).copy() for c in ds.cameras},
        state=ds.state[rows],
        action=ds.action[rows],
        task="x",
    )
    out: dict[str, Any] = {}
    for level in (1, 6):
        reps = 5
        t0 = time.perf_counter()
        for _ in range(reps):
            enc = encode_episode(ep, compress_level=level)
        dt = (time.perf_counter() - t0) / reps
        png_bytes = sum(len(b) for v in enc.pngs.values() for b in v)
        out[f"zlib_{level}"] = {
            "us_per_frame_all_cameras": round(dt / ep.length * 1e6, 1),
            "png_bytes_per_image": round(png_bytes / (ep.length * len(ds.cameras))),
        }
    return out


def bench_read(root: Path, batch: int = 256, chunk: int = 8) -> dict[str, Any]:
    from mmvla.data.dataset import VLADataset

    t0 = time.perf_counter()
    ds = VLADataset(root, chunk_size=chunk, progress=False)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(ds), 20_000)
    t0 = time.perf_counter()
    for i in idx[:5000]:
        ds[int(i)]
    item_rate = 5000 / (time.perf_counter() - t0)
    n_batches = 40
    t0 = time.perf_counter()
    for b in range(n_batches):
        ds.get_batch(idx[(b * batch) % 10_000 : (b * batch) % 10_000 + batch])
    batch_rate = n_batches * batch / (time.perf_counter() - t0)
    return {
        "frames": len(ds),
        "load_seconds": round(load_s, 3),
        "load_frames_per_s": round(len(ds) / load_s, 1),
        "getitem_samples_per_s": round(item_rate),
        "get_batch_samples_per_s": round(batch_rate),
        "batch_size": batch,
        "chunk_size": chunk,
        "memory_mb": round(sum(a.nbytes for a in ds.images.values()) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=40, help="episodes per collection run")
    parser.add_argument("--quick", action="store_true", help="smoke run (8 episodes)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the collected datasets")
    args = parser.parse_args()
    episodes = 8 if args.quick else args.episodes

    load = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="mmvla-bench-collect-"))
    try:
        collect = [bench_collect(tmp, episodes, w, seed=1000) for w in (1, 2)]
        root = tmp / "ds-w1"
        encode = bench_encode(root)
        read = bench_read(root)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "benchmark": "collect",
        "settings": {"cameras": ["front", "wrist"], "image_size": 64, "families": ["pick", "push"]},
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in load],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "collect": collect,
        "encode": encode,
        "read": read,
    }
    atomic_write_json(args.out, result)

    print(f"collection ({episodes} episodes, 2 cameras at 64², {os.cpu_count()} CPUs, load {load[0]:.1f})")
    for r in collect:
        print(
            f"  {r['workers']} worker(s): {r['frames_per_s']:8.1f} frames/s  ({r['frames']} frames, "
            f"{r['episodes_kept']}/{r['episodes_requested']} kept, {r['seconds']:.1f} s)"
        )
    r0 = collect[0]
    print(
        f"  size on disk: {r0['bytes_per_episode'] / 1024:.1f} KiB/episode, {r0['bytes_per_frame']} B/frame"
    )
    for k, v in encode.items():
        print(
            f"  PNG {k}: {v['us_per_frame_all_cameras']} us/frame (all cameras), {v['png_bytes_per_image']} B/image"
        )
    print(
        f"reading: load {read['load_frames_per_s']:.0f} frames/s; __getitem__ {read['getitem_samples_per_s']} "
        f"samples/s; get_batch({read['batch_size']}, chunk {read['chunk_size']}) "
        f"{read['get_batch_samples_per_s']} samples/s"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
