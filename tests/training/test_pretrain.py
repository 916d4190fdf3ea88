"""mmvla pretrain: a tiny run end to end; encoders load into a policy under its own names; the metrics in
pretrain.json equal the library's alignment_metrics / modality_gap on the saved embeddings (and those are
the model's real embeddings); the logit scale never exceeds its clamp; the evaluation set is fixed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from mmvla.core.logs import read_log
from mmvla.data.dataset import VLADataset
from mmvla.modules.contrastive import alignment_metrics, modality_gap
from mmvla.policy import PolicyConfig, VLAPolicy
from mmvla.policy.init import init_from_directory
from mmvla.training.pretrain import (
    DualEncoder,
    EvalSet,
    PretrainConfig,
    build_eval_set,
    lr_at,
    pretrain,
    retrieval_metrics,
)
from mmvla.training.trainer import dataset_normalizer

IMAGE = 32


def _policy_cfg(**overrides: object) -> PolicyConfig:
    d: dict = {
        "cameras": ["front", "wrist"],
        "image_size": IMAGE,
        "dim": 16,
        "vision": {"kind": "cnn", "channels": [8, 8, 16, 16], "num_keypoints": 4},
        "language": {"kind": "lstm", "embed_dim": 16, "hidden_dim": 16},
        "fusion": "cross_attention",
        "fusion_options": {"num_heads": 2, "num_layers": 1},
        "head": {"kind": "regression", "chunk_size": 2, "hidden": 16},
    }
    d.update(overrides)
    return PolicyConfig.from_dict(d)


@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory: pytest.TempPathFactory):
    from mmvla.data.collect import collect_dataset

    root = tmp_path_factory.mktemp("pretrain") / "data"
    collect_dataset(root, episodes=6, workers=1, seed=0, image_size=IMAGE, families=("pick",), progress=False)
    return root


@pytest.fixture(scope="module")
def run(sim_dataset, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("pretrain") / "out"
    cfg = PretrainConfig(steps=6, batch_size=8, log_every=2, eval_rounds=2, warmup_steps=2, threads=1)
    result = pretrain(sim_dataset, out, _policy_cfg(), cfg, progress=False)
    return result, out


def test_outputs_and_encoders_load_into_a_policy_under_its_names(run, sim_dataset) -> None:
    _, out = run
    for name in (
        "encoders.safetensors",
        "pretrain.json",
        "log.csv",
        "train_config.json",
        "eval_embeddings.safetensors",
    ):
        assert (out / name).is_file(), name
    saved = load_file(str(out / "encoders.safetensors"))
    assert saved and all(k.startswith(("vision.", "language.")) for k in saved)

    # The policy `mmvla train --config OUT/train_config.json` builds (here with another fusion and head).
    pdict = json.loads((out / "train_config.json").read_text())["policy"]
    cfg = PolicyConfig.from_dict({**pdict, "fusion": "film", "head": {"kind": "bins", "chunk_size": 3}})
    assert list(cfg.instructions) == VLADataset(sim_dataset, progress=False).instructions
    policy = VLAPolicy(cfg, dataset_normalizer(VLADataset(sim_dataset, progress=False), cfg))
    own = {k for k in policy.state_dict() if k.startswith(("vision.", "language."))}
    copied = init_from_directory(policy, out)
    assert set(copied) == own == set(saved)
    state = policy.state_dict()
    for k in copied:
        torch.testing.assert_close(state[k], saved[k], rtol=0, atol=0)
    with safe_open(str(out / "encoders.safetensors"), framework="pt") as f:
        assert json.loads(f.metadata()["vocab"]) == policy.language.tokenizer.vocab


def _recompute(
    img: torch.Tensor, txt: torch.Tensor, instr: torch.Tensor, rnd: torch.Tensor, splits: list[str]
):
    """Independent recomputation with the library's functions, split by split and round by round."""
    out = {}
    for split in ("all", "train", "unseen"):
        cand = [i for i, s in enumerate(splits) if split == "all" or s == split]
        if len(cand) < 2:
            continue
        recalls, frames = [], []
        for r in sorted(set(rnd.tolist())):
            rows = [int(torch.nonzero((instr == i) & (rnd == r))[0, 0]) for i in cand]
            frames += rows
            m = alignment_metrics(img[rows], txt[cand], groups=torch.tensor(cand), ks=(1, 5))
            recalls.append(m.as_dict())
        gap = modality_gap(img[frames], txt[cand])
        out[split] = {
            "modality_gap": gap.gap,
            "gap_to_variance_ratio": gap.gap_to_variance_ratio,
            **{k: float(np.mean([d[k] for d in recalls])) for k in recalls[0]},
        }
    return out


