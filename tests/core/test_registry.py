"""mmvla.core.registry: registration order, unknown and duplicate names, and the registries built on it."""

from __future__ import annotations

import pytest

from mmvla.core.registry import Registry
from mmvla.modules.fusion import available_fusions, build_fusion
from mmvla.modules.fusion.base import FusionConfig
from mmvla.modules.heads import HEADS, HeadConfig
from mmvla.modules.language import LANGUAGE_KINDS, LanguageConfig, build_language_encoder
from mmvla.modules.vision import VISION_KINDS, VisionConfig


def test_register_get_names_in_order() -> None:
    reg: Registry[type] = Registry("widget")

    @reg.register("b")
    class B:
        pass

    @reg.register("a")
    class A:
        pass

    assert reg.names() == ("b", "a") and list(reg) == ["b", "a"] and len(reg) == 2
    assert reg.get("a") is A and reg.get("b") is B  # the decorator returns the class unchanged
    assert "a" in reg and "c" not in reg


def test_unknown_and_duplicate_names_raise() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("one")(1)
    with pytest.raises(ValueError, match=r"unknown widget 'two'; available: one"):
        reg.get("two")
    with pytest.raises(ValueError, match=r"widget 'one' is already registered"):
        reg.register("one")(2)
    assert reg.get("one") == 1


def test_module_registries_keep_their_names_and_messages() -> None:
    assert HEADS == ("regression", "bins", "flow")
    assert VISION_KINDS == ("cnn", "patch", "efficientnet_lite0")
    assert LANGUAGE_KINDS == ("lstm", "transformer", "minilm")
    assert available_fusions() == sorted(available_fusions()) and "film" in available_fusions()
    with pytest.raises(ValueError, match="unknown action head 'mlp'; available: regression, bins, flow"):
        HeadConfig(kind="mlp")
    with pytest.raises(ValueError, match=r"kind must be one of \('cnn', 'patch', 'efficientnet_lite0'\)"):
        VisionConfig(kind="resnet")
    with pytest.raises(ValueError, match=r"kind must be one of \('lstm', 'transformer', 'minilm'\)"):
        LanguageConfig(kind="gru")
    with pytest.raises(
        ValueError, match="unknown fusion 'sum'; available: " + ", ".join(available_fusions())
    ):
        build_fusion("sum", FusionConfig())
    with pytest.raises(ValueError, match="kind 'lstm' needs a WordTokenizer or vocabulary"):
        build_language_encoder(LanguageConfig(kind="lstm"))
