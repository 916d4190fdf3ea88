"""Failure modes: *how* a tabletop policy fails, episode by episode, read from the simulator's state.

For a checkpoint, closed-loop episodes per split and family are classified at the end:

    pick  success | lifted_other (a distractor was raised) | closed_on_other (the first low grasp
          closed nearest a distractor) | missed_at_target (it closed low over the target but did not
          lift it; the yaw error to the grasp the expert would use is recorded) | lifted_not_held |
          never_closed (never closed low; the closest approach is recorded)
    push  success | moved_other (a distractor moved more than the target) | wrong_direction |
          too_short (moved the right way, less than the success distance) | not_moved
    place success | grasp: <a pick class> (the target was never raised: how the grasp failed) |
          still_held (raised, never let go) | on_other (released resting on a distractor) |
          off_centre (released on the base, beyond the success radius; the offset is recorded) |
          beside_base (released on the table within BESIDE of the base; the distance is recorded) |
          dropped_away (released on the table farther from the base) | base_moved (the base was
          knocked more than 1 cm: the place was aimed at a moving target)

"closed_on_other (same colour)" vs "(other colour)" separates shape grounding from colour grounding.
This is the diagnostic that showed the 12,000-step policy's pick failures were mostly grasps at the
right place with the wrong yaw (docs/findings.md).

    .venv/bin/python benchmarks/failure_modes.py --checkpoint runs/demo/policy [--episodes 30]

Writes ``--out`` (JSON, default: beside the checkpoint's run, ``failure_modes.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmvla.core.io import atomic_write_json
from mmvla.policy import VLAPolicy
from mmvla.sim.registry import make_env
from mmvla.sim.rollout import rollout
from mmvla.sim.tabletop.env import PUSH_DISTANCE
from mmvla.sim.tabletop.expert import grasp_yaw, wrap_angle

ENV = "tabletop"  # the outcomes read the tabletop's objects, grasp and push geometry

EVAL_SEED = 5_000_000  # disjoint from collection (0..) and `mmvla eval` (1,000,000..)
LIFTED = 0.03  # metres above the start: an object counts as raised
CLOSED_OPENING = 0.07  # gripper gap (metres, max 0.086) below which it counts as closing
LOW = 0.08  # grasp-point height (metres) under which a closing counts as a grasp attempt
BESIDE = 0.08  # metres (horizontal) from the base's centre within which a drop counts as beside it
RESTING_ON = 0.01  # metres: a released target this far above an object's top rests on that object


def _pick_outcome(env: Any, trace: dict[str, Any], success: bool) -> tuple[str, dict[str, float]]:
    objs, target = env.objects, env.target
    raised = [
        i for i, o in enumerate(objs) if env.object_position(o)[2] - env.initial_positions[i][2] > LIFTED
    ]
    if success:
        return "success", {}
    other = [i for i in raised if i != 0]
    if other:
        same = objs[other[0]].colour == target.colour
        return f"lifted_other ({'same' if same else 'other'} colour)", {}
    closed = trace["first_low_close"]
    if closed is None:
        return "never_closed", {"closest_m": trace["closest"]}
    nearest, yaw_err = closed
    if nearest != 0:
        same = objs[nearest].colour == target.colour
        return f"closed_on_other ({'same' if same else 'other'} colour)", {}
    if raised == [0]:
        return "lifted_not_held", {}
    return "missed_at_target", {"yaw_error_deg": abs(math.degrees(yaw_err))}


def _push_outcome(env: Any, direction: str, success: bool) -> tuple[str, dict[str, float]]:
    if success:
        return "success", {}
    moved = [
        float(np.linalg.norm(env.object_position(o)[:2] - env.initial_positions[i][:2]))
        for i, o in enumerate(env.objects)
    ]
    dx = float(env.object_position(env.target)[0] - env.initial_positions[0][0])
    dx *= 1.0 if direction == "right" else -1.0
    if max(moved[1:], default=0.0) > max(moved[0], 0.01):
        return "moved_other", {}
    if moved[0] < 0.01:
        return "not_moved", {}
    if dx <= 0:
        return "wrong_direction", {}
    return "too_short", {"fraction": dx / PUSH_DISTANCE}


def _place_outcome(env: Any, trace: dict[str, Any], success: bool) -> tuple[str, dict[str, float]]:
    if success:
        return "success", {}
    if not trace["target_raised"]:
        grasp, numbers = _pick_outcome(env, trace, False)
        return f"grasp: {grasp}", numbers
    target, base = env.target, env.base
    pos, bpos = env.object_position(target), env.object_position(base)
    if env.is_pinched(target):
        above = pos[2] - (bpos[2] + base.half_extents[2] + target.half_extents[2])
        return "still_held", {"offset_m": float(np.linalg.norm(pos[:2] - bpos[:2])), "above_m": float(above)}
    if float(np.linalg.norm(bpos[:2] - env.initial_positions[1][:2])) > 0.01:
        return "base_moved", {}
    for o in env.objects[2:]:
        top = env.object_position(o)[2] + o.half_extents[2] + target.half_extents[2]
        if abs(pos[2] - top) <= RESTING_ON and np.linalg.norm(pos[:2] - env.object_position(o)[:2]) < 0.05:
            return "on_other", {}
    offset = float(np.linalg.norm(pos[:2] - bpos[:2]))
    on_base = bpos[2] + base.half_extents[2] + target.half_extents[2]
    if abs(pos[2] - on_base) <= RESTING_ON:
        return "off_centre", {"offset_m": offset}
    if offset <= BESIDE:
        return "beside_base", {"distance_m": offset}
    return "dropped_away", {"distance_m": offset}


def run_episode(env: Any, policy: Any, seed: int, family: str) -> tuple[str, dict[str, float]]:
    """One closed-loop episode; returns (outcome, numbers that qualify it)."""
    start = env.reset(seed=seed, options={"family": family})
    policy.reset()
    target = env.target
    trace: dict[str, Any] = {"first_low_close": None, "closest": math.inf, "target_raised": False}

    def on_step(_obs: dict[str, Any], _info: dict[str, Any]) -> None:
        ee = env.ee_state()  # (x, y, z, yaw, opening)
        if env.object_position(target)[2] - env.initial_positions[0][2] > LIFTED:
            trace["target_raised"] = True
        trace["closest"] = min(
            trace["closest"], float(np.linalg.norm(ee[:2] - env.object_position(target)[:2]))
        )
        if trace["first_low_close"] is None and ee[4] < CLOSED_OPENING and ee[2] < LOW:
            dist = [np.linalg.norm(ee[:2] - env.object_position(o)[:2]) for o in env.objects]
            yaw_err = wrap_angle(grasp_yaw(target.shape, env.object_yaw(target)) - ee[3])
            trace["first_low_close"] = (int(np.argmin(dist)), yaw_err)

    info = rollout(env, policy.act, start=start, on_step=on_step, stop_on_success=False).info
    if family == "pick":
        return _pick_outcome(env, trace, bool(info["success"]))
    if family == "place":
        return _place_outcome(env, trace, bool(info["success"]))
    return _push_outcome(env, str(info["direction"]), bool(info["success"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="policy directory")
    p.add_argument("--episodes", type=int, default=30, help="episodes per split and family")
    p.add_argument("--splits", default="train,unseen")
    p.add_argument("--families", default="pick,push,place")
    p.add_argument("--out", help="JSON path (default: CHECKPOINT/../failure_modes.json)")
    args = p.parse_args()
    torch.set_num_threads(1)
    policy = VLAPolicy.from_pretrained(args.checkpoint).eval()
    result: dict[str, Any] = {"checkpoint": str(Path(args.checkpoint).resolve()), "episodes": args.episodes}
    table: dict[str, dict[str, Any]] = {}
    for split in args.splits.split(","):
        env = make_env(ENV, cameras=policy.cfg.cameras, image_size=policy.cfg.image_size, split=split)
        try:
            for family in args.families.split(","):
                outcomes: Counter[str] = Counter()
                details: dict[str, list[float]] = {}
                for i in range(args.episodes):
                    outcome, numbers = run_episode(env, policy, EVAL_SEED + i, family)
                    outcomes[outcome] += 1
                    for k, v in numbers.items():
                        details.setdefault(f"{outcome}: {k}", []).append(round(v, 3))
                table[f"{split}/{family}"] = {"outcomes": dict(outcomes.most_common()), "details": details}
                print(
                    f"{split}/{family}: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()),
                    flush=True,
                )
        finally:
            env.close()
    result["table"] = table
    out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "failure_modes.json"
    atomic_write_json(out, result)
    for key, row in table.items():
        for name, values in row["details"].items():
            print(f"  {key} {name}: median {float(np.median(values)):.3g} over {len(values)}")
    print(f"-> {out}")
    print(json.dumps({k: v["outcomes"] for k, v in table.items()}))


if __name__ == "__main__":
    main()
