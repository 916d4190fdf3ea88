"""Serving: round-trip latency, throughput under concurrent clients, async-client waits, served vs local success.

Runs ``mmvla serve`` as a subprocess on loopback (one torch thread) and drives it from this process:

- latency: one client, sequential ``act`` steps on real simulator frames; p50/p99 round trip, the server's
  own inference time, and the same policy's local ``act`` for the serving overhead;
- throughput: 1, 4 and 16 concurrent clients (threads, one connection each), bounded by a request count
  and a time limit; requests/s, latency percentiles and errors (must be 0);
- async client: a 20 Hz control loop with :class:`mmvla.client.AsyncPolicyClient`; steps that waited;
- success: the same seeds evaluated locally and through the server (``mmvla eval --server``), compared
  per episode.

Without ``--checkpoint`` a policy of the demo's architecture is trained on the fly for a few steps on a
few expert episodes (said so in the JSON): its success is near zero, so the success comparison then checks
served == local, not policy quality. Writes benchmarks/results/serve.json and prints a summary.

    python benchmarks/serve.py [--checkpoint DIR] [--requests 400] [--episodes 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import torch
import websockets

from mmvla.client import AsyncPolicyClient, PolicyClient
from mmvla.io import atomic_write_json

RESULTS = Path(__file__).parent / "results" / "serve.json"


def pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
        "n": int(a.size),
    }


def train_tiny(root: Path, steps: int, episodes: int) -> tuple[Path, dict[str, Any]]:
    """A policy of the demo's architecture trained briefly on expert episodes."""
    from mmvla.data.collect import collect_dataset
    from mmvla.recipes import demo_configs
    from mmvla.train import train
    from mmvla.train_config import TrainConfig

    t0 = time.perf_counter()
    collect_dataset(root / "data", episodes=episodes, workers=1, seed=0, image_size=64, progress=False)
    policy_cfg, _ = demo_configs()
    tcfg = TrainConfig(
        steps=steps, batch_size=16, warmup_steps=5, log_every=10, checkpoint_every=steps, threads=1
    )
    result = train(root / "data", root / "run", policy_cfg, tcfg, progress=False)
    info = {
        "source": f"trained on the fly: demo architecture, {steps} steps, batch 16, {episodes} expert episodes",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return Path(result.policy_dir), info


def sim_observations(cameras: tuple[str, ...], image_size: int, n: int) -> list[dict[str, Any]]:
    """Real frames from expert rollouts (no timestamps: the stale check stays off)."""
    from mmvla.sim.env import TabletopEnv
    from mmvla.sim.expert import ScriptedExpert

    env = TabletopEnv(cameras=cameras, image_size=image_size)
    out: list[dict[str, Any]] = []
    try:
        seed = 0
        while len(out) < n:
            expert = ScriptedExpert(env, seed=seed)
            obs, _ = env.reset(seed=seed)
            done = False
            while not done and len(out) < n:
                out.append(obs)
                obs, _, terminated, truncated, _ = env.step(expert.act(obs))
                done = terminated or truncated
            seed += 1
    finally:
        env.close()
    return out


def start_server(checkpoint: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "mmvla.cli", "serve", "--checkpoint", str(checkpoint), "--port", "0"]
    cmd += ["--threads", "1", "--log-level", "WARNING"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("mmvla serve: ws://"):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split()[2]


def latency(url: str, stream: list[dict[str, Any]], n: int, warmup: int = 10) -> dict[str, Any]:
    rtt, infer, chunk_rtt = [], [], []
    with PolicyClient(url, timeout=60) as client:
        client.reset()
        for i in range(warmup + n):
            t0 = time.perf_counter()
            client.act(stream[i % len(stream)])
            dt = (time.perf_counter() - t0) * 1e3
            if i >= warmup:
                rtt.append(dt)
                infer.append(float(client.last_reply["infer_ms"]))
        for i in range(n // 2):
            t0 = time.perf_counter()
            client.act_chunk(stream[i % len(stream)])
            chunk_rtt.append((time.perf_counter() - t0) * 1e3)
    return {"round_trip_ms": pct(rtt), "server_infer_ms": pct(infer), "chunk_round_trip_ms": pct(chunk_rtt)}


def local_latency(checkpoint: Path, stream: list[dict[str, Any]], n: int) -> dict[str, Any]:
    from mmvla.policy import VLAPolicy

    policy = VLAPolicy.from_pretrained(checkpoint)
    policy.reset()
    times = []
    for i in range(10 + n):
        t0 = time.perf_counter()
        policy.act(stream[i % len(stream)])
        if i >= 10:
            times.append((time.perf_counter() - t0) * 1e3)
    policy.safety = None  # the safety layer's own cost
    policy.reset()
    bare = []
    for i in range(10 + n):
        t0 = time.perf_counter()
        policy.act(stream[i % len(stream)])
        if i >= 10:
            bare.append((time.perf_counter() - t0) * 1e3)
    return {"act_ms": pct(times), "act_without_safety_ms": pct(bare)}


def throughput(
    url: str, stream: list[dict[str, Any]], clients: int, total: int, limit_s: float
) -> dict[str, Any]:
    per_client = max(1, total // clients)
    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def run(i: int) -> None:
        try:
            with PolicyClient(url, timeout=120) as client:
                client.reset()
                barrier.wait(timeout=120)
                for k in range(per_client):
                    if time.perf_counter() > deadline[0]:
                        break
                    t0 = time.perf_counter()
                    client.act(stream[(i * 7 + k) % len(stream)])
                    lat[i].append((time.perf_counter() - t0) * 1e3)
        except Exception as e:
            errors.append(f"client {i}: {type(e).__name__}: {e}")
            barrier.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    deadline[0] = time.perf_counter() + 600  # set before release; tightened just below
    with contextlib.suppress(threading.BrokenBarrierError):  # a client failed to connect: in errors
        barrier.wait(timeout=120)
    t0 = time.perf_counter()
    deadline[0] = t0 + limit_s
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    done = sum(len(x) for x in lat)
    return {
        "clients": clients,
        "requests": done,
        "requests_planned": per_client * clients,
        "seconds": wall,
        "requests_per_s": done / wall,
        "latency_ms": pct([x for xs in lat for x in xs]),
        "errors": len(errors),
        "error_messages": errors[:5],
    }


def async_loop(url: str, stream: list[dict[str, Any]], steps: int, hz: float = 20.0) -> dict[str, Any]:
    period = 1.0 / hz
    act_ms = []
    with AsyncPolicyClient(PolicyClient(url, timeout=60)) as robot:
        robot.reset()
        for i in range(steps):
            t0 = time.perf_counter()
            robot.act(stream[i % len(stream)])
            dt = time.perf_counter() - t0
            act_ms.append(dt * 1e3)
            time.sleep(max(0.0, period - dt))
        return {
            "hz": hz,
            "steps": steps,
            "chunk_size": robot.chunk_size,
            "prefetch_at": robot.prefetch_at,
            "requests": robot.requests,
            "waits": robot.waits,
            "waits_after_first_step": robot.waits - 1,
            "act_call_ms": pct(act_ms[1:]),
        }


def success(checkpoint: Path, url: str, episodes: int, out: Path) -> dict[str, Any]:
    from mmvla.evaluate import EvalConfig, evaluate

    cfg: dict[str, Any] = {"episodes": episodes, "split": "all", "workers": 1, "seed": 1_000_000}
    local = evaluate(checkpoint, EvalConfig(**cfg), out / "local", progress=False)
    served = evaluate(checkpoint, EvalConfig(**cfg, server=url), out / "served", progress=False)
    ep_local = json.loads((out / "local" / "episodes.json").read_text())
    ep_served = json.loads((out / "served" / "episodes.json").read_text())
    same = [
        (a["seed"], a["split"], a["success"], a["length"])
        == (b["seed"], b["split"], b["success"], b["length"])
        for a, b in zip(ep_local, ep_served, strict=True)
    ]
    return {
        "episodes_per_split": episodes,
        "seeds": f"{cfg['seed']}..{cfg['seed'] + episodes - 1} per split",
        "local": local["success"],
        "served": served["success"],
        "equal": local["success"] == served["success"],
        "episodes_identical": int(sum(same)),
        "episodes_total": len(same),
        "local_seconds": local["seconds"],
        "served_seconds": served["seconds"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="policy directory (default: train a tiny one on the fly)")
    ap.add_argument("--train-steps", type=int, default=40)
    ap.add_argument("--train-episodes", type=int, default=8)
    ap.add_argument("--latency-requests", type=int, default=200)
    ap.add_argument("--requests", type=int, default=320, help="requests per throughput level (all clients)")
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds per throughput level")
    ap.add_argument("--episodes", type=int, default=4, help="success episodes per split (train, unseen)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()

    torch.set_num_threads(1)
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="mmvla-bench-serve-"))
    if args.checkpoint:
        checkpoint = Path(args.checkpoint)
        ckpt_info: dict[str, Any] = {"source": f"given: {args.checkpoint}"}
    else:
        print(f"training a tiny policy on the fly ({args.train_steps} steps) ...", flush=True)
        checkpoint, ckpt_info = train_tiny(tmp, args.train_steps, args.train_episodes)
    from mmvla.policy.checkpoint import load_config
    from mmvla.serve import checkpoint_id

    pcfg, _ = load_config(checkpoint)
    ckpt_info.update(
        {"id": checkpoint_id(checkpoint), "image_size": pcfg.image_size, "cameras": list(pcfg.cameras),
         "dim": pcfg.dim, "fusion": pcfg.fusion, "chunk_size": pcfg.chunk_size}
    )  # fmt: skip
    stream = sim_observations(tuple(pcfg.cameras), pcfg.image_size, 64)
    frame_bytes = sum(stream[0][c].nbytes for c in pcfg.cameras)

    proc, url = start_server(checkpoint)
    result: dict[str, Any] = {"checkpoint": ckpt_info, "server": {"url": url, "torch_threads": 1}}
    try:
        print(f"server {url}; latency ...", flush=True)
        result["latency"] = latency(url, stream, args.latency_requests)
        result["local"] = local_latency(checkpoint, stream, args.latency_requests // 2)
        result["throughput"] = []
        for clients in (1, 4, 16):
            print(f"throughput with {clients} client(s) ...", flush=True)
            result["throughput"].append(throughput(url, stream, clients, args.requests, args.time_limit))
        print("async client at 20 Hz ...", flush=True)
        result["async_client"] = async_loop(url, stream, 60)
        print(f"success, {args.episodes} episodes per split, local and served ...", flush=True)
        result["success"] = success(checkpoint, url, args.episodes, tmp / "eval")
    finally:
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        result["server"]["shutdown"] = {
            "signal": "SIGTERM",
            "exit_code": code,
            "seconds": time.perf_counter() - t0,
        }

    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "websockets": websockets.__version__,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "note": "shared CPU machine: other jobs ran alongside; latency percentiles include that noise",
    }
    result["request_bytes"] = frame_bytes
    lat = result["latency"]
    total_errors = sum(t["errors"] for t in result["throughput"])
    result["targets"] = {
        "throughput_errors": total_errors,
        "zero_errors": total_errors == 0,
        "served_success_equals_local": result["success"]["equal"]
        and result["success"]["episodes_identical"] == result["success"]["episodes_total"],
    }
    atomic_write_json(args.out, result)

    print(f"\ncheckpoint: {ckpt_info['source']} ({ckpt_info['image_size']} px, dim {ckpt_info['dim']})")
    print(
        f"latency (1 client, loopback): round trip p50 {lat['round_trip_ms']['p50']:.2f} ms, p99 "
        f"{lat['round_trip_ms']['p99']:.2f} ms; server inference p50 {lat['server_infer_ms']['p50']:.2f} ms; "
        f"local act p50 {result['local']['act_ms']['p50']:.2f} ms"
    )
    for t in result["throughput"]:
        print(
            f"  {t['clients']:>2} client(s): {t['requests_per_s']:7.1f} req/s, {t['requests']} requests, "
            f"p50 {t['latency_ms']['p50']:.1f} ms, p99 {t['latency_ms']['p99']:.1f} ms, errors {t['errors']}"
        )
    a = result["async_client"]
    print(
        f"async client at {a['hz']:g} Hz: {a['waits_after_first_step']} waits after the first step in {a['steps']} steps"
    )
    s = result["success"]
    print(
        f"success local {s['local']} served {s['served']}; identical episodes {s['episodes_identical']}/{s['episodes_total']}"
    )
    print(f"server shutdown on SIGTERM: exit {result['server']['shutdown']['exit_code']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
