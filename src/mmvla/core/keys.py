"""Every feature key, schema name, split and control name of the project, in one place.

Feature keys follow LeRobot's dataset schema (``observation.state``, ``action``, ...); the tabletop's
state and action names are its dataset columns' names. Lower layers (``sim``, ``data``, ``policy``)
import these instead of each other.
"""

from __future__ import annotations

# LeRobot feature keys.
STATE_KEY = "observation.state"
ACTION_KEY = "action"
ENV_STATE_KEY = "observation.environment_state"  # LeRobot's name for privileged simulator state
IMAGE_PREFIX = "observation.images."

# The tabletop's dataset schema.
ROBOT_TYPE = "mmvla_tabletop"
STATE_NAMES: tuple[str, ...] = ("x", "y", "z", "yaw", "gripper")
ACTION_NAMES: tuple[str, ...] = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
TABLETOP_ENV_STATE: tuple[str, ...] = (
    "target_dx",
    "target_dy",
    "target_dz",
    "grasp_cos",
    "grasp_sin",
    "goal_dx",
    "goal_dy",
    "goal_dz",
)
METAWORLD_ENV_STATE: tuple[str, ...] = (
    "object_dx",
    "object_dy",
    "object_dz",
    "goal_dx",
    "goal_dy",
    "goal_dz",
)

# Environments by name (their specs: mmvla.sim.registry).
ENV_NAMES: tuple[str, ...] = ("tabletop", "metaworld-mt10", "metaworld-mt50")

# Evaluation: the splits a policy is scored on, the controls, the wording sets.
SPLITS: tuple[str, ...] = ("train", "unseen")
CONTROLS: tuple[str, ...] = ("none", "blank_images", "wrong_instruction", "instruction_swap")
BLIND_CONTROLS: tuple[str, ...] = ("blank_images", "wrong_instruction")  # vision-blind, language-blind
WORDING_SETS: tuple[str, ...] = (
    "canonical",
    "train",
    "heldout",
    "heldout_phrasing",
    "heldout_fresh",
    "dev",
    "everyday",
    "heldout_blind",
    "heldout_blind2",
)

# The context task: a camera failing partway through an episode (mmvla.sim.camera_failure), and what the
# safety layer does while a camera has failed (mmvla.policy.safety.SafetyConfig.fallback).
CAMERA_FAILURES: tuple[str, ...] = ("blank", "freeze")
FALLBACKS: tuple[str, ...] = ("hold", "continue", "handover")
