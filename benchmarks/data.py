"""Data at scale (#20): random-batch throughput against LeRobot's loader, and memory against dataset size.

(a) Throughput: a dataset collected by ``mmvla.data.collect.collect_dataset`` (default 200 episodes,
    front + wrist at 64²) is read in random batches of 64 frames (images of both cameras, state, and
    the action chunk of the demo recipe, K = 4) by

    - ``VLADataset.get_batch`` with ``storage="memory"`` and with ``storage="disk"`` (warm cache file,
      in the page cache after the first pass);
    - LeRobot's standalone loader (PyPI ``lerobot-dataset``, module ``ledataset``;
      ``LeRobotDataset(delta_timestamps={"action": K steps})``, items collated with
      ``default_collate``) on the same files, in a subprocess of a venv of its own that this script
      builds under ``--cache`` (``torch==2.13.0`` then ``lerobot-dataset``; torchvision is replaced
      by a stand-in for ``ToTensor``, the only part of it the image path uses). If the install fails
      the JSON records why.

    One process each, no DataLoader workers; medians of ``--repeats`` repeats of ``--batches`` batches.

(b) Memory: peak RSS (``ru_maxrss`` of a child process, and ``VmHWM`` reset after the imports for the
    data's own share) while loading a dataset and reading one epoch of
    random batches of 64 plus a few training steps of the demo policy, at two sizes (the collected
    dataset, and a larger one written from its episodes repeated: same images, same PNG sizes), with
    ``storage="memory"``, with ``storage="disk"`` building the cache (the first epoch's cost) and with
    the cache already built; and the model's own (a child that trains on the smallest dataset in disk
    mode reading a single batch). A 20,000-episode dataset is not measured: its numbers in the JSON
    are a linear extrapolation, marked as such.

    .venv/bin/python benchmarks/data.py            # ~5 min on 2 shared cores
    .venv/bin/python benchmarks/data.py --quick    # smoke run

Writes benchmarks/results/data.json and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np

from mmvla.core.io import atomic_write_json
from mmvla.data.dataset import VLADataset
from mmvla.data.lerobot_format import ENV_STATE_KEY, Episode, LeRobotWriter, read_info

RESULTS = Path(__file__).resolve().parent / "results" / "data.json"
CHUNK = 4  # the demo recipe's action chunk (mmvla.training.recipes.demo_configs)
BATCH = 64
TARGET_EPISODES = 20_000
LEROBOT_PACKAGES = (["torch==2.13.0"], ["lerobot-dataset"])

TORCHVISION_STUB = {
    "torchvision/__init__.py": '"""Stand-in for torchvision: transforms.ToTensor only."""\n'
    "from . import transforms  # noqa: F401\n",
    "torchvision/transforms/__init__.py": '''import numpy as np
import torch


class ToTensor:
    """PIL (H, W, C) uint8 -> float32 (C, H, W) in [0, 1], as torchvision.transforms.ToTensor."""

    def __call__(self, pic):
        arr = torch.from_numpy(np.array(pic, dtype=np.uint8, copy=True))
        return arr.permute(2, 0, 1).contiguous().to(torch.float32).div(255)
''',
}

LEROBOT_CHILD = """
import json, sys, time
import numpy as np
import torch
root, batch, batches, repeats, chunk, seed = sys.argv[1], *map(int, sys.argv[2:7])
from ledataset.datasets.lerobot_dataset import LeRobotDataset
from importlib.metadata import version
t0 = time.perf_counter()
fps = json.load(open(f"{root}/meta/info.json"))["fps"]
ds = LeRobotDataset("local/bench", root=root, delta_timestamps={"action": [k / fps for k in range(chunk)]})
load = time.perf_counter() - t0
n = len(ds)
rng = np.random.default_rng(seed)
item = ds[0]
shapes = {k: [str(v.dtype), *v.shape] for k, v in item.items() if isinstance(v, torch.Tensor)}
rates = []
for _ in range(repeats):
    t = time.perf_counter()
    for _ in range(batches):
        idx = rng.integers(0, n, batch)
        b = torch.utils.data.default_collate([ds[int(i)] for i in idx])
    rates.append(batch * batches / (time.perf_counter() - t))
print(json.dumps({"frames": n, "load_seconds": load, "frames_per_s": rates, "item_shapes": shapes,
                  "version": version("lerobot-dataset"), "torch": torch.__version__}))
