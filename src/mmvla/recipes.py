"""Named, measured training recipes (the demo's built-in defaults live here, not in the CLI)."""

from __future__ import annotations

from mmvla.policy import PolicyConfig
from mmvla.train_config import TrainConfig


def demo_configs(steps: int = 3500, seed: int = 0) -> tuple[PolicyConfig, TrainConfig]:
    """Policy and training settings of ``mmvla demo``: sized for ~5.5 minutes of training on 2 CPU
    cores (3,500 steps at ~680 samples/s, measured).

    What makes it localise the named object (docs/findings.md, benchmarks/grounding.py): the CNN trunk
    is FiLM-conditioned on the instruction, each camera reaches the fusion as one token of
    spatial-softmax keypoints (no grid tokens to memorise scenes by), and an auxiliary loss predicts
    the named object's position relative to the gripper (training-time only).
    """
    policy = PolicyConfig(
        cameras=("front", "wrist"),
        image_size=64,
        dim=128,
        # 3 stride-2 stages, no residual convs: ~19 MFLOP per 64² image.
        vision={
            "kind": "cnn",
            "channels": (32, 64, 64),
            "strides": (2, 2, 2),
            "residual": False,
            "condition": True,
            "pool": "keypoints",
        },
        vision_tokens="pooled",
        language={"kind": "lstm"},
        fusion="film",
        head={"kind": "regression", "chunk_size": 4, "loss": "l1"},
        camera_dropout=0.1,
        aux_state_weight=1.0,
    )
    train = TrainConfig(steps=steps, batch_size=64, lr=1e-3, warmup_steps=100, seed=seed, augment_shift=4)
    return policy, train
