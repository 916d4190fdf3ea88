"""Cross-attention fusion is cross-modal, told apart from per-modality self-attention by dependence alone.

In one bidirectional cross-attention layer a vision token's output is a function of that token (the
query) and the *language* tokens (keys and values) only, and vice versa. So, with no heatmap involved:
changing the language changes every vision output; changing one vision token changes no other vision
output. Per-modality self-attention has exactly the opposite pattern.
"""

from __future__ import annotations

import torch

from mmvla.modules.fusion import FusionConfig, ModalityTokens, build_fusion

B, NL, NV, D = 2, 4, 5, 16


def _inputs(seed: int) -> ModalityTokens:
    g = torch.Generator().manual_seed(seed)
    lmask = torch.ones(B, NL, dtype=torch.bool)
    lmask[1, 3:] = False
    return ModalityTokens(
        tokens={"language": torch.randn(B, NL, D, generator=g), "vision": torch.randn(B, NV, D, generator=g)},
        masks={"language": lmask},
    )


def _split(x: ModalityTokens, fusion: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        out = fusion(x).tokens  # (B, NL + NV, D), sorted modality order: language, then vision
    return out[:, :NL], out[:, NL:]


def test_each_modality_reads_the_other_and_not_itself():
    torch.manual_seed(0)
    cfg = FusionConfig(dim=D, num_heads=2, num_layers=1, modalities=("language", "vision"))
    fusion = build_fusion("cross_attention", cfg).eval()
    x = _inputs(0)
    lang, vis = _split(x, fusion)

    other_text = _inputs(0)
    other_text.tokens["language"] = _inputs(1).tokens["language"]
    _, vis2 = _split(other_text, fusion)
    assert (vis2 - vis).abs().amax(dim=-1).min() > 1e-4  # every vision token saw the new language

    one_patch = _inputs(0)
    one_patch.tokens["vision"][:, 2] += 3.0
    lang3, vis3 = _split(one_patch, fusion)
    changed = (vis3 - vis).abs().amax(dim=-1)  # (B, NV)
    assert torch.all(changed[:, 2] > 1e-4)
    keep = [i for i in range(NV) if i != 2]
    torch.testing.assert_close(vis3[:, keep], vis[:, keep], atol=1e-6, rtol=0)  # no vision-to-vision path
    assert (lang3 - lang)[x.masks["language"]].abs().amax(dim=-1).min() > 1e-4  # language saw the patch

    one_word = _inputs(0)
    one_word.tokens["language"][:, 1] += 3.0
    lang4, _ = _split(one_word, fusion)
    torch.testing.assert_close(lang4[:, [0, 2]], lang[:, [0, 2]], atol=1e-6, rtol=0)
