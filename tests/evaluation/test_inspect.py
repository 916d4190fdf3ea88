"""mmvla.evaluation.inspect: attention recorder parity, heatmaps (sum to 1, image aspect, independent index
reference), keypoint maps, clear errors for fusions without language → vision attention, and the maps a
run's report shows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmvla.core.io import atomic_write_json
from mmvla.evaluation import inspect as insp
from mmvla.modules.attention import MultiHeadAttention
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.normalize import Normalizer

IMAGE = 32  # CNN strides (2, 2, 2, 1) -> a 4 x 4 token grid
INSTRUCTIONS = ("pick up the red cube", "push the green slab to the left")
STATS = {
    "observation.state": {"mean": [0.0] * 5, "std": [1.0] * 5, "min": [-1.0] * 5, "max": [1.0] * 5},
    "action": {"mean": [0.0] * 7, "std": [1.0] * 7, "min": [-1.0] * 7, "max": [1.0] * 7},
}


def _policy(fusion: str, vision: dict | None = None, **options: object) -> VLAPolicy:
    cfg = PolicyConfig(
        cameras=("front", "wrist"),
        image_size=IMAGE,
        instructions=INSTRUCTIONS,
        dim=16,
        vision=vision or {"kind": "cnn", "channels": (8, 8, 16, 16), "num_keypoints": 4},
        language={"kind": "lstm", "embed_dim": 16, "hidden_dim": 16},
        fusion=fusion,
        fusion_options={"num_heads": 2, "num_layers": 2, **options},
        head={"kind": "regression", "chunk_size": 2, "hidden": 16},
    )
    torch.manual_seed(0)
    modes = {"observation.state": "mean_std", "action": "mean_std"}
    return VLAPolicy(cfg, Normalizer(STATS, modes)).eval()


def _obs(seed: int = 0, instruction: str = "pick up the red cube") -> dict:
    rng = np.random.default_rng(seed)
    return {
        "front": rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
        "wrist": rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8),
        "state": rng.normal(size=5).astype(np.float32),
        "instruction": instruction,
    }


# ------------------------------------------------------------------------------- recorder hook


@pytest.mark.parametrize("cross", [False, True])
def test_recorder_takes_slow_path_with_same_output(cross: bool) -> None:
    torch.manual_seed(0)
    m = MultiHeadAttention(16, 2).eval()
    x = torch.randn(2, 5, 16)
    ctx = torch.randn(2, 40, 16) if cross else None  # 40 keys: "auto" folds, so paths really differ
    keep = torch.rand(2, 40 if cross else 5) > 0.3
    keep[:, 0] = True
    fast = m(x, ctx, key_mask=keep)
    m.recorder = []
    rec = m(x, ctx, key_mask=keep)
    assert len(m.recorder) == 1
    ref = m.forward_with_weights(x, ctx, key_mask=keep)
    torch.testing.assert_close(m.recorder[0], ref.weights)
    torch.testing.assert_close(rec, fast, rtol=1e-5, atol=1e-6)
    m.recorder = None
    torch.testing.assert_close(m(x, ctx, key_mask=keep), fast)


# ------------------------------------------------------------------------------- heatmaps


def _reference_heatmap(policy: VLAPolicy, obs: dict, camera: str) -> np.ndarray:
    """Independent reference: capture the last attention's inputs with a forward hook, recompute the
    weights in float64 by hand, and pick rows/columns from the documented token layout."""
    fusion = policy.fusion
    name = policy.cfg.fusion
    module = fusion.layers[-1].attn["language"] if name == "cross_attention" else fusion.blocks[-1].attn
    seen: dict = {}

    def hook(mod, args, kwargs):
        seen["x"], seen["ctx"] = args[0], args[1] if len(args) > 1 else kwargs.get("context")
        seen["mask"] = kwargs.get("key_mask")

    h = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            from mmvla.policy.observation import observation_to_batch

            images, texts, state = observation_to_batch(obs, policy.cfg.cameras)
            policy.fuse(images, texts, state)
    finally:
        h.remove()
    x = seen["x"].double().detach()
    ctx = x if seen["ctx"] is None else seen["ctx"].detach().double()
    D, H = module.dim, module.num_heads
    w = module.in_proj_weight.detach().double()
    b = module.in_proj_bias.detach().double()
    q = (x @ w[:D].T + b[:D]).view(1, -1, H, D // H).transpose(1, 2)
    k = (ctx @ w[D : 2 * D].T + b[D : 2 * D]).view(1, -1, H, D // H).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / (D // H) ** 0.5
    if seen["mask"] is not None:
        s = s.masked_fill(~seen["mask"][:, None, None, :], float("-inf"))
    att = s.softmax(-1)[0].mean(0)  # (Nq, Nk)
    words, grid = 5, 16  # "pick up the red cube"; 4 x 4 tokens per camera
    per_cam = 1 + grid
    cam = policy.cfg.cameras.index(camera)
    if name == "cross_attention":
        rows = np.arange(1, 1 + words)  # [summary, words...]
        cols = cam * per_cam + 1 + np.arange(grid)  # context = vision only: [pooled, grid] per camera
    else:  # transformer: [CLS, language (1 + 5), proprio (1), vision (2 x 17)]
        rows = 1 + 1 + np.arange(words)
        cols = 1 + (1 + words) + 1 + cam * per_cam + 1 + np.arange(grid)
    block = att[rows][:, cols].numpy()
    return (block / block.sum(1, keepdims=True)).reshape(words, 4, 4)


@pytest.mark.parametrize("fusion", ["cross_attention", "transformer"])
@pytest.mark.parametrize("camera", ["front", "wrist"])
def test_heatmap_sums_to_one_has_image_aspect_and_matches_reference(fusion: str, camera: str) -> None:
    policy = _policy(fusion)
    obs = _obs()
    maps = insp.attention_heatmaps(policy, obs, camera=camera)
    L = len(["pick", "up", "the", "red", "cube"])
    assert maps.words == ["pick", "up", "the", "red", "cube"]
    assert maps.heatmaps.shape == (L, 4, 4)
    np.testing.assert_allclose(maps.heatmaps.sum(axis=(1, 2)), np.ones(L), atol=1e-9)
    assert (maps.heatmaps >= 0).all()
    h, w = maps.grid
    H, W = maps.frame.shape[:2]
    assert h / w == H / W
    assert maps.upsampled().shape == (L, H, W)
    np.testing.assert_array_equal(maps.frame, obs[camera])
    assert ((maps.camera_share > 0) & (maps.camera_share <= 1 + 1e-9)).all()
    np.testing.assert_allclose(maps.heatmaps, _reference_heatmap(policy, obs, camera), rtol=1e-4, atol=1e-6)
    # the recorder is removed again: no module is left on the slow path
    assert all(m.recorder is None for m in policy.modules() if isinstance(m, MultiHeadAttention))


def test_hierarchical_heatmap_and_layer_choice() -> None:
    policy = _policy("hierarchical")
    obs = _obs(1, "push the green slab to the left")
    last = insp.attention_heatmaps(policy, obs)
    assert last.layer == "high[1].attn"
    first = insp.attention_heatmaps(policy, obs, layer=0)
    assert first.layer == "mid[0].attn['language']"
    for maps in (first, last):
        assert maps.heatmaps.shape == (7, 4, 4)
        np.testing.assert_allclose(maps.heatmaps.sum(axis=(1, 2)), 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="out of range"):
        insp.attention_heatmaps(policy, obs, layer=4)


def test_heatmap_does_not_change_policy_output_or_mode() -> None:
    policy = _policy("cross_attention")
    obs = _obs(2)
    from mmvla.policy.observation import observation_to_batch

    images, texts, state = observation_to_batch(obs, policy.cfg.cameras)
    with torch.no_grad():
        before = policy.fuse(images, texts, state).pooled
    policy.train()
    insp.attention_heatmaps(policy, obs)
    assert policy.training
    policy.eval()
    with torch.no_grad():
        torch.testing.assert_close(policy.fuse(images, texts, state).pooled, before)


@pytest.mark.parametrize("fusion", ["film", "early", "late", "gated", "moe"])
def test_fusions_without_text_to_vision_attention_raise_clearly(fusion: str) -> None:
    with pytest.raises(ValueError, match=rf"fusion '{fusion}'.*cross_attention, hierarchical, transformer"):
        insp.attention_heatmaps(_policy(fusion), _obs())


def test_keypoint_heatmaps_sum_to_one_and_match_the_encoders_keypoints() -> None:
    vision = {"kind": "cnn", "channels": (8, 16), "strides": (2, 2), "condition": True, "pool": "keypoints"}
    policy = _policy("film", vision=vision)
    maps = insp.keypoint_heatmaps(policy, _obs(), camera="wrist", top=3)
    assert maps.heatmaps.shape == (3, 8, 8) and maps.frame.shape[:2] == (IMAGE, IMAGE)
    np.testing.assert_allclose(maps.heatmaps.sum(axis=(1, 2)), 1.0, atol=1e-6)
    # Reference: each map's expected cell centre is the encoder's own keypoint (x right, y down).
    with torch.no_grad():
        cond = policy.language(["pick up the red cube"]).pooled
        x = torch.from_numpy(_obs()["wrist"]).permute(2, 0, 1)[None].float() / 255.0
        keypoints = policy.vision(x, cond).keypoints[0].double().numpy()  # (K, 2)
    centres = (np.arange(8) + 0.5) / 8 * 2 - 1
    for label, heat in zip(maps.words, maps.heatmaps, strict=True):
        k = int(label.split()[-1])
        expected = [(heat.sum(0) * centres).sum(), (heat.sum(1) * centres).sum()]
        np.testing.assert_allclose(expected, keypoints[k], atol=1e-5)
    peaks = maps.heatmaps.reshape(3, -1).max(axis=1)
    assert np.all(np.diff(peaks) <= 1e-12)  # most concentrated first
    other = insp.keypoint_heatmaps(
        policy, _obs(instruction="push the green slab to the left"), camera="wrist"
    )
    assert not np.allclose(other.heatmaps, insp.keypoint_heatmaps(policy, _obs(), camera="wrist").heatmaps)
    with pytest.raises(ValueError, match="no spatial-softmax keypoints"):
        insp.keypoint_heatmaps(
            _policy("film", vision={"kind": "cnn", "channels": (8,), "strides": (2,), "pool": "mean"}), _obs()
        )


def test_heatmap_needs_grid_tokens() -> None:
    policy = _policy("cross_attention")
    policy.cfg.vision_tokens = "pooled"
    with pytest.raises(ValueError, match="no image-grid tokens"):
        insp.attention_heatmaps(policy, _obs())


def test_heatmap_bad_camera_and_unknown_word() -> None:
    policy = _policy("cross_attention")
    with pytest.raises(ValueError, match="camera 'side'"):
        insp.attention_heatmaps(policy, _obs(), camera="side")
    maps = insp.attention_heatmaps(policy, _obs(instruction="pick up the purple cube"))
    assert maps.words[3] == "purple (unk)"


# ------------------------------------------------------------------------------- saved policies and runs


def test_attention_maps_for_checkpoint(tmp_path) -> None:
    _policy("transformer").save_pretrained(tmp_path / "ckpt")
    maps = insp.attention_maps_for_checkpoint(tmp_path / "ckpt", seed=3)
    assert maps.camera == "front" and maps.layer == "blocks[1].attn"
    assert len(maps.words) == len(maps.instruction.split()) and maps.frame.shape == (IMAGE, IMAGE, 3)
    np.testing.assert_allclose(maps.heatmaps.sum(axis=(1, 2)), 1.0, atol=1e-9)
    _policy("film").save_pretrained(tmp_path / "film")
    with pytest.raises(ValueError, match="'film'"):
        insp.attention_maps_for_checkpoint(tmp_path / "film")


def test_report_attention_maps_of_a_run_and_a_comparison(tmp_path) -> None:
    run = tmp_path / "run"
    _policy("cross_attention").save_pretrained(run / "policy")
    ((maps_path, maps),) = insp.report_attention_maps(run).items()
    assert maps_path == run / "viz" / "attention_overlay_policy.png" and maps.fusion == "cross_attention"
    maps_path.parent.mkdir()
    maps_path.write_bytes(b"drawn")
    assert insp.report_attention_maps(run) == {}  # drawn once: a later report reuses it
    # A comparison: the attention designs' first runs, best unseen success first; film is skipped.
    comp = tmp_path / "comp"
    for name in ("film", "transformer", "cross_attention"):
        _policy(name).save_pretrained(comp / "runs" / f"fusion-{name}-seed0" / "policy")
    rows = [
        {"name": n, "runs": [f"runs/fusion-{n}-seed0"], "success": {"unseen": {"mean": m}}}
        for n, m in (("film", 0.9), ("transformer", 0.2), ("cross_attention", 0.5))
    ]
    atomic_write_json(comp / "comparison.json", {"variants": rows})
    assert insp.attention_checkpoints(comp) == [
        comp / "runs" / "fusion-cross_attention-seed0" / "policy",
        comp / "runs" / "fusion-transformer-seed0" / "policy",
    ]
    focus = comp / "runs" / "fusion-transformer-seed0"
    assert insp.attention_checkpoints(comp, focus)[0] == focus / "policy"
    assert list(insp.report_attention_maps(comp)) == [
        comp / "viz" / "attention_overlay_fusion-cross_attention-seed0.png"
    ]
    assert insp.report_attention_maps(tmp_path / "empty") == {}
