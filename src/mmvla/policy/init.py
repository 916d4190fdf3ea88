"""Initialise a policy from pre-trained encoders (``mmvla pretrain``) or another policy checkpoint."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

ENCODERS = "encoders.safetensors"
log = logging.getLogger(__name__)


def init_from_directory(module: torch.nn.Module, directory: str | os.PathLike[str]) -> list[str]:
    """Copy every tensor of ``directory``'s encoders.safetensors (or model.safetensors) whose name and
    shape match ``module``'s into it. Returns the copied names; raises ``ValueError`` when none match.
    """
    directory = Path(directory)
    for name in (ENCODERS, "model.safetensors"):
        path = directory / name
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"--init-from {directory}: neither {ENCODERS} nor model.safetensors found")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"--init-from {path}: unreadable safetensors file: {e}") from e
    own = module.state_dict()
    copied = [k for k, v in tensors.items() if k in own and own[k].shape == v.shape]
    if not copied:
        raise ValueError(f"--init-from {path}: no tensor matches the policy (different encoders or widths?)")
    mismatched = sorted(k for k, v in tensors.items() if k in own and own[k].shape != v.shape)
    if mismatched:  # e.g. a word embedding built from another instruction vocabulary
        log.warning(
            "--init-from %s: %d tensor(s) skipped for a shape mismatch: %s",
            path,
            len(mismatched),
            ", ".join(mismatched[:6]),
        )
    with torch.no_grad():
        for k in copied:
            own[k].copy_(tensors[k])
    return copied
