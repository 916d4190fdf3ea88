"""``mmvla pretrain``: CLIP-style alignment of a policy's vision and language encoders on demonstrations."""

from __future__ import annotations

import argparse

from mmvla.cli import csv_list
from mmvla.core.io import atomic_write_json, read_json
from mmvla.data.lerobot_format import image_features, read_info
from mmvla.policy import PolicyConfig
from mmvla.reporting.figures import write_pretrain_embedding_plots
from mmvla.training.config import apply_overrides, read_config_sections
from mmvla.training.pretrain import PretrainConfig, format_metrics, pretrain


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="dataset directory written by `mmvla collect`")
    p.add_argument("--out", required=True, help="output directory (encoders, metrics, log)")
    p.add_argument(
        "--config",
        help='JSON file {"policy": {...}, "pretrain": {...}} (the policy part as for `mmvla train`); '
        "flags below override it",
    )
    p.add_argument("--vision", help="vision encoder kind: cnn | patch | efficientnet_lite0")
    p.add_argument("--language", help="language encoder kind: lstm | transformer | minilm")
    p.add_argument("--dim", type=int, help="token width D of the encoders (the policy's dim)")
    p.add_argument("--embed-dim", type=int, help="width of the shared embedding space (default: D)")
    p.add_argument(
        "--cameras",
        type=csv_list,
        help="cameras whose frames are paired with the instruction (default front)",
    )
    p.add_argument("--steps", type=int, help="optimiser steps (default 1000)")
    p.add_argument("--batch-size", type=int, help="pairs per step (default 64)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    p.add_argument("--eval-rounds", type=int, help="evaluation frames per instruction (default 3)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--no-plots", action="store_true", help="skip the embedding plots (OUT/viz/*.png)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_configs(args: argparse.Namespace) -> tuple[PolicyConfig, PretrainConfig, bool]:
    """(PolicyConfig, PretrainConfig, image_size_given) from --config plus flags."""

    sections = ("policy", "pretrain", "train")
    file = read_config_sections(args.config, sections, "pretrain config") if args.config else {}
    policy: dict[str, object] = {}
    if args.vision:
        policy["vision.kind"] = args.vision
    if args.language:
        policy["language.kind"] = args.language
    if args.dim is not None:
        policy["dim"] = args.dim
    flags = ("embed_dim", "cameras", "steps", "batch_size", "lr", "eval_rounds", "seed", "threads")
    pre = {key: getattr(args, key) for key in flags if getattr(args, key) is not None}
    policy_d = apply_overrides(file.get("policy", {}), policy)
    pre_d = apply_overrides(file.get("pretrain", {}), pre)
    return PolicyConfig.from_dict(policy_d), PretrainConfig.from_dict(pre_d), "image_size" in policy_d


def run(args: argparse.Namespace) -> int:

    policy_cfg, cfg, size_given = build_configs(args)
    if not size_given:  # the encoders are built for the dataset's image size unless the config says otherwise
        meta = read_info(args.data)
        key = image_features(meta).get(cfg.cameras[0])
        if key is not None:
            size = int(meta["features"][key]["shape"][0])
            policy_cfg = PolicyConfig.from_dict({**policy_cfg.to_dict(), "image_size": size})
    r = pretrain(args.data, args.out, policy_cfg, cfg, progress=not args.quiet)
    if not args.no_plots:  # the embedding plots, and which projection they show, in pretrain.json
        record = read_json(r.out / "pretrain.json", "pretrain record")
        record["embedding_plots"] = write_pretrain_embedding_plots(r.out)
        atomic_write_json(r.out / "pretrain.json", record)
    print(
        f"pre-trained {r.steps} steps in {r.seconds:.0f} s; logit scale {r.final_logit_scale:.1f} "
        f"(max seen {r.max_logit_scale_seen:.1f})\n"
        "retrieval on the fixed held-out set (recall@k, frame->instruction = i2t; modality gap raw, then ratio):\n"
        f"{format_metrics(r.before, r.after)}\n"
        f"encoders: {r.out / 'encoders.safetensors'}\n"
        f"train with: mmvla train --data {args.data} --out RUN --config {r.out / 'train_config.json'} "
        f"--init-from {r.out}"
    )
    return 0
