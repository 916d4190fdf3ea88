"""``mmvla serve``: a WebSocket policy server (msgpack frames, /healthz) for robot clients."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys

import torch

from mmvla.cli import flags
from mmvla.core.keys import FALLBACKS
from mmvla.policy.runtime import CHUNK_MODES
from mmvla.policy.safety import SafetyConfig
from mmvla.serving.server import TOKEN_ENV, PolicyServer, parse_key_map


def add_arguments(p: argparse.ArgumentParser) -> None:
    arg = p.add_argument
    arg("--checkpoint", required=True, help="policy directory (a run's policy/ folder)")
    arg("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    arg("--port", type=int, default=8000, help="TCP port (0: a free one, printed at start)")
    arg("--chunk-mode", default="ensemble", choices=CHUNK_MODES)
    arg("--max-message-mb", type=float, default=4.0, help="largest request frame accepted, MiB")
    arg("--max-connections", type=int, default=64, help="connections served at once")
    arg("--max-connections-per-ip", type=int, default=64, help="connections from one address")
    arg(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' (or openpi's 'Api-Key TOKEN'); default: $MMVLA_SERVE_TOKEN, "
        "unset: no authentication. Prefer the variable: arguments show up in the process list",
    )
    arg("--idle-timeout", type=float, default=300.0, help="close a connection idle this long, s")
    arg("--frame-timeout", type=float, default=10.0, help="close a connection whose frame takes longer, s")
    arg(
        "--reclaim-idle",
        type=float,
        default=5.0,
        help="at a cap, a connection idle this long yields its slot, s",
    )
    arg("--max-batch", type=int, default=32, help="most act requests in one forward pass (1: none)")
    arg("--batch-wait-ms", type=float, default=2.0, help="longest wait for active clients to join a batch")
    arg(
        "--batch-groups",
        type=int,
        default=2,
        help="active clients are served in this many batches that take turns (1: all in one batch)",
    )
    arg("--max-instruction-chars", type=int, default=512, help="longer instructions are refused")
    arg(
        "--protocol",
        default="auto",
        choices=("auto", "mmvla", "openpi"),
        help="wire protocol: mmvla's, openpi's (openpi-client), or auto-detected from each connection's first frame",
    )
    arg(
        "--openpi-keys",
        default="",
        help="openpi observation keys -> policy keys, e.g. 'observation/image=front,observation/wrist_image=wrist,"
        "observation/state=state,prompt=instruction' (the default; '-' ignores a key)",
    )
    arg(
        "--threads",
        type=int,
        default=1,
        help="torch threads for inference (0: torch's default). 1 by default: on 2 cores torch's 2 threads "
        "spin-waited against the network thread and halved a single client's throughput",
    )
    arg(
        "--vision-threads",
        type=int,
        default=0,
        help="threads that compute slices of a batch's vision pass at once (0: 2 when torch runs one "
        "thread on a machine with 2 or more cores, else 1)",
    )
    arg(
        "--switch-interval-ms",
        type=float,
        default=1.0,
        help="how long one thread may hold Python's GIL before handing it over (Python's default: 5): "
        "shorter lets the inference thread resume between tensor ops while the network thread is busy",
    )
    arg("--max-frame-age", type=float, default=0.5, help="seconds before a timestamped frame is stale")
    arg("--frozen-frames", type=int, default=10, help="identical frames that mean a frozen camera (0: off)")
    arg("--max-pos-delta", type=float, default=1.0, help="per-step clamp of |dx|,|dy|,|dz| (action units)")
    arg("--max-rot-delta", type=float, default=1.0, help="per-step clamp of rotation deltas (action units)")
    arg(
        "--fallback",
        default="hold",
        choices=FALLBACKS,
        help="while a camera has failed: hold position (default), continue acting for at most "
        "--continue-steps steps, or hand over (the reply's safety decision is 'handover')",
    )
    arg("--continue-steps", type=int, default=8, help="N of --fallback continue")
    arg("--no-safety", action="store_true", help="switch the safety layer off (not advised)")
    arg("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def run(args: argparse.Namespace) -> int:

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mmvla.serving.server.websockets").setLevel(
        max(logging.WARNING, logging.getLevelName(args.log_level))
    )
    # Refusals first: nothing process-wide changes for a command that is refused.
    if args.threads < 0 or args.vision_threads < 0:
        raise ValueError(
            f"--threads and --vision-threads must be >= 0, got {args.threads}, {args.vision_threads}"
        )
    if args.switch_interval_ms <= 0:
        raise ValueError(f"--switch-interval-ms must be > 0, got {args.switch_interval_ms}")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sys.setswitchinterval(args.switch_interval_ms / 1e3)  # process-wide: this command owns the process
    safety: SafetyConfig | bool = not args.no_safety and SafetyConfig(
        max_frame_age_s=args.max_frame_age,
        **flags(args, "frozen_frames", "max_pos_delta", "max_rot_delta", "fallback", "continue_steps"),
    )
    same = ("host", "port", "chunk_mode", "max_connections", "max_connections_per_ip", "max_batch")
    server = PolicyServer.from_checkpoint(
        args.checkpoint,
        **flags(args, *same, "batch_wait_ms", "batch_groups", "max_instruction_chars", "protocol"),
        safety=safety,
        vision_threads=args.vision_threads or None,  # 0: the server's default
        max_message_bytes=int(args.max_message_mb * 2**20),
        token=args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None,
        idle_timeout_s=args.idle_timeout,
        frame_timeout_s=args.frame_timeout,
        reclaim_idle_s=args.reclaim_idle,
        openpi_keys=parse_key_map(args.openpi_keys) if args.openpi_keys else None,
    )

    # Everything loaded so far (weights, tokenizer, lexicon: ~400k objects) lives as long as the process:
    # keep it out of the cyclic collector, whose full pass over it took ~200 ms (a latency spike).
    gc.freeze()

    def ready() -> None:
        print(f"mmvla serve: {server.url} (health: http://{server.host}:{server.port}/healthz)", flush=True)

    asyncio.run(server.serve_forever(ready=ready, handle_signals=True))
    return 0
