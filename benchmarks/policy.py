"""Policy speed: one-step latency (batch 1, one thread), training throughput and achieved FLOP/s.

Writes benchmarks/results/policy.json and prints a summary. Achieved FLOP/s (profiler-counted FLOPs of
a training step / median step time) is compared with two ceilings on the same threads:

- ``mfu_vs_sgemm``: a large fp32 matrix product (``torch.mm``, 2 n³ FLOP) timed with the same thread
  count: what this CPU really sustains on dense fp32 work (boost clock included). Training steps and
  products alternate in ``--rounds`` rounds and the ratio is the median of the rounds' ratios: on a
  shared machine both move with its load (a single sequential measurement gave 28% to 46% in three runs).
- ``utilisation``: the theoretical peak, cores × clock × FLOP/cycle, with FLOP/cycle from the
  micro-architecture (:func:`fp32_flop_per_cycle`: Zen 4 executes AVX-512 FMAs as two 256-bit halves,
  so 2 pipes × 8 lanes × 2 = 32, not 64); the clock is /proc/cpuinfo's "cpu MHz" (the base clock,
  without boost), so a boosting CPU can exceed this "peak": the sgemm ratio is the honest one.

    python benchmarks/policy.py [--steps 30] [--rounds 5] [--episodes 40] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from mmvla.core.io import atomic_write_json
from mmvla.data.collect import collect_dataset
from mmvla.data.dataset import VLADataset
from mmvla.policy import VLAPolicy
from mmvla.sim.tabletop.env import TabletopEnv
from mmvla.training.recipes import demo_configs
from mmvla.training.trainer import dataset_normalizer

RESULTS = Path(__file__).parent / "results" / "policy.json"


def _cpuinfo_field(info: str, key: str) -> str:
    return next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith(key)), "")


def fp32_flop_per_cycle(vendor: str, family: int, flags: Sequence[str]) -> tuple[int, str]:
    """fp32 FLOP per cycle per core for a CPU (from /proc/cpuinfo fields) and the reason.

    2 FLOP per FMA × SIMD lanes × 2 FMA pipes, where an AVX-512 FMA counts 16 lanes only on cores with a
    512-bit datapath. AMD Zen 4 (family 25 = 0x19 with avx512f) splits each 512-bit FMA into two 256-bit
    halves: 32 FLOP/cycle, as for AVX2. Zen 5 (family 26) has a full 512-bit datapath on desktop/server
    parts: 64. Intel AVX-512 server cores are taken as two 512-bit FMA pipes: 64.
    """
    avx512, avx2 = "avx512f" in flags, "avx2" in flags
    if vendor == "AuthenticAMD" and avx512 and family == 25:
        return 32, "AMD Zen 4: AVX-512 FMA as two 256-bit halves, 2 pipes x 8 lanes x 2"
    if avx512:
        return 64, "AVX-512: 2 pipes x 16 lanes x 2"
    if avx2:
        return 32, "AVX2: 2 pipes x 8 lanes x 2"
    return 16, "SSE: 2 pipes x 4 lanes x 2"


def cpu_fp32_peak(threads: int, cpuinfo: str | None = None) -> dict[str, float | str]:
    """Theoretical fp32 peak FLOP/s of ``threads`` cores at the (base) clock of ``cpuinfo``.

    ``cpuinfo`` is the text of /proc/cpuinfo (read from there when None); ``peak_flops`` is in FLOP/s,
    ``mhz`` in MHz (2000 when the field is absent), ``flop_per_cycle`` per core.
    """
    info = cpuinfo
    if info is None:
        info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = _cpuinfo_field(info, "flags").split()
    mhz = float(_cpuinfo_field(info, "cpu MHz") or 2000.0)
    family = int(_cpuinfo_field(info, "cpu family") or 0)
    vendor = _cpuinfo_field(info, "vendor_id")
    flop_per_cycle, basis = fp32_flop_per_cycle(vendor, family, flags)
    return {
        "peak_flops": threads * mhz * 1e6 * flop_per_cycle,
        "mhz": mhz,
        "flop_per_cycle": flop_per_cycle,
        "basis": basis,
        "cpu": f"{_cpuinfo_field(info, 'model name')} ({vendor} family {family})",
        "simd": "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse",
    }


def sgemm_ceiling(threads: int, n: int = 2048, reps: int = 7) -> dict[str, float]:
    """Measured fp32 ceiling: median FLOP/s of ``torch.mm`` on (n, n) @ (n, n) with ``threads`` threads.

    One untimed warm-up, then ``reps`` timed products of 2 n³ FLOP each. Returns ``flops`` (FLOP/s of
    the median product), ``seconds_median`` (s), ``n``, ``reps`` and ``threads``. Leaves torch set to
    ``threads`` threads (the caller's training setting).
    """
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return {"flops": 2 * n**3 / s, "n": n, "seconds_median": s, "reps": reps, "threads": threads}


def forward_flops(fn: Callable[[], object]) -> int:
    """FLOPs of convolutions and matrix products in one call of ``fn`` (torch.profiler's count)."""
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        fn()
    return int(sum(e.flops for e in prof.key_averages() if e.flops))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="dataset directory (default: collect a small one)")
    ap.add_argument("--episodes", type=int, default=40)
    ap.add_argument("--steps", type=int, default=30, help="timed training steps (all rounds)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of training steps then products (medians)")
    ap.add_argument("--act-steps", type=int, default=300, help="timed policy steps")
    args = ap.parse_args()
    if args.rounds < 1 or args.steps < args.rounds:
        ap.error(f"--rounds must be >= 1 and --steps >= --rounds, got {args.rounds}, {args.steps}")

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
    with torch.no_grad():  # fill the frozen MiniLM's cache: a training step never re-encodes its strings
        policy(batch)
    train_flops = 3 * forward_flops(lambda: policy(batch))
    policy.eval()
    images = {c: batch["images"][c][:1] for c in policy_cfg.cameras}

    def act() -> object:
        return policy.predict_chunk(images, batch["instruction"][:1], batch["state"][:1])

    with torch.no_grad():
        act()  # cached instruction, as on every step of an episode after the first
    act_flops = forward_flops(act)

    # --- training throughput with all threads
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)

    def train_step(i: int) -> float:
        idx = np.random.default_rng(i).integers(0, len(ds), train_cfg.batch_size)
        b = ds.get_batch(idx)
        b["images"] = {k: v.float() / 255 for k, v in b["images"].items()}
        t0 = time.perf_counter()
        loss, _ = policy(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return time.perf_counter() - t0

    for i in range(3):  # warm-up
        train_step(i)
    per_round = args.steps // args.rounds
    times: list[float] = []
    rounds = []
    ceilings = []
    for r in range(args.rounds):  # alternating, so that a slow spell of the machine hits both
        step_times = [train_step(3 + r * per_round + k) for k in range(per_round)]
        times += step_times
        ceiling_r = sgemm_ceiling(threads, reps=3)
        ceilings.append(ceiling_r)
        achieved_r = train_flops / statistics.median(step_times)
        rounds.append(
            {"step_s_median": statistics.median(step_times), "sgemm_flops": ceiling_r["flops"],
             "mfu_vs_sgemm": achieved_r / ceiling_r["flops"]}
        )  # fmt: skip
    step_s = statistics.median(times)
    sps = train_cfg.batch_size / step_s
    peak = cpu_fp32_peak(threads)
    ceiling = {
        "flops": statistics.median(c["flops"] for c in ceilings),
        "n": ceilings[0]["n"],
        "reps_per_round": ceilings[0]["reps"],
        "threads": threads,
    }
    mfu = statistics.median(r["mfu_vs_sgemm"] for r in rounds)
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
        "sgemm_ceiling": ceiling,
        "mfu_vs_sgemm": mfu,
        "rounds": rounds,
        "target": {"act_p50_ms": 5.0, "met": bool(np.percentile(lat, 50) <= 5.0)},
    }
    atomic_write_json(RESULTS, result)
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "parameters",
                    "act_latency_ms",
                    "train",
                    "achieved_flops",
                    "sgemm_ceiling",
                    "mfu_vs_sgemm",
                    "utilisation",
                )
            },
            indent=1,
        )
    )
    print(
        f"policy step p50 {result['act_latency_ms']['p50']:.2f} ms (target <= 5 ms), training {sps:.0f} samples/s, "
        f"{result['achieved_flops'] / 1e9:.1f} GFLOP/s = {result['mfu_vs_sgemm']:.1%} of the measured sgemm "
        f"ceiling ({ceiling['flops'] / 1e9:.1f} GFLOP/s on {threads} threads), {result['utilisation']:.1%} of the "
        f"theoretical fp32 peak ({float(peak['peak_flops']) / 1e9:.1f} GFLOP/s at {peak['flop_per_cycle']} "
        "FLOP/cycle/core, base clock)"
    )


if __name__ == "__main__":
    main()
