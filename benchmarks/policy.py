"""Policy speed: one-step latency (batch 1, one thread), training throughput and achieved FLOP/s.

Writes benchmarks/results/policy.json and prints a summary. The fp32 peak of this CPU is estimated as
cores × clock × FLOP/cycle, with FLOP/cycle = 2 (FMA) × SIMD fp32 lanes (16 for AVX-512, 8 for AVX2)
× 2 FMA pipes; the clock is /proc/cpuinfo's "cpu MHz" (no turbo), so the ratio is an upper-bound
utilisation estimate, not an exact one.

    python benchmarks/policy.py [--steps 30] [--episodes 40] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from mmvla.data.collect import collect_dataset
from mmvla.data.dataset import VLADataset
from mmvla.io import atomic_write_json
from mmvla.policy import VLAPolicy
from mmvla.recipes import demo_configs
from mmvla.sim.env import TabletopEnv
from mmvla.train import dataset_normalizer

RESULTS = Path(__file__).parent / "results" / "policy.json"


def cpu_fp32_peak(threads: int) -> dict[str, float | str]:
    """Estimated fp32 peak FLOP/s of ``threads`` cores from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":")[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = next(
        (float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz")), 2000.0
    )
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    flop_per_cycle = 2 * lanes * 2  # FMA = 2 FLOP, two FMA pipes
    return {
        "peak_flops": threads * mhz * 1e6 * flop_per_cycle,
        "mhz": mhz,
        "simd": "avx512" if lanes == 16 else "avx2" if lanes == 8 else "sse",
    }


def forward_flops(fn: Callable[[], object]) -> int:
    """FLOPs of convolutions and matrix products in one call of ``fn`` (torch.profiler's count)."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return int(sum(e.flops for e in prof.key_averages() if e.flops))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset directory (default: collect a small one)")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--steps", type=int, default=30, help="timed training steps")
    ap.add_argument("--act-steps", type=int, default=300, help="timed policy steps")
    args = ap.parse_args()

    tmp = tempfile.TemporaryDirectory()
    data = Path(args.data) if args.data else Path(tmp.name) / "data"
    if not args.data:
        collect_dataset(data, episodes=args.episodes, workers=1, seed=0, progress=False)
    policy_cfg, train_cfg = demo_configs()
    ds = VLADataset(data, cameras=policy_cfg.cameras, chunk_size=policy_cfg.chunk_size, progress=False)
    from mmvla.policy import PolicyConfig

    policy_cfg = PolicyConfig.from_dict({**policy_cfg.to_dict(), "instructions": ds.instructions})
    torch.manual_seed(0)
    policy = VLAPolicy(policy_cfg, dataset_normalizer(ds, policy_cfg))
    params = sum(p.numel() for p in policy.parameters())

    # --- one policy step, batch 1, one thread, on real observations
    torch.set_num_threads(1)
    policy.eval().reset(chunk_mode="ensemble")  # ensemble = a full forward every step (worst case)
    env = TabletopEnv(cameras=policy_cfg.cameras, image_size=policy_cfg.image_size)
    obs, _ = env.reset(seed=0)
    latencies = []
    for i in range(args.act_steps + 20):
        t0 = time.perf_counter()
        action = policy.act(obs)
        dt = time.perf_counter() - t0
        if i >= 20:  # warm-up
            latencies.append(dt * 1e3)
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            obs, _ = env.reset(seed=i)
            policy.reset()
    env.close()
    lat = np.array(latencies)

    # --- FLOPs of one training step (forward + backward) and of one policy step
    # Counted by the profiler (convolutions and matrix products, which dominate); backward is counted
    # as 2x forward, the usual estimate.
    policy.train()
    batch = ds.get_batch(np.arange(train_cfg.batch_size) % len(ds))
    train_flops = 3 * forward_flops(lambda: policy(batch))
    policy.eval()
    images = {c: batch["images"][c][:1] for c in policy_cfg.cameras}
    act_flops = forward_flops(
        lambda: policy.predict_chunk(images, batch["instruction"][:1], batch["state"][:1])
    )

    # --- training throughput with all threads
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    times = []
    for i in range(args.steps + 3):
        idx = np.random.default_rng(i).integers(0, len(ds), train_cfg.batch_size)
        b = ds.get_batch(idx)
        b["images"] = {k: v.float() / 255 for k, v in b["images"].items()}
        t0 = time.perf_counter()
        loss, _ = policy(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    sps = train_cfg.batch_size / step_s
    peak = cpu_fp32_peak(threads)
    result = {
        "config": {
            "fusion": policy_cfg.fusion,
            "head": policy_cfg.head_config().kind,
            "dim": policy_cfg.dim,
            "image_size": policy_cfg.image_size,
            "cameras": list(policy_cfg.cameras),
        },
        "parameters": params,
        "act_latency_ms": {
            "p50": float(np.percentile(lat, 50)),
            "p99": float(np.percentile(lat, 99)),
            "n": len(lat),
            "threads": 1,
        },
        "act_flops": act_flops,
        "train": {
            "batch_size": train_cfg.batch_size,
            "step_s_median": step_s,
            "samples_per_s": sps,
            "threads": threads,
        },
        "train_flops_per_step": train_flops,
        "achieved_flops": train_flops / step_s,
        "cpu_fp32_peak": peak,
        "utilisation": train_flops / step_s / float(peak["peak_flops"]),
        "target": {"act_p50_ms": 5.0, "met": bool(np.percentile(lat, 50) <= 5.0)},
    }
    atomic_write_json(RESULTS, result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("parameters", "act_latency_ms", "train", "achieved_flops", "utilisation")
            },
            indent=1,
        )
    )
    print(
        f"policy step p50 {result['act_latency_ms']['p50']:.2f} ms (target <= 5 ms), training {sps:.0f} samples/s, "
        f"{result['achieved_flops'] / 1e9:.1f} GFLOP/s = {result['utilisation']:.1%} of the estimated fp32 peak"
    )


if __name__ == "__main__":
    main()