"""


# -- (a) throughput ---------------------------------------------------------------------------------------


def lerobot_venv(cache: Path) -> tuple[Path | None, str]:
    """The venv with ``lerobot-dataset`` under ``cache`` (built when missing): (python, "") or (None, why)."""
    venv = cache / "ledataset-venv"
    py = venv / "bin" / "python"
    ok = venv / ".mmvla-installed"
    if not ok.is_file():
        shutil.rmtree(venv, ignore_errors=True)
        steps = [[sys.executable, "-m", "venv", str(venv)]]
        steps += [[str(py), "-m", "pip", "install", "-q", *pkgs] for pkgs in LEROBOT_PACKAGES]
        for cmd in steps:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            if r.returncode:
                return None, f"`{' '.join(cmd)}` failed ({r.returncode}): {(r.stderr or r.stdout)[-800:]}"
        ok.write_text("ok\n")
    stub = cache / "torchvision-stub"
    for rel, text in TORCHVISION_STUB.items():
        (stub / rel).parent.mkdir(parents=True, exist_ok=True)
        (stub / rel).write_text(text)
    return py, ""


def bench_lerobot(root: Path, cache: Path, batches: int, repeats: int) -> dict[str, Any]:
    py, why = lerobot_venv(cache)
    if py is None:
        return {"error": why}
    env = {**os.environ, "PYTHONPATH": str(cache / "torchvision-stub"), "HF_HUB_OFFLINE": "1"}
    cmd = [str(py), "-c", LEROBOT_CHILD, str(root), str(BATCH), str(batches), str(repeats), str(CHUNK), "0"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    if r.returncode:
        return {"error": f"LeRobot reader failed ({r.returncode}): {r.stderr[-800:]}"}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["frames_per_s_median"] = round(statistics.median(out["frames_per_s"]), 1)
    out["frames_per_s"] = [round(x, 1) for x in out["frames_per_s"]]
    out["load_seconds"] = round(out["load_seconds"], 3)
    return out


def bench_ours(root: Path, storage: str, batches: int, repeats: int) -> dict[str, Any]:
    ds = VLADataset(root, chunk_size=CHUNK, storage=storage, progress=False)
    ds.get_batch(
        np.arange(len(ds))
    )  # one full pass: a disk cache's pages are in the page cache, as LeRobot's
    rng = np.random.default_rng(0)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(batches):
            ds.get_batch(rng.integers(0, len(ds), BATCH))
        rates.append(BATCH * batches / (time.perf_counter() - t))
    return {
        "frames": len(ds),
        "storage": ds.storage,
        "frames_per_s": [round(x, 1) for x in rates],
        "frames_per_s_median": round(statistics.median(rates), 1),
    }


# -- (b) memory -------------------------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak since start or the last :func:`_reset_peak`), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def child(root: Path, storage: str, cache_dir: Path, epoch: bool, steps: int) -> dict[str, Any]:
    """In a fresh process: load, read one epoch of random batches (or one batch), train ``steps`` steps."""
    import torch

    from mmvla.policy import VLAPolicy
    from mmvla.training.recipes import demo_configs
    from mmvla.training.trainer import dataset_normalizer

    torch.set_num_threads(1)
    out: dict[str, Any] = {"rss_after_imports_mb": round(_status_mb("VmRSS"), 1)}
    _reset_peak()  # the imports' transient peak is not the data's
    t0 = time.perf_counter()
    ds = VLADataset(root, chunk_size=CHUNK, storage=storage, cache_dir=cache_dir, progress=False)
    out["load_seconds"] = round(time.perf_counter() - t0, 2)
    out["frames"] = len(ds)
    out["storage"] = ds.storage
    out["rss_after_load_mb"] = round(_status_mb("VmRSS"), 1)
    out["peak_rss_during_load_mb"] = round(_status_mb("VmHWM"), 1)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ds)) if epoch else np.arange(BATCH) % len(ds)
    t0 = time.perf_counter()
    for s in range(0, len(order), BATCH):
        ds.get_batch(order[s : s + BATCH])
    out["epoch_read_seconds" if epoch else "read_seconds"] = round(time.perf_counter() - t0, 2)
    # What the data costs: the peak so far (load + reading) above the process before the dataset.
    out["data_peak_mb"] = round(_status_mb("VmHWM") - out["rss_after_imports_mb"], 1)
    policy_cfg, _ = demo_configs()
    torch.manual_seed(0)
    policy = VLAPolicy(policy_cfg, dataset_normalizer(ds, policy_cfg))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    for _ in range(steps):
        loss, _ = policy(ds.get_batch(rng.integers(0, len(ds), BATCH)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    out["model_parameters"] = sum(p.numel() for p in policy.parameters())
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def run_child(
    root: Path, storage: str, cache_dir: Path, epoch: bool = True, steps: int = 3
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(root),
        storage,
        str(cache_dir),
        str(int(epoch)),
        str(steps),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise RuntimeError(f"child {storage} on {root} failed: {r.stderr[-2000:]}")
    return dict(json.loads(r.stdout.strip().splitlines()[-1]))


def write_repeated(src: Path, dst: Path, times: int, file_mb: float) -> None:
    """A dataset holding ``src``'s episodes ``times`` times over (same frames, same PNG encoding), in data
    files of at most ``file_mb`` MB (LeRobot's ``data_files_size_in_mb``)."""
    ds = VLADataset(src, progress=False, storage="memory")
    info = read_info(src)
    env_names = info["features"][ENV_STATE_KEY]["names"] if ENV_STATE_KEY in info["features"] else ()
    extras = [k for k in ("family", "split", "seed", "target") if k in ds.episodes]
    with LeRobotWriter(
        dst,
        cameras=ds.cameras,
        image_size=ds.image_shape,
        fps=ds.fps,
        env_state_names=env_names,
        data_files_size_in_mb=file_mb,
    ) as w:
        for _ in range(times):
            for i, ep in enumerate(ds.episodes["episode_index"]):
                rows = ds.episode_rows(ep)
                w.add_episode(
                    Episode(
                        images={c: np.asarray(ds.images[c][rows]).transpose(0, 2, 3, 1) for c in ds.cameras},
                        state=ds.state[rows],
                        action=ds.action[rows],
                        task=ds.tasks[int(ds.task_index[rows.start])],
                        extra={k: ds.episodes[k][i] for k in extras},
                        env_state=ds.env_state[rows] if env_names else None,
                    )
                )
        w.finish(split="train")


# -- main -------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--episodes", type=int, default=200, help="collected episodes (throughput, small size)"
    )
    parser.add_argument(
        "--scale", type=int, default=5, help="the larger dataset holds the episodes this many times"
    )
    parser.add_argument(
        "--large-file-mb",
        type=float,
        default=10,
        help="data file size cap of the larger dataset: the collected one is one file of about this size, "
        "so both hold files of the same size, as a 20,000-episode dataset split at LeRobot's cap would",
    )
    parser.add_argument("--batches", type=int, default=20, help="batches per throughput repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "mmvla")
    parser.add_argument("--quick", action="store_true", help="smoke run (20 episodes, 2 repeats)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        root, storage, cache_dir, epoch, steps = args.child
        print(json.dumps(child(Path(root), storage, Path(cache_dir), bool(int(epoch)), int(steps))))
        return
    from mmvla.data.collect import collect_dataset

    episodes, repeats = (20, 2) if args.quick else (args.episodes, args.repeats)
    load = os.getloadavg()
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mmvla-bench-data-"))
    try:
        small = tmp / f"ds{episodes}"
        t0 = time.perf_counter()
        summary = collect_dataset(small, episodes=episodes, workers=2, seed=0, progress=False)
        collect_s = time.perf_counter() - t0
        print(f"collected {summary.kept} episodes, {summary.frames} frames in {collect_s:.0f} s", flush=True)

        # (a) throughput, side by side on the same files
        throughput = {
            "memory": bench_ours(small, "memory", args.batches, repeats),
            "disk": bench_ours(small, "disk", args.batches, repeats),
            "lerobot": bench_lerobot(small, args.cache, args.batches, repeats),
        }
        le = throughput["lerobot"].get("frames_per_s_median")
        for mode in ("memory", "disk"):
            throughput[mode]["vs_lerobot"] = (
                round(throughput[mode]["frames_per_s_median"] / le, 1) if le else None
            )
        print(
            f"throughput: {json.dumps({k: v.get('frames_per_s_median') for k, v in throughput.items()})}",
            flush=True,
        )

        # (b) memory at two sizes
        large = tmp / f"ds{episodes * args.scale}"
        t0 = time.perf_counter()
        write_repeated(small, large, args.scale, args.large_file_mb)
        write_s = time.perf_counter() - t0
        model = run_child(small, "disk", tmp / "cache-model", epoch=False)
        sizes = []
        for root in (small, large):
            row: dict[str, Any] = {"episodes": read_info(root)["total_episodes"]}
            row["memory"] = run_child(root, "memory", tmp / f"cache-{root.name}")
            row["disk_cold"] = run_child(root, "disk", tmp / f"cache-{root.name}")  # builds the cache
            row["disk_warm"] = run_child(root, "disk", tmp / f"cache-{root.name}")  # reuses it
            cold = row["disk_cold"]
            row["first_epoch_cache_build"] = {
                "seconds": cold["load_seconds"],
                "frames_per_s": round(cold["frames"] / cold["load_seconds"], 1),
                "memory_mode_load_seconds": row["memory"]["load_seconds"],
                "warm_cache_open_seconds": row["disk_warm"]["load_seconds"],
            }
            row["frames"] = cold["frames"]
            data_files = sorted((root / "data").rglob("*.parquet"))
            row["data_files"] = len(data_files)
            row["largest_data_file_mb"] = round(max(f.stat().st_size for f in data_files) / 2**20, 1)
            row["image_bytes"] = cold["frames"] * 2 * 3 * 64 * 64
            for mode in ("memory", "disk_cold", "disk_warm"):
                row[mode]["peak_above_model_mb"] = round(row[mode]["peak_rss_mb"] - model["peak_rss_mb"], 1)
            sizes.append(row)
            print(
                f"{row['episodes']} episodes ({row['frames']} frames): peak RSS memory "
                f"{row['memory']['peak_rss_mb']:.0f} MB, disk (building) {cold['peak_rss_mb']:.0f} MB, "
                f"disk (warm) {row['disk_warm']['peak_rss_mb']:.0f} MB; model alone {model['peak_rss_mb']:.0f} MB; "
                f"data alone: memory {row['memory']['data_peak_mb']:.0f} MB, disk {cold['data_peak_mb']:.0f} / "
                f"{row['disk_warm']['data_peak_mb']:.0f} MB",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    (a, b) = sizes
    frames_per_ep = b["frames"] / b["episodes"]
    target_frames = TARGET_EPISODES * frames_per_ep

    def extrapolate(mode: str) -> dict[str, float]:
        slope = (b[mode]["data_peak_mb"] - a[mode]["data_peak_mb"]) / (b["frames"] - a["frames"])
        return {
            "measured_bytes_per_frame": round(slope * 2**20, 1),
            "data_peak_mb": round(b[mode]["data_peak_mb"] + slope * (target_frames - b["frames"])),
        }

    vector_bytes = 4 * (5 + 7 + 5) + 8 * 6  # state, action, environment state (float32) + 6 int64 columns
    extrapolation = {
        "note": "EXTRAPOLATION, not a measurement: the data's peak RSS (load + one epoch of random batches, "
        "above the process before the dataset) linear in frames through the two measured sizes, at "
        f"{TARGET_EPISODES} episodes x {frames_per_ep:.1f} frames/episode. Training adds the model's own "
        "(the 'model' child) on top.",
        "episodes": TARGET_EPISODES,
        "frames": round(target_frames),
        "data_peak_mb": {m: extrapolate(m) for m in ("memory", "disk_cold", "disk_warm")},
        "accounting_bytes_per_frame": {"memory": 2 * 3 * 64 * 64 + vector_bytes, "disk": vector_bytes},
        "first_epoch_cache_build_seconds": round(
            target_frames / b["first_epoch_cache_build"]["frames_per_s"]
        ),
        "cache_file_bytes": round(target_frames * 2 * 3 * 64 * 64),
    }
    result = {
        "benchmark": "data",
        "settings": {
            "batch_size": BATCH,
            "chunk_size": CHUNK,
            "cameras": ["front", "wrist"],
            "image_size": 64,
            "repeats": repeats,
            "batches_per_repeat": args.batches,
            "collected_episodes": episodes,
            "scale": args.scale,
            "large_data_files_size_in_mb": args.large_file_mb,
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in load],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "collect_seconds": round(collect_s, 1),
        "write_large_seconds": round(write_s, 1),
        "throughput": throughput,
        "model": model,
        "sizes": sizes,
        "extrapolation": extrapolation,
        "notes": [
            "LeRobot items hold float32 images in [0, 1] (decoded from PNG on every access); ours uint8 "
            "(converted to float inside the policy). Both read images of both cameras, state and a K=4 action chunk.",
            "Disk-mode throughput is with the cache file in the page cache (a full pass first); the page "
            "cache is the kernel's, reclaimable, and not counted in RSS.",
            "The larger dataset repeats the collected episodes; RSS depends on sizes, not on content.",
            "data_peak_mb: the peak RSS (VmHWM, reset after the imports) during load + one epoch, above the "
            "RSS after the imports. Building the cache holds one data file's table at a time (PNG bytes + "
            "Arrow buffers): its peak follows the largest data file (LeRobot caps files at "
            "data_files_size_in_mb, 100 MB by default): the larger dataset is written in files of at most "
            "large_data_files_size_in_mb so that its files are the size of the collected dataset's one file, as "
            "in a dataset much larger than the cap, where the data's RSS must not follow the dataset size.",
        ],
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    atomic_write_json(args.out, result)
    print(
        json.dumps(
            {
                "throughput_vs_lerobot": {m: throughput[m]["vs_lerobot"] for m in ("memory", "disk")},
                "extrapolation": extrapolation,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