def test_metrics_equal_library_functions_on_saved_embeddings(run) -> None:
    _, out = run
    report = json.loads((out / "pretrain.json").read_text())
    emb = load_file(str(out / "eval_embeddings.safetensors"))
    with safe_open(str(out / "eval_embeddings.safetensors"), framework="pt") as f:
        splits = json.loads(f.metadata()["splits"])
        instructions = json.loads(f.metadata()["instructions"])
    assert "unseen" in splits and "train" in splits  # held-out compositions are in the evaluation set
    assert (
        report["eval"]["instructions"] == len(instructions) == 15
    )  # every "pick" instruction of split "all"
    assert report["eval"]["unseen_instructions"] == splits.count("unseen") == 3
    for when in ("before", "after"):
        ref = _recompute(
            emb[f"{when}.image"], emb[f"{when}.text"], emb["instruction_index"], emb["round_index"], splits
        )
        got = report["metrics"][when]
        assert set(got) == set(ref) == {"all", "train", "unseen"}
        assert list(got["all"])[:2] == ["modality_gap", "vision_variance"]  # raw gap first
        for split, m in ref.items():
            for k, v in m.items():
                assert got[split][k] == pytest.approx(v, rel=1e-12, abs=1e-12), (when, split, k)
    assert report["metrics"]["before"]["all"]["candidates"] == 15


