"""``mmvla serve``: a WebSocket policy server (msgpack frames, /healthz) for robot clients."""

from __future__ import annotations

import argparse

HELP = "Serve a policy checkpoint over WebSockets (msgpack, per-connection state, safety fallback, /healthz)."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="policy directory (a run's policy/ folder)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0: a free one, printed at start)")
    p.add_argument("--chunk-mode", default="ensemble", choices=("ensemble", "execute"))
    p.add_argument("--max-message-mb", type=float, default=4.0, help="largest request frame accepted, MiB")
    p.add_argument("--max-connections", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads for inference (0: torch's default)")
    p.add_argument(
        "--max-frame-age", type=float, default=0.5, help="seconds before a timestamped frame is stale"
    )
    p.add_argument(
        "--frozen-frames", type=int, default=10, help="identical frames that mean a frozen camera (0: off)"
    )
    p.add_argument(
        "--max-pos-delta", type=float, default=1.0, help="per-step clamp of |dx|,|dy|,|dz| (action units)"
    )
    p.add_argument(
        "--max-rot-delta", type=float, default=1.0, help="per-step clamp of rotation deltas (action units)"
    )
    p.add_argument("--no-safety", action="store_true", help="switch the safety layer off (not advised)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    import torch

    from mmvla.policy.safety import SafetyConfig
    from mmvla.serve import PolicyServer

    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("mmvla.serve.websockets").setLevel(
        max(logging.WARNING, logging.getLevelName(args.log_level))
    )
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    safety: SafetyConfig | bool = (
        False
        if args.no_safety
        else SafetyConfig(
            max_frame_age_s=args.max_frame_age,
            frozen_frames=args.frozen_frames,
            max_pos_delta=args.max_pos_delta,
            max_rot_delta=args.max_rot_delta,
        )
    )
    server = PolicyServer.from_checkpoint(
        args.checkpoint,
        host=args.host,
        port=args.port,
        safety=safety,
        chunk_mode=args.chunk_mode,
        max_message_bytes=int(args.max_message_mb * 2**20),
        max_connections=args.max_connections,
    )

    def ready() -> None:
        print(f"mmvla serve: {server.url} (health: http://{server.host}:{server.port}/healthz)", flush=True)

    asyncio.run(server.serve_forever(ready=ready, handle_signals=True))
    return 0
