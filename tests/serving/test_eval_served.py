"""``mmvla eval --server``: the same closed-loop episodes through the server give the same actions and success."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmvla.cli import main
from mmvla.evaluation import evaluate as ev
from mmvla.serving.client import RemotePolicy
from mmvla.serving.server import checkpoint_id

FAMILIES = ("pick", "push")


class Recorder:
    """Wraps a policy (local or remote) and records every action it returns."""

    def __init__(self, policy) -> None:
        self.policy, self.cfg, self.actions = policy, policy.cfg, []

    def reset(self, chunk_mode=None) -> None:
        self.policy.reset(chunk_mode)

    def act(self, obs):
        a = self.policy.act(obs)
        self.actions.append(a)
        return a


def _episodes(policy, chunk_mode: str) -> tuple[list, list]:
    """Three short episodes through the evaluation's own worker function, recording the actions."""
    cfg = ev.EvalConfig(episodes=3, split="train", chunk_mode=chunk_mode, families=FAMILIES, max_steps=14)
    jobs = list(ev._jobs(cfg, FAMILIES, {"max_steps": 14, "families": FAMILIES}))
    ev._WORKER["policy"] = rec = Recorder(policy)
    try:
        results = [ev._run_episode(job) for job in jobs]
    finally:
        ev._WORKER.clear()
    return results, rec.actions


@pytest.mark.parametrize("chunk_mode", ["ensemble", "execute"])
def test_served_episodes_match_local_episodes(server, local_policy, chunk_mode):
    local, local_actions = _episodes(local_policy, chunk_mode)
    remote = RemotePolicy(server.url)
    try:
        served, served_actions = _episodes(remote, chunk_mode)
    finally:
        remote.close()
    assert [(r.seed, r.success, r.length, r.instruction) for r in served] == [
        (r.seed, r.success, r.length, r.instruction) for r in local
    ]
    assert len(served_actions) == len(local_actions) == sum(r.length for r in local) >= 3 * 10
    np.testing.assert_allclose(np.stack(served_actions), np.stack(local_actions), rtol=0, atol=1e-6)


def test_evaluate_through_the_server_matches_local_metrics(server, checkpoint, tmp_path):
    cfg = {"episodes": 2, "split": "train", "workers": 1, "max_steps": 10, "families": ("pick", "push")}
    local = ev.evaluate(checkpoint, ev.EvalConfig(**cfg), progress=False)
    served = ev.evaluate(None, ev.EvalConfig(**cfg, server=server.url), tmp_path / "out", progress=False)
    assert served["success"] == local["success"] and served["length"] == local["length"]
    assert served["server"] == server.url and served["checkpoint_id"] == checkpoint_id(checkpoint)
    assert served["config"]["server"] == server.url
    episodes = json.loads((tmp_path / "out" / "episodes.json").read_text())
    assert [e["seed"] for e in episodes] == [1_000_000, 1_000_001]
    # The checkpoint given alongside must be the one served.
    ev.evaluate(checkpoint, ev.EvalConfig(**cfg, server=server.url), progress=False)


def test_eval_server_errors_are_clear(server, tmp_path):
    with pytest.raises(ValueError, match="blank_images"):
        ev.EvalConfig(server=server.url, control="blank_images")
    with pytest.raises(ValueError, match="ws://"):
        ev.EvalConfig(server="http://localhost:8000")
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes(b"not these weights")
    with pytest.raises(ValueError, match="serves checkpoint"):
        ev.evaluate(
            other, ev.EvalConfig(episodes=1, split="train", workers=1, server=server.url), progress=False
        )
    assert main(["eval", "--episodes", "1"]) == 2  # neither --checkpoint nor --server


def test_mmvla_eval_server_command(server, tmp_path, capsys):
    code = main(
        ["eval", "--server", server.url, "--episodes", "1", "--split", "train", "--workers", "1", "--quiet",
         "--families", "push", "--out", str(tmp_path)]
    )  # fmt: skip
    assert code == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["episodes"] == {"train": 1}
    assert "train" in capsys.readouterr().out
