"""`mmvla compare`: end to end on a tiny budget, resumability, and the aggregation against closed forms."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from mmvla.core.stats import wilson_interval
from mmvla.evaluation.compare import (
    CompareConfig,
    Variant,
    aggregate_variant,
    apply_overrides,
    base_configs,
    comparison_table,
    count_parameters,
    pick_winner,
    variant_configs,
)
from mmvla.pipeline import run_compare, steady_train_seconds

ALL_FUSIONS = ("early", "late", "cross_attention", "transformer", "film", "gated", "moe", "hierarchical")
TINY = [
    "--steps", "3", "--eval-episodes", "1", "--controls", "1", "--eval-max-steps", "6", "--workers", "1",
    "--set", "policy.dim=32", "--set", "train.batch_size=8", "--set", "policy.head.hidden=32", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mmvla.data.collect import collect_dataset

    root = tmp_path_factory.mktemp("compare") / "data"
    collect_dataset(root, episodes=3, workers=1, seed=0, image_size=32, progress=False)
    return root


def _compare(argv: list[str]) -> int:
    from mmvla.cli import main

    return main(["compare", *argv])


def _mtimes(out: Path) -> dict[str, int]:
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for p in sorted(out.glob("runs/*/**/*"))
        if p.is_file() and p.suffix in (".safetensors", ".json", ".csv", ".gif")
    }


def _check_outputs(out: Path, fusions: tuple[str, ...]) -> dict:
    comparison = json.loads((out / "comparison.json").read_text())
    assert [r["name"] for r in comparison["variants"] if r["axis"] == "fusion"] == list(fusions)
    table = (out / "comparison.md").read_text()
    for name in fusions:
        assert f"| fusion | {name}" in table  # every design has a row
        assert (out / "runs" / f"fusion-{name}-seed0" / "policy" / "model.safetensors").is_file()
    for r in comparison["variants"]:
        assert r["params"]["total"] > 0 and r["latency_ms"]["p99"] >= r["latency_ms"]["p50"] > 0
        assert set(r["success"]) == {"train", "unseen"}
        assert set(r["controls"]) == {"blank_images", "wrong_instruction"}
        for split, pooled in ((s, r["success"][s]["pooled"]) for s in ("train", "unseen")):
            outcomes = r["outcomes"][split]  # per episode, read back from the run's episodes.json
            assert len(outcomes) == pooled["episodes"] and sum(outcomes.values()) == pooled["successes"]
    winner = comparison["winners"]["fusion"]
    assert winner["name"] in fusions and "ci_overlap" in winner
    assert [t["name"] for t in winner["paired"]] == winner["ranking"][1:]
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Comparison of designs" in (out / "report.html").read_text()
    return comparison


def test_partially_trained_run_resumes_from_its_checkpoint(tiny_data, tmp_path, monkeypatch):
    import mmvla.training.trainer

    cfg = CompareConfig(
        fusions=("late",),
        steps=4,
        eval_episodes=1,
        controls=0,
        workers=1,
        eval_max_steps=4,
        video_episodes=0,
        latency_steps=3,
        latency_warmup=1,
        policy_overrides={"dim": 32, "image_size": 32},
        train_overrides={"batch_size": 8, "checkpoint_every": 2},
    )
    out = tmp_path / "cmp"
    base_p, base_t = base_configs(cfg)
    v = Variant("fusion", "late")
    pc, tc = variant_configs(v, base_p, base_t, seed=0)
    run_dir = out / "runs" / v.run_name(0)
    mmvla.training.trainer.train(
        tiny_data, run_dir, pc, tc, progress=False, stop_after=2
    )  # "killed" after 2 steps
    assert not (run_dir / "policy").exists()

    calls: list[dict] = []
    real = mmvla.training.trainer.train

    def spy(*a, **k):
        calls.append(k)
        return real(*a, **k)

    monkeypatch.setattr(mmvla.training.trainer, "train", spy)
    comparison = run_compare(out, cfg, data_dir=tiny_data, report=False, log=lambda s: None)
    assert [c["resume"] for c in calls] == [True]
    assert json.loads((run_dir / "policy" / "config.json").read_text())["extra"]["steps"] == 4
    t = json.loads((run_dir / "train_time.json").read_text())
    assert t["resumed_from_step"] == 2
    assert comparison["variants"][0]["name"] == "late"


def test_changed_settings_are_refused_not_mixed(tiny_data, tmp_path):
    out = tmp_path / "cmp"
    args = ["--fusions", "early", "--data", str(tiny_data), "--out", str(out), *TINY]
    assert _compare(args) == 0
    assert _compare([*args[:-1], "--steps", "4", "--quiet"]) == 2  # the cli turns the ValueError into exit 2


def test_compare_every_fusion_design_then_skips_finished_ones(tiny_data, tmp_path, monkeypatch, capsys):
    """All eight designs (plus the head axis) on a tiny budget: ~25-45 s on 2 shared cores."""
    out = tmp_path / "cmp"
    argv = ["--fusions", ",".join(ALL_FUSIONS), "--heads", "regression", "--data", str(tiny_data)]
    argv += ["--out", str(out), *TINY]
    assert _compare(argv) == 0
    first = _check_outputs(out, ALL_FUSIONS)
    assert sorted(first["ran"]) == sorted(f"fusion-{n}-seed0" for n in ALL_FUSIONS) and first["skipped"] == []
    assert "| head | regression" in (out / "comparison.md").read_text()
    # head-regression is the demo recipe, identical to fusion-film: trained once, results shared.
    head = next(r for r in first["variants"] if r["axis"] == "head")
    film = next(r for r in first["variants"] if r["name"] == "film")
    assert head["runs"] == film["runs"] and not (out / "runs" / "head-regression-seed0").exists()
    printed = capsys.readouterr().out
    assert all(f"| fusion | {n}" in printed for n in ALL_FUSIONS)
    before = _mtimes(out)

    import mmvla.evaluation.evaluate
    import mmvla.training.trainer

    def boom(*a, **k):
        raise AssertionError("a finished design was trained or evaluated again")

    monkeypatch.setattr(mmvla.training.trainer, "train", boom)
    monkeypatch.setattr(mmvla.evaluation.evaluate, "evaluate", boom)
    assert _compare(argv) == 0
    second = _check_outputs(out, ALL_FUSIONS)
    assert second["ran"] == [] and sorted(second["skipped"]) == sorted(first["ran"])
    assert "finished earlier, skipped" in capsys.readouterr().out
    assert _mtimes(out) == before  # nothing in the run directories was rewritten
    assert second["variants"] == first["variants"]


# ------------------------------------------------------------------------ no simulator needed
def _result(name: str, seed: int, k_train: int, k_unseen: int, n: int = 10, params: int = 100) -> dict:
    return {
        "variant": f"fusion-{name}",
        "axis": "fusion",
        "name": name,
        "seed": seed,
        "run_dir": f"runs/fusion-{name}-seed{seed}",
        "params": {"total": params, "trainable": params, "frozen_external": 0},
        "latency": {"p50_ms": 1.0 + seed, "p99_ms": 2.0 + seed},
        "train": {"train_s": 10.0 * (seed + 1)},
        "success": {"train": k_train / n, "unseen": k_unseen / n},
        "counts": {
            "train": {"successes": k_train, "episodes": n},
            "unseen": {"successes": k_unseen, "episodes": n},
        },
        "controls": {
            "blank_images": {
                "success": {"train": 0.1, "unseen": 0.0},
                "counts": {
                    "train": {"successes": 1, "episodes": 10},
                    "unseen": {"successes": 0, "episodes": 10},
                },
            }
        },
    }


def test_aggregate_matches_closed_forms():
    rs = [_result("film", 0, 6, 3), _result("film", 1, 8, 5), _result("film", 2, 7, 1)]
    a = aggregate_variant(rs)
    unseen = a["success"]["unseen"]
    assert unseen["mean"] == pytest.approx(0.3)
    assert unseen["std"] == pytest.approx(statistics.stdev([0.3, 0.5, 0.1]))
    assert unseen["pooled"]["successes"] == 9 and unseen["pooled"]["episodes"] == 30
    assert unseen["pooled"]["ci95"] == pytest.approx(list(wilson_interval(9, 30)))
    assert a["controls"]["blank_images"]["success"] == pytest.approx(3 / 60)
    assert a["latency_ms"] == {"p50": 2.0, "p99": 3.0}  # medians over seeds
    assert a["train_s"] == pytest.approx(20.0)


def test_winner_and_ci_overlap():
    clear = [
        aggregate_variant([_result("a", 0, 9, 48, n=50)]),
        aggregate_variant([_result("b", 0, 9, 5, n=50)]),
    ]
    w = pick_winner(clear)
    assert w["name"] == "a" and w["runner_up"] == "b" and w["ci_overlap"] is False
    assert "clear winner" in w["statement"]
    close = [aggregate_variant([_result("a", 0, 5, 5)]), aggregate_variant([_result("b", 0, 5, 4)])]
    w = pick_winner(close)
    assert w["name"] == "a" and w["ci_overlap"] is True and "not statistically established" in w["statement"]
    # ties on unseen: train success decides, then fewer parameters
    tie = [
        aggregate_variant([_result("big", 0, 5, 5, params=900)]),
        aggregate_variant([_result("small", 0, 5, 5)]),
    ]
    assert pick_winner(tie)["name"] == "small"
    table = comparison_table({"variants": clear, "winners": {"fusion": pick_winner(clear)}, "settings": {}})
    assert "| fusion | a ★ |" in table and math.isfinite(clear[0]["train_s"])


def test_config_validation_and_overrides():
    with pytest.raises(ValueError, match="unknown fusion"):
        CompareConfig(fusions=("nope",))
    with pytest.raises(ValueError, match="nothing to compare"):
        CompareConfig()
    with pytest.raises(ValueError, match="seeds"):
        CompareConfig(fusions=("film",), seeds=(1, 1))
    assert apply_overrides({"a": 1, "h": {"x": 1, "y": 2}}, {"h.x": 5, "b": 3}) == {
        "a": 1,
        "h": {"x": 5, "y": 2},
        "b": 3,
    }
    with pytest.raises(ValueError, match="not a dict"):
        apply_overrides({"a": 1}, {"a.b": 2})
    cfg = CompareConfig(fusions=("moe",), heads=("flow",), languages=("lstm",), steps=7)  # base: minilm
    base_p, base_t = base_configs(cfg)
    for v, field, value in [
        (Variant("fusion", "moe"), "fusion", "moe"),
        (Variant("head", "flow"), "head", None),
        (Variant("language", "lstm"), "language", None),
    ]:
        p, t = variant_configs(v, base_p, base_t, seed=3)
        changed = {k for k, val in p.to_dict().items() if base_p.to_dict()[k] != val}
        assert changed == {field} and t.seed == 3 and t.steps == 7
        if value:
            assert getattr(p, field) == value
    assert variant_configs(Variant("head", "flow"), base_p, base_t, 0)[0].head["kind"] == "flow"


def test_count_parameters_counts_frozen_external_encoders():
    import torch
    from torch import nn

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 4)  # 16
            self.b = nn.Linear(4, 1).requires_grad_(False)  # 5
            self._held = [nn.Linear(2, 2)]  # 6, outside the module tree

    c = count_parameters(M())
    assert c == {"total": 21, "trainable": 16, "frozen_external": 6}
    assert torch.get_num_threads() >= 1


def test_steady_train_seconds_skips_the_first_window(tmp_path):
    import csv

    from mmvla.training.trainer import LOG_FIELDS

    log = tmp_path / "log.csv"
    with log.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        w.writeheader()
        for step, sps in ((25, 1.0), (50, 100.0), (75, 50.0), (100, 100.0)):
            w.writerow({**dict.fromkeys(LOG_FIELDS, 0.0), "step": step, "samples_per_s": sps})
    # median of the later windows = 100 samples/s -> 100 steps x 64 samples / 100
    assert steady_train_seconds(log, 100, 64, fallback=-1.0) == pytest.approx(64.0)
    assert steady_train_seconds(tmp_path / "missing.csv", 100, 64, fallback=-1.0) == -1.0


def _with_outcomes(row: dict, passes: list[bool]) -> dict:
    row["outcomes"] = {"unseen": {str(1000 + i): ok for i, ok in enumerate(passes)}}
    return row


def test_paired_tests_establish_a_lead_the_intervals_cannot():
    # 40 shared unseen episodes: a passes 24, b passes 14 and c 23; a and b disagree on 12 episodes,
    # all but one in a's favour (McNemar p = 2 * (1 + 12) / 2**12 ~ 0.006); a and c differ on one episode.
    a = [True] * 24 + [False] * 16
    b = [True] * 13 + [False] * 11 + [True] + [False] * 15
    c = [True] * 23 + [False] * 17
    rows = [
        aggregate_variant([_with_outcomes(_result(n, 0, 5, sum(o), n=40), o)])
        for n, o in (("a", a), ("b", b), ("c", c))
    ]
    w = pick_winner(rows)
    assert w["name"] == "a" and w["ci_overlap"] is True  # runner-up c: 23/40 against a's 24/40
    by_name = {t["name"]: t for t in w["paired"]}
    assert (by_name["b"]["wins"], by_name["b"]["losses"], by_name["b"]["pairs"]) == (11, 1, 40)
    assert by_name["b"]["p_value"] == pytest.approx(2 * (1 + 12) / 2**12)
    assert by_name["b"]["better"] and not by_name["c"]["better"]
    assert w["established"] is False and "better than b; not distinguishable from c" in w["statement"]
    # without c, a is above every other design on the paired test although the intervals (24/40, 14/40)
    # overlap
    w = pick_winner(rows[:2])
    assert w["ci_overlap"] is True and w["established"] is True and "a clear winner" in w["statement"]
    # rows without per-episode outcomes (older comparisons): interval statement only
    plain = [
        aggregate_variant([_result("a", 0, 5, 24, n=40)]),
        aggregate_variant([_result("b", 0, 5, 14, n=40)]),
    ]
    assert "paired" not in pick_winner(plain)
