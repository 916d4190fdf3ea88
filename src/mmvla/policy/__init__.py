"""The VLA policy: config, model, normalisation, checkpoints, run-time chunking and the Policy protocol."""

from mmvla.policy.config import PolicyConfig
from mmvla.policy.model import VLAPolicy
from mmvla.policy.normalize import Normalizer
from mmvla.policy.protocol import Policy, PolicySpec

__all__ = ["Normalizer", "Policy", "PolicyConfig", "PolicySpec", "VLAPolicy"]