def test_saved_embeddings_are_the_trained_models(run) -> None:
    """Rebuild the dual encoder from the written files and re-embed the saved frames."""
    result, out = run
    emb = load_file(str(out / "eval_embeddings.safetensors"))
    with safe_open(str(out / "eval_embeddings.safetensors"), framework="pt") as f:
        instructions = json.loads(f.metadata()["instructions"])
    report = json.loads((out / "pretrain.json").read_text())
    cfg = PretrainConfig.from_dict(report["pretrain"])
    model = DualEncoder(result.policy_config, cfg.contrastive_config(result.policy_config.dim))
    state = {
        **load_file(str(out / "encoders.safetensors")),
        **load_file(str(out / "contrastive_head.safetensors")),
    }
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        img, txt = model.embed(emb["frames"].permute(0, 3, 1, 2), instructions)
    torch.testing.assert_close(img, emb["after.image"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(txt, emb["after.text"], rtol=1e-5, atol=1e-5)


def test_log_and_logit_scale(run) -> None:
    result, out = run
    log = read_log(out / "log.csv")
    assert log["step"] == [2.0, 4.0, 6.0]
    assert all(np.isfinite(log["loss"]))
    assert max(log["logit_scale"]) <= 100.0 + 1e-4
    assert result.max_logit_scale_seen <= 100.0 + 1e-4


def test_logit_scale_clamped_after_every_step(sim_dataset, tmp_path, monkeypatch) -> None:
    """The clamp runs once after every optimiser step, before the scale is logged or used again: push the
    scale far above 100 just before each clamp and check every logged value is back at <= 100."""
    from mmvla.modules.contrastive import ContrastiveHead

    original = ContrastiveHead.clamp_
    calls: list[float] = []

    def spy(self: ContrastiveHead) -> None:
        with torch.no_grad():
            self.logit_scale.fill_(float(np.log(1000.0)))  # as if the step had overshot
        calls.append(float(self.logit_scale.detach().exp()))
        original(self)

    monkeypatch.setattr(ContrastiveHead, "clamp_", spy)
    seen: list[float] = []
    cfg = PretrainConfig(steps=5, batch_size=8, log_every=1, warmup_steps=0, threads=1)
    res = pretrain(
        sim_dataset,
        tmp_path / "hot",
        _policy_cfg(),
        cfg,
        progress=False,
        eval_set=_tiny_eval_set(),
        on_log=lambda row: seen.append(row["logit_scale"]),
    )
    assert len(calls) == 5 and min(calls) > 999.0
    assert seen == pytest.approx([100.0] * 5, rel=1e-5)
    assert res.max_logit_scale_seen <= 100.0 + 1e-4 and res.final_logit_scale <= 100.0 + 1e-4


def _tiny_eval_set() -> EvalSet:
    rng = np.random.default_rng(0)
    instructions = ["pick up the red cube", "pick up the blue cube", "pick up the red cylinder"]
    return EvalSet(
        instructions=instructions,
        splits=["train", "unseen", "unseen"],
        frames=rng.integers(0, 255, (6, IMAGE, IMAGE, 3), dtype=np.uint8),
        instruction_index=np.tile(np.arange(3), 2),
        round_index=np.repeat(np.arange(2), 3),
        progress=[1 / 3, 2 / 3],
        camera="front",
        seed=0,
    )


def test_retrieval_metrics_closed_form() -> None:
    """Perfectly aligned embeddings: recall 1, matched similarity 1, zero gap; a swapped pair lowers R@1."""
    txt = torch.eye(4)
    img = torch.cat([txt, txt])  # 2 rounds
    instr = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    rnd = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    m = retrieval_metrics(img, txt, instr, rnd, ["train", "train", "unseen", "unseen"])
    for split in ("all", "train", "unseen"):
        assert m[split]["recall_i2t@1"] == 1.0 and m[split]["recall_t2i@1"] == 1.0
        assert m[split]["modality_gap"] == pytest.approx(0.0, abs=1e-12)
    assert m["all"]["candidates"] == 4 and m["unseen"]["candidates"] == 2
    img2 = img.clone()
    img2[[0, 1]] = img2[[1, 0]]  # round 0: frames of instructions 0 and 1 swapped
    m2 = retrieval_metrics(img2, txt, instr, rnd, ["train"] * 4)
    assert m2["all"]["recall_i2t@1"] == pytest.approx((2 / 4 + 1) / 2)


def test_eval_set_is_fixed_and_covers_unseen_compositions() -> None:
    a = build_eval_set(("pick",), IMAGE, rounds=1, seed=123)
    b = build_eval_set(("pick",), IMAGE, rounds=1, seed=123)
    assert a.instructions == b.instructions and len(a.instructions) == 15
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.frames.shape == (15, IMAGE, IMAGE, 3)
    assert {a.instructions[i] for i, s in enumerate(a.splits) if s == "unseen"} == {
        "pick up the red cylinder",
        "pick up the green slab",
        "pick up the blue cube",
    }
    assert a.frames.std() > 0


def test_config_validation_and_schedule() -> None:
    with pytest.raises(ValueError, match="steps"):
        PretrainConfig(steps=0)
    with pytest.raises(ValueError, match="eval_camera"):
        PretrainConfig(cameras=("front",), eval_camera="wrist")
    with pytest.raises(ValueError, match="init_temperature"):
        PretrainConfig(init_temperature=0.001)
    with pytest.raises(ValueError, match="unknown field"):
        PretrainConfig.from_dict({"stepz": 3})
    cfg = PretrainConfig(steps=10, warmup_steps=2, lr=1.0)
    assert lr_at(0, cfg) == 0.5 and lr_at(1, cfg) == 1.0 and lr_at(2, cfg) == 1.0
    assert lr_at(6, cfg) == pytest.approx(0.5)


def test_image_size_mismatch_is_a_clear_error(sim_dataset, tmp_path) -> None:
    with pytest.raises(ValueError, match="image_size=64"):
        pretrain(
            sim_dataset, tmp_path / "x", _policy_cfg(image_size=64), PretrainConfig(steps=1), progress=False
        )


@pytest.mark.slow
def test_cli_pretrain_then_train_init_from(sim_dataset, tmp_path) -> None:
    from mmvla.cli import main

    out = tmp_path / "pre"
    rc = main(
        ["pretrain", "--data", str(sim_dataset), "--out", str(out), "--steps", "2", "--batch-size", "4",
         "--dim", "16", "--eval-rounds", "1", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    assert (out / "viz" / "embeddings_after.png").is_file()  # drawn by the command, recorded in pretrain.json
    assert json.loads((out / "pretrain.json").read_text())["embedding_plots"] in ("tsne", "pca")
    policy = json.loads((out / "train_config.json").read_text())["policy"]
    assert policy["image_size"] == IMAGE and policy["dim"] == 16
    rc = main(
        ["train", "--data", str(sim_dataset), "--out", str(tmp_path / "run"), "--config", str(out / "train_config.json"),
         "--init-from", str(out), "--steps", "1", "--batch-size", "4", "--quiet"]
    )  # fmt: skip
    assert rc == 0
    trained = load_file(str(tmp_path / "run" / "policy" / "model.safetensors"))
    assert any(k.startswith("vision.") for k in trained)


def test_conditioned_vision_is_refused_clearly() -> None:
    from mmvla.modules.contrastive import ContrastiveConfig

    cfg = PolicyConfig(
        dim=32,
        instructions=("pick up the red cube",),
        vision={"kind": "cnn", "channels": (8,), "strides": (2,), "condition": True},
    )
    with pytest.raises(ValueError, match="condition=False"):
        DualEncoder(cfg, ContrastiveConfig(embed_dim=32, vision_dim=32, text_dim=32))
