"""The VLA policy: config, model, normalisation, checkpoints and run-time chunking."""

from mmvla.policy.config import PolicyConfig
from mmvla.policy.model import VLAPolicy
from mmvla.policy.normalize import Normalizer

__all__ = ["Normalizer", "PolicyConfig", "VLAPolicy"]
