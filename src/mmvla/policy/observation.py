"""Validation and conversion of one raw observation (as the environment or a robot client sends it)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


class ObservationError(ValueError):
    """An observation the policy cannot act on; the message names the offending key."""


def validate_observation(
    obs: Mapping[str, Any], cameras: Sequence[str], image_size: int, state_dim: int
) -> None:
    """Raise :class:`ObservationError` if ``obs`` is not a valid single-step observation.

    Expected: one uint8 (H, W, 3) array per camera with H = W = ``image_size``, "state" a finite
    float vector (state_dim,), "instruction" a non-empty string.
    """
    if not isinstance(obs, Mapping):
        raise ObservationError(f"observation must be a mapping, got {type(obs).__name__}")
    for cam in cameras:
        if cam not in obs:
            raise ObservationError(f"observation is missing camera {cam!r}")
        img = obs[cam]
        if not isinstance(img, np.ndarray):
            raise ObservationError(f"camera {cam!r}: expected a numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8:
            raise ObservationError(f"camera {cam!r}: expected dtype uint8, got {img.dtype}")
        if img.shape != (image_size, image_size, 3):
            raise ObservationError(
                f"camera {cam!r}: expected shape {(image_size, image_size, 3)}, got {img.shape}"
            )
    if "state" not in obs:
        raise ObservationError("observation is missing 'state'")
    if isinstance(obs["state"], (str, bytes, bytearray)):  # np.asarray would copy it at 4 bytes a char
        raise ObservationError(
            f"'state': expected a numeric vector of shape ({state_dim},), got a string of {len(obs['state'])}"
        )
    state = np.asarray(obs["state"])
    if state.shape != (state_dim,) or not np.issubdtype(state.dtype, np.number):
        raise ObservationError(
            f"'state': expected a numeric vector of shape ({state_dim},), got {state.dtype} {state.shape}"
        )
    if not np.isfinite(state).all():
        raise ObservationError("'state' contains NaN or Inf")
    text = obs.get("instruction")
    if not isinstance(text, str) or not text.strip():
        raise ObservationError("'instruction' must be a non-empty string")


def observation_to_batch(
    obs: Mapping[str, Any], cameras: Sequence[str]
) -> tuple[dict[str, Tensor], list[str], Tensor]:
    """One observation -> (images {cam: (1, 3, H, W) uint8}, [instruction], state (1, S) float32)."""
    images = {c: torch.from_numpy(np.ascontiguousarray(obs[c])).permute(2, 0, 1)[None] for c in cameras}
    state = torch.as_tensor(np.asarray(obs["state"], dtype=np.float32))[None]
    return images, [str(obs["instruction"])], state
