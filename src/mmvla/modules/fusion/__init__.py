"""Fusion designs behind one registry. Importing this package registers every design."""

from mmvla.modules.fusion import (  # noqa: F401  (imported to register the designs)
    cross_attention,
    early,
    film,
    gated,
    hierarchical,
    late,
    moe,
    transformer,
)
from mmvla.modules.fusion.base import Fusion, FusionConfig, FusionOutput, ModalityTokens
from mmvla.modules.fusion.registry import available_fusions, build_fusion, register_fusion

# The designs in which language tokens attend to vision tokens (attention maps can be read out of them).
ATTENTION_FUSIONS = ("cross_attention", "hierarchical", "transformer")

__all__ = [
    "ATTENTION_FUSIONS",
    "Fusion",
    "FusionConfig",
    "FusionOutput",
    "ModalityTokens",
    "available_fusions",
    "build_fusion",
    "register_fusion",
]
