"""benchmarks/failure_modes.py's place outcomes, against what scripted behaviours do in the simulator.

The scripted expert places (success); the same expert that never lowers nor opens its hand once the
target is raised carries it over the base and holds it there (still held, centimetres above its spot); an arm that never moves never
closes on anything (a grasp-stage failure); the expert that opens its hand as soon as the target is
raised drops it back where it stood, and the class follows from that spot's distance to the base.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from script_modules import load_script

from mmvla.sim.registry import make_env
from mmvla.sim.tabletop.expert import ScriptedExpert

SEED = 7


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_script("benchmarks/failure_modes.py", "bench_failure_modes")


@pytest.fixture(scope="module")
def env() -> Any:
    e = make_env("tabletop", cameras=("front",), image_size=32, split="train")
    yield e
    e.close()


class Scripted:
    """The expert's action, edited by ``edit(env, action)``; the policy interface run_episode uses."""

    def __init__(self, env: Any, edit: Callable[[Any, np.ndarray], np.ndarray] | None = None) -> None:
        self.env, self.edit = env, edit
        self.expert: ScriptedExpert | None = None

    def reset(self) -> None:
        self.expert = None

    def act(self, _obs: Any) -> np.ndarray:
        if self.expert is None:  # built after env.reset, which run_episode calls first
            self.expert = ScriptedExpert(self.env)
        action = self.expert.act()
        return self.edit(self.env, action) if self.edit else action


def _raised(env: Any) -> bool:
    return bool(env.object_position(env.target)[2] - env.initial_positions[0][2] > 0.03)


def test_the_expert_places(bench, env):
    outcome, _ = bench.run_episode(env, Scripted(env), SEED, "place")
    assert outcome == "success"


def test_a_hand_that_never_comes_down_is_still_holding_over_the_base(bench, env):
    state: dict[str, bool] = {}

    def hover(env: Any, a: np.ndarray) -> np.ndarray:
        state["raised"] = state.get("raised", False) or _raised(env)
        if state["raised"]:  # carried over the base by the expert, never lowered nor let go
            a[2], a[6] = max(a[2], 0.0), -1.0
        return a

    outcome, numbers = bench.run_episode(env, Scripted(env, hover), SEED, "place")
    assert outcome == "still_held"
    target, base = env.object_position(env.target), env.object_position(env.base)
    assert numbers["offset_m"] == pytest.approx(float(np.linalg.norm(target[:2] - base[:2])))
    assert numbers["offset_m"] < 0.025  # over the spot the expert aims for ...
    assert numbers["above_m"] > 0.02  # ... and held above it


def test_an_arm_that_never_moves_fails_the_grasp(bench, env):
    outcome, numbers = bench.run_episode(env, Scripted(env, lambda e, a: np.zeros_like(a)), SEED, "place")
    assert outcome == "grasp: never_closed"
    # The hand stayed where it started: its closest approach is its distance to the unmoved target.
    start = float(np.linalg.norm(env.ee_state()[:2] - env.object_position(env.target)[:2]))
    assert numbers["closest_m"] == pytest.approx(start, abs=2e-3)


def test_a_drop_right_after_lifting_is_classified_by_its_distance_to_the_base(bench, env):
    state: dict[str, bool] = {}

    def drop(env: Any, a: np.ndarray) -> np.ndarray:
        state["raised"] = state.get("raised", False) or _raised(env)
        if state["raised"]:
            a[:] = 0.0
            a[6] = 1.0  # open and stay
        return a

    outcome, numbers = bench.run_episode(env, Scripted(env, drop), SEED, "place")
    distance = float(np.linalg.norm(env.object_position(env.target)[:2] - env.object_position(env.base)[:2]))
    assert outcome == ("beside_base" if distance <= bench.BESIDE else "dropped_away")
    assert numbers["distance_m"] == pytest.approx(distance)
