"""Serving: round-trip latency, throughput under concurrent clients, async-client waits, served vs local success.

Runs ``mmvla serve`` as a subprocess on loopback (one torch thread) and drives it from this process:

- latency: one client, sequential ``act`` steps on real simulator frames; p50/p99 round trip, the server's
  own inference time, and the same policy's local ``act`` for the serving overhead;
- throughput: 1, 4 and 16 concurrent clients (threads, one connection each), bounded by a request count
  and a time limit, in interleaved rounds on this server and the baseline (the serving layer before
  issue 19 over this revision's library: same network, same checkpoint); the median round's requests/s,
  latency percentiles over every request of every round, errors (must be 0);
- async client: a 20 Hz control loop with :class:`mmvla.serving.client.AsyncPolicyClient`; steps that waited;
- success: the same seeds evaluated locally and through the server (``mmvla eval --server``), compared
  per episode.

Without ``--checkpoint`` a policy of the demo's architecture is trained on the fly for a few steps on a
few expert episodes (said so in the JSON): its success is near zero, so the success comparison then checks
served == local, not policy quality. Writes benchmarks/results/serve.json and prints a summary.

    python benchmarks/serve.py [--checkpoint DIR] [--requests 1600] [--rounds 3] [--episodes 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
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

from mmvla.core.io import atomic_write_json
from mmvla.serving.client import AsyncPolicyClient, PolicyClient

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
    from mmvla.pipeline import collect_step, train_step
    from mmvla.training.config import TrainConfig
    from mmvla.training.recipes import demo_configs

    t0 = time.perf_counter()
    data = collect_step(root / "data", episodes, workers=1, seed=0, image_size=64, log=lambda line: None)
    policy_cfg, _ = demo_configs()
    tcfg = TrainConfig(
        steps=steps, batch_size=16, warmup_steps=5, log_every=10, checkpoint_every=steps, threads=1
    )
    trained = train_step(data, root / "run", policy_cfg, tcfg)
    info = {
        "source": f"trained on the fly: demo architecture, {steps} steps, batch 16, {episodes} expert episodes",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    return trained.policy_dir, info


def sim_observations(cameras: tuple[str, ...], image_size: int, n: int) -> list[dict[str, Any]]:
    """Real frames from expert rollouts (no timestamps: the stale check stays off)."""
    from mmvla.sim.tabletop.env import TabletopEnv
    from mmvla.sim.tabletop.expert import ScriptedExpert

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


def start_server(
    checkpoint: Path,
    extra: list[str] | None = None,
    src: Path | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """``mmvla serve`` in a subprocess (``src``: another source tree, e.g. the baseline's); its URL."""
    cmd = [sys.executable, "-m", "mmvla.cli", "serve", "--checkpoint", str(checkpoint), "--port", "0"]
    cmd += ["--threads", "1", *(extra or ["--log-level", "WARNING"])]
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if src is not None:
        environ["PYTHONPATH"] = str(src)
    stderr = open(log, "w") if log is not None else None  # noqa: SIM115 (the child writes to it)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env=environ)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("mmvla serve: ws://"):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split()[2]


def stop_server(proc: subprocess.Popen[str], timeout: float = 600.0) -> dict[str, Any]:
    """SIGTERM, then wait for the exit. On a loaded machine the server's interpreter may take minutes to
    exit after it stopped serving (runnable but starved of CPU): a server still running after ``timeout``
    is killed and recorded as such (exit_code None) instead of discarding the measurements."""
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    return {"signal": "SIGTERM", "exit_code": code, "seconds": time.perf_counter() - t0}


# The serving layer at the baseline revision (before issue 19): its files -> where they go in today's tree.
BASELINE_SERVING_FILES = {
    "src/mmvla/serve.py": "mmvla/serve.py",
    "src/mmvla/protocol.py": "mmvla/protocol.py",
    "src/mmvla/commands/serve.py": "mmvla/cli/serve.py",  # `mmvla serve`'s arguments and run()
}


def baseline_source(rev: str, root: Path) -> Path | None:
    """Today's ``src/`` with the serving layer of git revision ``rev`` (the server before issue 19) in
    place of today's, or None. The library under it (policy, model, safety layer) is today's, so the
    comparison holds the network and its checkpoint fixed and changes only the server; the whole tree
    at ``rev`` cannot read today's checkpoints (their config has fields it does not know)."""
    repo = Path(__file__).resolve().parent.parent
    out = root / "baseline"
    shutil.copytree(repo / "src", out / "src", ignore=shutil.ignore_patterns("__pycache__"))
    try:
        for old, new in BASELINE_SERVING_FILES.items():
            text = subprocess.run(
                ["git", "-C", str(repo), "show", f"{rev}:{old}"], check=True, capture_output=True, timeout=60
            ).stdout
            (out / "src" / new).write_bytes(text)
    except (subprocess.SubprocessError, OSError) as e:
        print(f"no baseline serving layer at {rev}: {e}", flush=True)
        return None
    return out / "src"


def lockout(checkpoint: Path, stream: list[dict[str, Any]], n: int = 64) -> dict[str, Any]:
    """``n`` idle authenticated sockets fill every slot, ``n`` more trickle their handshake and ``n`` more
    trickle a frame: an authenticated robot still connects and acts; trickled frames are dropped."""
    import socket

    from mmvla.serving.client import open_connection

    token = "benchmark-token-123"
    frame_timeout = 2.0
    proc, url = start_server(
        checkpoint,
        ["--log-level", "WARNING", "--max-connections", str(n), "--reclaim-idle", "1",
         "--frame-timeout", str(frame_timeout), "--max-connections-per-ip", str(n)],
        env={"MMVLA_SERVE_TOKEN": token},
    )  # fmt: skip
    port = int(url.rsplit(":", 1)[1])
    socks: list[Any] = []
    idle: list[Any] = []
    result: dict[str, Any] = {"sockets": n, "frame_timeout_s": frame_timeout}
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # a handshake that never finishes
            socks.append(s)
        for _ in range(n):
            ws = open_connection(url, token=token)
            ws.recv(timeout=10)
            idle.append(ws)
        unauth = 0
        try:
            open_connection(url)
        except Exception as e:
            unauth = getattr(getattr(e, "response", None), "status_code", 0)
        result["unauthenticated_status"] = unauth
        time.sleep(1.2)
        t0 = time.perf_counter()
        with PolicyClient(url, token=token, connect_timeout=10) as robot:
            for i in range(10):
                robot.act(stream[i % len(stream)])
        result["robot_connect_and_10_steps_s"] = time.perf_counter() - t0
        result["robot_kept_out"] = False
        # trickled frames: the first bytes of a masked 1,000-byte frame, then one byte every 100 ms
        tricklers = []
        for ws in idle[n // 2 :]:  # the newest idle sockets (the robot reclaimed the oldest)
            with contextlib.suppress(OSError):
                ws.socket.sendall(b"\x82\xfe\x03\xe8\x01\x02\x03\x04" + b"\x00" * 8)
                tricklers.append(ws)
        t0 = time.perf_counter()
        dropped_at: list[float] = []
        alive = list(tricklers)
        while alive and time.perf_counter() - t0 < 3 * frame_timeout:
            for ws in list(alive):
                try:
                    ws.socket.sendall(b"\x00")
                except OSError:
                    dropped_at.append(time.perf_counter() - t0)
                    alive.remove(ws)
            time.sleep(0.1)
        result["trickled_frames"] = len(tricklers)
        result["trickled_dropped"] = len(dropped_at)
        result["trickled_dropped_after_s_max"] = max(dropped_at) if dropped_at else None
    finally:
        for s in socks:
            s.close()
        for ws in idle:
            with contextlib.suppress(Exception):
                ws.close()
        stop_server(proc)
    return result


def fuzz_corpus(n: int, seed: int, good: dict[str, Any]) -> list[bytes | str]:
    """``n`` malformed frames: truncations, bit flips, garbage, text, wrong kinds and fields, deep nesting,
    huge declared shapes and containers, non-UTF-8, 4 MB strings, non-finite states."""
    import msgpack

    from mmvla.serving.protocol import pack

    rng = np.random.default_rng(seed)
    base = pack({"kind": "act", "observation": good})
    four_mb = "x" * 4_000_000
    makers = [
        lambda: base[: int(rng.integers(0, len(base)))],
        lambda: bytes(np.bitwise_xor(np.frombuffer(base, np.uint8), (rng.random(len(base)) < 0.001).astype(np.uint8) << rng.integers(0, 8)).tobytes()),
        lambda: rng.bytes(int(rng.integers(1, 256))),
        lambda: "text frame " * int(rng.integers(1, 50)),
        lambda: b"\x81\xa1a" * int(rng.integers(9, 1100)) + b"\xc0",
        lambda: b"\x91" * int(rng.integers(9, 3000)) + b"\xc0",
        lambda: pack({"kind": "act", "observation": {**good, "front": {"__nd__": True, "dtype": "uint8", "shape": [0, 2**31 - 1, int(rng.integers(2**20, 2**31))], "data": b""}}}),
        lambda: msgpack.packb({"kind": "act", "observation": {**good, "front": {"__nd__": True, "dtype": "uint8", "shape": [int(rng.integers(2**20, 2**62))] * 3, "data": b"\x00" * 16}}}, default=str),
        lambda: b"\xdd" + rng.bytes(4),
        lambda: b"\xdf" + rng.bytes(4),
        lambda: b"\xa5" + bytes([0xFF, 0xFE, 0xC0, 0x80, 0xED]),
        lambda: b"\x81\xa4kind\xd9\x04" + bytes([0xC3, 0x28, 0xFF, 0xFE]),
        lambda: pack({"kind": four_mb}),
        lambda: pack({"kind": "act", "observation": {**good, "instruction": four_mb}}),
        lambda: pack({"kind": "act", "observation": good, four_mb[: int(rng.integers(1, 100_000))]: 1}),
        lambda: pack({"kind": "act", "observation": {**good, "state": np.full(5, rng.choice([np.nan, np.inf, 1e30]), np.float32)}}),
        lambda: pack({"kind": str(rng.integers(0, 1000))}),
        lambda: pack({"kind": "reset", "chunk_mode": "x" * int(rng.integers(1, 5000))}),
        lambda: pack({"kind": "act", "observation": {k: v for k, v in good.items() if rng.random() < 0.5}}),
        lambda: pack({"kind": "act", "observation": {**good, "front": good["front"].astype(np.float32)}}),
        lambda: msgpack.packb({"observation/image": {b"__ndarray__": True, b"data": b"\x00", b"dtype": "|O", b"shape": [1]}, "prompt": "x"}),
    ]  # fmt: skip
    return [makers[i % len(makers)]() for i in range(n)]


def fuzz(checkpoint: Path, good: dict[str, Any], n: int, per_connection: int, root: Path) -> dict[str, Any]:
    """Send the corpus to a fresh server at INFO log level; count replies, sizes and log growth."""
    from mmvla.serving.client import open_connection
    from mmvla.serving.protocol import unpack

    corpus = fuzz_corpus(n, 0, good)
    log = root / "fuzz-server.log"
    proc, url = start_server(checkpoint, ["--log-level", "INFO"], log=log)
    codes: dict[str, int] = {}
    internal = closed = 0
    max_reply = 0
    connections = 0
    try:
        time.sleep(0.5)
        start_bytes = log.stat().st_size
        ws = None
        for i, frame in enumerate(corpus):
            if ws is None or i % per_connection == 0:
                if ws is not None:
                    ws.close()
                ws = open_connection(url, max_size=None)
                ws.recv(timeout=10)
                connections += 1
            ws.send(frame)
            try:
                raw = ws.recv(timeout=30)
            except Exception:
                closed += 1
                ws = None
                continue
            max_reply = max(max_reply, len(raw))
            reply = unpack(raw)
            code = reply.get("error", reply.get("kind"))
            codes[code] = codes.get(code, 0) + 1
            internal += code == "internal"
        if ws is not None:
            ws.close()
        time.sleep(1.0)
        growth = log.stat().st_size - start_bytes
    finally:
        stop_server(proc)
    return {
        "frames": len(corpus),
        "connections": connections,
        "replies": codes,
        "internal_errors": internal,
        "closed_connections": closed,
        "max_reply_bytes": max_reply,
        "log_bytes": growth,
        "log_bytes_per_connection": growth / max(1, connections),
    }


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
        "latencies_ms": [x for xs in lat for x in xs],
        "errors": len(errors),
        "error_messages": errors[:5],
    }


def combine_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One level's interleaved rounds: the median round's requests/s, percentiles over every request."""
    lat = [x for r in runs for x in r.pop("latencies_ms")]
    return {
        "clients": runs[0]["clients"],
        "rounds": len(runs),
        "requests": sum(r["requests"] for r in runs),
        "requests_planned": sum(r["requests_planned"] for r in runs),
        "seconds": sum(r["seconds"] for r in runs),
        "requests_per_s": float(np.median([r["requests_per_s"] for r in runs])),
        "requests_per_s_rounds": [r["requests_per_s"] for r in runs],
        "latency_ms": pct(lat),
        "p99_ms_rounds": [r["latency_ms"]["p99"] for r in runs],
        "errors": sum(r["errors"] for r in runs),
        "error_messages": [m for r in runs for m in r["error_messages"]][:5],
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
    from mmvla.evaluation.evaluate import EvalConfig, evaluate

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
    ap.add_argument(
        "--requests", type=int, default=1600, help="requests per throughput level and round (all clients)"
    )
    ap.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds of every level on both servers (medians)"
    )
    ap.add_argument("--time-limit", type=float, default=30.0, help="seconds per throughput level")
    ap.add_argument("--episodes", type=int, default=4, help="success episodes per split (train, unseen)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument(
        "--baseline", default="1a87538", help="git revision of the server to compare with ('none': skip)"
    )
    ap.add_argument("--fuzz", type=int, default=5000, help="malformed frames in the fuzz corpus")
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
    from mmvla.serving.server import checkpoint_id

    pcfg, _ = load_config(checkpoint)
    ckpt_info.update(
        {"id": checkpoint_id(checkpoint), "image_size": pcfg.image_size, "cameras": list(pcfg.cameras),
         "dim": pcfg.dim, "fusion": pcfg.fusion, "chunk_size": pcfg.chunk_size}
    )  # fmt: skip
    stream = sim_observations(tuple(pcfg.cameras), pcfg.image_size, 64)
    frame_bytes = sum(stream[0][c].nbytes for c in pcfg.cameras)

    result: dict[str, Any] = {"checkpoint": ckpt_info, "server": {"torch_threads": 1}}
    levels = (1, 4, 16)
    bproc: subprocess.Popen[str] | None = None
    if args.baseline != "none":  # today's server before issue 19, same checkpoint, same client code
        src = baseline_source(args.baseline, tmp)
        if src is not None:
            print(f"baseline server (serving layer of git {args.baseline}) ...", flush=True)
            bproc, burl = start_server(checkpoint, src=src)
            result["baseline"] = {
                "rev": args.baseline,
                "source": f"this revision's src/ with the serving layer of {args.baseline} "
                f"({', '.join(BASELINE_SERVING_FILES)})",
            }
    proc, url = start_server(checkpoint)
    result["server"]["url"] = url
    try:
        print(f"server {url}; latency ...", flush=True)
        result["latency"] = latency(url, stream, args.latency_requests)
        result["local"] = local_latency(checkpoint, stream, args.latency_requests // 2)
        runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
        servers = [("server", url)] + ([("baseline", burl)] if bproc is not None else [])
        for r in range(args.rounds):  # interleaved, so that a slow spell of the machine hits both
            for clients in levels:
                for name, u in servers:
                    print(f"round {r + 1}/{args.rounds}: {name}, {clients} client(s) ...", flush=True)
                    runs.setdefault((name, clients), []).append(
                        throughput(u, stream, clients, args.requests, args.time_limit)
                    )
        result["throughput"] = [combine_rounds(runs["server", c]) for c in levels]
        if bproc is not None:
            result["baseline"]["throughput"] = [combine_rounds(runs["baseline", c]) for c in levels]
            result["baseline"]["shutdown"] = stop_server(bproc)
            bproc = None
        print("async client at 20 Hz ...", flush=True)
        result["async_client"] = async_loop(url, stream, 60)
        if args.episodes > 0:
            print(f"success, {args.episodes} episodes per split, local and served ...", flush=True)
            result["success"] = success(checkpoint, url, args.episodes, tmp / "eval")
    finally:
        result["server"]["shutdown"] = stop_server(proc)
        if bproc is not None:
            stop_server(bproc)
    atomic_write_json(args.out, result)  # partial results, in case a later part fails
    print("lock-out: 64 idle + 64 trickling handshakes + 32 trickled frames ...", flush=True)
    result["lockout"] = lockout(checkpoint, stream)
    print(f"fuzz corpus of {args.fuzz} malformed frames ...", flush=True)
    result["fuzz"] = fuzz(checkpoint, stream[0], args.fuzz, 500, tmp)

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
    by_clients = {t["clients"]: t for t in result["throughput"]}
    base = {t["clients"]: t for t in result.get("baseline", {}).get("throughput", [])}
    fz, lk = result["fuzz"], result["lockout"]
    result["targets"] = {
        "throughput_errors": total_errors,
        "zero_errors": total_errors == 0,
        "throughput_16_over_baseline_1": by_clients[16]["requests_per_s"] / base[1]["requests_per_s"] if base else None,
        "throughput_16_over_baseline_1_at_least_3": bool(base) and by_clients[16]["requests_per_s"] >= 3 * base[1]["requests_per_s"],
        "p99_16_over_p99_1": by_clients[16]["latency_ms"]["p99"] / by_clients[1]["latency_ms"]["p99"],
        "p99_16_at_most_4x_p99_1": by_clients[16]["latency_ms"]["p99"] <= 4 * by_clients[1]["latency_ms"]["p99"],
        "robot_never_kept_out": not lk["robot_kept_out"] and lk["unauthenticated_status"] == 401,
        "trickled_frames_dropped": lk["trickled_dropped"] == lk["trickled_frames"],
        "fuzz_no_internal_errors": fz["internal_errors"] == 0,
        "fuzz_replies_at_most_1kb": fz["max_reply_bytes"] <= 1024,
        "fuzz_log_at_most_1kb_per_connection": fz["log_bytes_per_connection"] <= 1024,
    }  # fmt: skip
    if "success" in result:
        result["targets"]["served_success_equals_local"] = (
            result["success"]["equal"]
            and result["success"]["episodes_identical"] == result["success"]["episodes_total"]
        )
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
    for t in result.get("baseline", {}).get("throughput", []):
        print(
            f"  baseline {t['clients']:>2}: {t['requests_per_s']:7.1f} req/s, p99 {t['latency_ms']['p99']:.1f} ms"
        )
    if "success" in result:
        s = result["success"]
        print(
            f"success local {s['local']} served {s['served']}; identical episodes {s['episodes_identical']}/{s['episodes_total']}"
        )
    print(f"lock-out: {result['lockout']}")
    print(f"fuzz: {result['fuzz']}")
    print(f"targets: {result['targets']}")
    print(f"server shutdown on SIGTERM: exit {result['server']['shutdown']['exit_code']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
