"""Tabletop simulator speed: environment steps per second with and without rendering.

Measures ``TabletopEnv.step`` (20 substeps of physics = one 50 ms control step, plus rendering the
observation's cameras) with uniformly random actions, resetting when an episode ends (reset time is
reported separately, not counted in steps/s), for:

- no cameras (physics + state only);
- one camera (front) at 64² and 96²;
- two cameras (front + wrist) at 64² and 96².

Also: resets per second with and without cameras, scripted-expert episodes per second per family
(no rendering), and collection throughput with 1 and 2 workers when ``mmvla.data.collect`` is
available (``collect_dataset`` end to end; see also ``benchmarks/collect.py``).

Rendering is EGL on Mesa's llvmpipe; ``LP_NUM_THREADS`` (default 1 here, so the number is per core)
sets its rasteriser threads. Target: >= 500 rendered steps/s with one 64² camera on one core.

    .venv/bin/python benchmarks/sim.py            # ~1 min on a laptop CPU
    .venv/bin/python benchmarks/sim.py --quick    # smoke run
Writes benchmarks/results/sim.json and prints a summary. Timings on a shared machine are noisy: the
JSON records the CPU count and the load average at the start.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("LP_NUM_THREADS", "1")  # llvmpipe rasteriser threads: measure one core
os.environ.setdefault("MUJOCO_GL", "egl")

import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmvla.core.io import atomic_write_json
from mmvla.sim.tabletop.env import TabletopEnv
from mmvla.sim.tabletop.expert import ScriptedExpert
from mmvla.sim.tabletop.scene import CONTROL_DT, SUBSTEPS

RESULTS = Path(__file__).resolve().parent / "results" / "sim.json"

STEP_CASES: list[tuple[str, tuple[str, ...], int]] = [
    ("no_render", (), 64),
    ("front_64", ("front",), 64),
    ("front_96", ("front",), 96),
    ("front_wrist_64", ("front", "wrist"), 64),
    ("front_wrist_96", ("front", "wrist"), 96),
]


def bench_steps(cameras: tuple[str, ...], size: int, steps: int, repeats: int) -> dict[str, Any]:
    """Median steps/s over ``repeats`` runs of ``steps`` random-action steps (resets excluded)."""
    env = TabletopEnv(cameras=cameras, image_size=size, families=("pick", "push"))
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(steps, 7)).astype(np.float32)
    rates, reset_times = [], []
    seed = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        env.reset(seed=seed)
        reset_times.append(time.perf_counter() - t0)
        elapsed = 0.0
        for a in actions:
            t0 = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(a)
            elapsed += time.perf_counter() - t0
            if terminated or truncated:
                seed += 1
                t0 = time.perf_counter()
                env.reset(seed=seed)
                reset_times.append(time.perf_counter() - t0)
        rates.append(steps / elapsed)
    env.close()
    return {
        "cameras": list(cameras),
        "image_size": size,
        "steps_per_s": float(np.median(rates)),
        "steps_per_s_all": [round(r, 1) for r in rates],
        "reset_ms": 1000 * float(np.median(reset_times)),
        "realtime_factor": float(np.median(rates)) * CONTROL_DT,
    }


def bench_expert(family: str, episodes: int) -> dict[str, Any]:
    """Scripted-expert episodes per second without rendering (and their mean length / success)."""
    env = TabletopEnv(cameras=(), families=(family,))
    expert = ScriptedExpert(env, noise_std=0.1, seed=0)
    steps = wins = 0
    t0 = time.perf_counter()
    for seed in range(episodes):
        obs, _ = env.reset(seed=seed)
        expert.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            done = terminated or truncated
        steps += info["steps"]
        wins += bool(info["success"])
    dt = time.perf_counter() - t0
    env.close()
    return {
        "family": family,
        "episodes": episodes,
        "episodes_per_s": episodes / dt,
        "steps_per_s": steps / dt,
        "mean_length": steps / episodes,
        "success_rate": wins / episodes,
    }


def bench_collect(episodes: int) -> dict[str, Any]:
    """Collection throughput (frames written per second) with 1 and 2 workers, if mmvla.data exists."""
    try:
        from mmvla.data.collect import collect_dataset
    except ImportError as e:  # the data package is optional for this benchmark
        return {"skipped": f"mmvla.data.collect not available ({e})"}
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="mmvla-bench-sim-"))
    try:
        for workers in (1, 2):
            out = tmp / f"w{workers}"
            t0 = time.perf_counter()
            summary = collect_dataset(out, episodes=episodes, workers=workers, seed=0, progress=False)
            dt = time.perf_counter() - t0
            frames = int(getattr(summary, "frames", 0) or 0)
            rows.append(
                {
                    "workers": workers,
                    "episodes": episodes,
                    "frames": frames,
                    "seconds": dt,
                    "frames_per_s": frames / dt if frames else None,
                    "episodes_per_s": episodes / dt,
                }
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"runs": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: few steps, one repeat")
    parser.add_argument("--no-collect", action="store_true", help="skip the collection throughput part")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    steps, repeats = (200, 1) if args.quick else (1500, 3)
    expert_episodes = 5 if args.quick else 40
    collect_episodes = 4 if args.quick else 40

    result: dict[str, Any] = {
        "benchmark": "sim",
        "settings": {
            "control_dt_s": CONTROL_DT,
            "physics_substeps": SUBSTEPS,
            "steps_per_repeat": steps,
            "repeats": repeats,
            "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS"),
            "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "env_steps": {},
        "expert": [],
    }
    for name, cams, size in STEP_CASES:
        row = bench_steps(cams, size, steps, repeats)
        result["env_steps"][name] = row
        print(
            f"{name:>16}: {row['steps_per_s']:8.0f} steps/s  (x{row['realtime_factor']:.0f} real time, "
            f"reset {row['reset_ms']:.2f} ms)"
        )
    target = result["env_steps"]["front_64"]["steps_per_s"]
    result["target_front_64_steps_per_s"] = {"target": 500, "measured": target, "met": target >= 500}
    for family in ("pick", "push", "place"):
        row = bench_expert(family, expert_episodes)
        result["expert"].append(row)
        print(
            f"expert {family:>5}: {row['episodes_per_s']:6.1f} episodes/s, {row['steps_per_s']:6.0f} steps/s, "
            f"mean length {row['mean_length']:.1f}, success {row['success_rate']:.0%} (noise 0.1, no render)"
        )
    if args.no_collect:
        result["collect"] = {"skipped": "--no-collect"}
    else:
        result["collect"] = bench_collect(collect_episodes)
        if "runs" in result["collect"]:
            for row in result["collect"]["runs"]:
                fps = row["frames_per_s"]
                print(
                    f"collect, {row['workers']} worker(s): {row['episodes_per_s']:.1f} episodes/s"
                    + (f", {fps:.0f} frames/s" if fps else "")
                )
        else:
            print(f"collect: {result['collect']['skipped']}")
    atomic_write_json(args.out, result)
    print(
        f"wrote {args.out}  (target >= 500 steps/s with one 64² camera: {'met' if target >= 500 else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
