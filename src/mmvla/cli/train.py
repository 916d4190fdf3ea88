"""``mmvla train``: behaviour-clone a policy on a recorded dataset (works under torchrun too)."""

from __future__ import annotations

import argparse

import torch.distributed as dist

from mmvla.core.paths import RunPaths
from mmvla.modules.heads import HEADS
from mmvla.policy import PolicyConfig
from mmvla.training.config import TRAIN_CAMERA_FAILURES, TrainConfig, training_configs
from mmvla.training.trainer import train


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset directory written by `mmvla collect`")
    p.add_argument("--out", required=True, help="run directory (log, checkpoints, final policy)")
    p.add_argument("--config", help='JSON file {"policy": {...}, "train": {...}}; flags below override it')
    p.add_argument("--fusion", help="fusion design (registry name), e.g. film, cross_attention, transformer")
    p.add_argument("--head", choices=HEADS, help="action head")
    p.add_argument("--chunk-size", type=int, help="actions predicted per step")
    p.add_argument("--vision", help="vision encoder kind: cnn | patch | efficientnet_lite0")
    p.add_argument("--language", help="language encoder kind: lstm | transformer | minilm")
    p.add_argument("--cameras", help="comma-separated cameras, e.g. front,wrist")
    p.add_argument("--steps", type=int, help="optimiser steps")
    p.add_argument("--batch-size", type=int, help="samples per step and process")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--ema", type=float, help="EMA decay of the weights (0 disables)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: CUDA when available")
    p.add_argument(
        "--camera-failure",
        choices=TRAIN_CAMERA_FAILURES,
        help="sample front-camera failures (blank, freeze or both) inside training windows (the context task)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last")
    p.add_argument(
        "--init-from", help="initialise encoders from `mmvla pretrain` output or a policy checkpoint"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_configs(args: argparse.Namespace) -> tuple[PolicyConfig, TrainConfig]:
    """(PolicyConfig, TrainConfig) from --config plus flags (:func:`mmvla.training.config.training_configs`)."""

    policy: dict[str, object] = {}
    if args.fusion:
        policy["fusion"] = args.fusion
    if args.head:
        policy["head.kind"] = args.head
    if args.chunk_size:
        policy["head.chunk_size"] = args.chunk_size
    if args.vision:
        policy["vision.kind"] = args.vision
    if args.language:
        policy["language.kind"] = args.language
    if args.cameras:
        policy["cameras"] = [c.strip() for c in args.cameras.split(",") if c.strip()]
    flags = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "ema": "ema_decay", "seed": "seed"}
    flags |= {"threads": "threads", "device": "device", "camera_failure": "camera_failure"}
    train = {key: getattr(args, flag) for flag, key in flags.items() if getattr(args, flag) is not None}
    if args.bf16:
        train["bf16"] = True
    return training_configs(args.config, policy, train)


def run(args: argparse.Namespace) -> int:

    policy_cfg, train_cfg = build_configs(args)
    result = train(
        args.data,
        args.out,
        policy_cfg,
        train_cfg,
        resume=args.resume,
        init_from=args.init_from,
        progress=not args.quiet,
    )  # type: ignore[arg-type]

    if not dist.is_initialized() or dist.get_rank() == 0:
        if args.init_from:
            print(f"initialised {result.initialised_tensors} tensors from {args.init_from}")
        print(
            f"trained {result.steps} steps in {result.train_seconds:.0f} s ({result.samples_per_s:.0f} samples/s), "
            f"final loss {result.final_loss:.4f}\npolicy: {result.policy_dir}\nlog: {RunPaths(result.run_dir).log}"
        )
    if dist.is_initialized():
        # Every rank done (rank 0 may still be writing) before the group goes away: one CI run saw rank 1
        # abort in teardown ("terminate called without an active exception") without this barrier.
        dist.barrier()
        dist.destroy_process_group()
    return 0
