"""Policy checkpoints: ``model.safetensors`` + ``config.json`` + ``stats.json``; nothing is unpickled.

This module reads and writes the files of any module with a ``cfg`` (:class:`PolicyConfig`) and a
``normalizer`` (:class:`Normalizer`); it does not know the policy class, which builds itself from what
:func:`read_checkpoint` returns (:meth:`mmvla.policy.model.VLAPolicy.from_pretrained`).

A checkpoint directory is replaced durably (:func:`mmvla.core.io.durable_directory`): every file and the
directory are fsynced and the new directory is swapped in with one atomic rename, so a SIGKILL or a
power cut at any point leaves a complete, loadable checkpoint (the previous or the new one). A reader
running during a save gets one of the two whole, never a mix (:func:`read_version`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from mmvla import __version__
from mmvla.core.io import atomic_write_json, durable_directory, read_json
from mmvla.policy.config import PolicyConfig
from mmvla.policy.normalize import Normalizer

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATS = "stats.json"
_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")  # files opened relative to a directory


class Checkpointable(Protocol):
    """What a checkpoint holds of a policy: its weights, config and normalisation statistics."""

    cfg: PolicyConfig
    normalizer: Normalizer

    def state_dict(self) -> dict[str, Any]: ...


def write_policy_files(policy: Checkpointable, directory: Path, extra: dict[str, Any] | None = None) -> None:
    """Write the three checkpoint files into an existing ``directory`` (not atomic by itself)."""
    state = {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()}
    save_file(state, str(directory / WEIGHTS), metadata={"format": "pt", "mmvla_version": __version__})
    atomic_write_json(directory / CONFIG, {**policy.cfg.to_dict(), **({"extra": extra} if extra else {})})
    atomic_write_json(directory / STATS, policy.normalizer.to_dict())


def save_pretrained(
    policy: Checkpointable, directory: str | os.PathLike[str], extra: dict[str, Any] | None = None
) -> Path:
    """Durably (re)write a checkpoint directory for ``policy`` (see the module docstring); returns its path."""
    directory = Path(directory)
    with durable_directory(directory) as tmp:
        write_policy_files(policy, tmp, extra)
    return directory


def checkpoint_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Every regular file of a checkpoint directory (recursive; hidden names skipped), sorted by relative path."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    files = [
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(directory).as_posix())


def checkpoint_id(directory: str | os.PathLike[str]) -> str:
    """sha256 (hex) over every file of a checkpoint: weights, config, statistics (and trainer state if present).

    For each file of :func:`checkpoint_files`, in order: its relative POSIX path (UTF-8), a NUL byte,
    its size as 8 little-endian bytes, its bytes. Two checkpoints share an id exactly when they hold
    the same files with the same contents, so a server and a client agree on weights *and* the
    normalisation statistics and config that decide the actions.
    """
    directory = Path(directory)
    h = hashlib.sha256()
    for path in checkpoint_files(directory):
        h.update(path.relative_to(directory).as_posix().encode("utf-8") + b"\0")
        h.update(path.stat().st_size.to_bytes(8, "little"))
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_config(directory: str | os.PathLike[str]) -> tuple[PolicyConfig, dict[str, Any]]:
    """Read and validate ``config.json``; returns (config, extra metadata)."""
    return _config_from(read_json(Path(directory) / CONFIG, "policy config"), Path(directory) / CONFIG)


def _config_from(d: Any, path: Path) -> tuple[PolicyConfig, dict[str, Any]]:
    if not isinstance(d, dict):
        raise ValueError(f"policy config {path} must be a JSON object")
    extra = d.pop("extra", {})
    try:
        return PolicyConfig.from_dict(d), extra
    except TypeError as e:
        raise ValueError(f"policy config {path} is malformed: {e}") from e


def _json_from(data: bytes | None, path: Path, what: str) -> Any:
    """``read_json``'s parsing and errors, for bytes already read (None: the file is absent)."""
    if data is None:
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from e


def read_version(directory: Path, names: Sequence[str], attempts: int = 5) -> dict[str, bytes | None]:
    """Bytes of each file of ``names`` in ``directory`` (None when absent), all from one version of it.

    The files are opened relative to one file descriptor of the directory, so a save running meanwhile
    (:func:`mmvla.core.io.durable_directory` swaps the whole directory) cannot mix files of the old
    and the new checkpoint. When a file is absent and the name ``directory`` now leads to another
    directory (the save swapped it and removed the old version under the read), the read starts again,
    up to ``attempts`` times. A name that is not a regular file (a directory, a FIFO) counts as absent.
    Without ``dir_fd`` support (not Linux/macOS) the files are read by path.
    """
    if not _DIR_FD:
        return {n: (directory / n).read_bytes() if (directory / n).is_file() else None for n in names}
    out: dict[str, bytes | None] = {}
    for _ in range(attempts):
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            out = {}
            for name in names:
                try:  # O_NONBLOCK: a FIFO planted under the name must not block the open
                    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0), dir_fd=dfd)
                except FileNotFoundError:
                    out[name] = None
                    continue
                try:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        out[name] = None  # not a regular file: absent
                        continue
                    with os.fdopen(fd, "rb", closefd=False) as f:
                        out[name] = f.read()
                finally:
                    os.close(fd)
            if all(v is not None for v in out.values()):
                return out
            now, read = os.stat(directory), os.fstat(dfd)
            if (now.st_dev, now.st_ino) == (read.st_dev, read.st_ino):
                return out  # the same directory: the file is really absent
        finally:
            os.close(dfd)
    return out


def read_checkpoint(
    directory: str | os.PathLike[str], map_location: str = "cpu"
) -> tuple[PolicyConfig, Normalizer, dict[str, torch.Tensor]]:
    """Read a checkpoint written by :func:`save_pretrained`: (config, statistics, weights on ``map_location``).

    Raises ``FileNotFoundError`` for a missing directory or file and ``ValueError`` naming the file for
    a malformed config, missing statistics or unreadable weights. The weights are checked against the
    policy by :func:`load_state_strict`. The three files come from one version of the directory even
    while a save replaces it (:func:`read_version`): never the config of one save with the weights of
    another.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    files = read_version(directory, (CONFIG, STATS, WEIGHTS))  # one version even while a save runs
    cfg, _ = _config_from(_json_from(files[CONFIG], directory / CONFIG, "policy config"), directory / CONFIG)
    normalizer = Normalizer.from_dict(_json_from(files[STATS], directory / STATS, "normalisation statistics"))
    path, weights = directory / WEIGHTS, files[WEIGHTS]
    if weights is None:
        raise FileNotFoundError(f"checkpoint weights not found: {path}")
    try:
        state = load(weights)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"checkpoint weights {path} are unreadable: {e}") from e
    if map_location != "cpu":
        state = {k: v.to(map_location) for k, v in state.items()}
    return cfg, normalizer, state


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that names every missing, unexpected or mis-shaped tensor of ``source``."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors: {', '.join(missing[:8])}{' …' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(
            f"unexpected tensors: {', '.join(unexpected[:8])}{' …' if len(unexpected) > 8 else ''}"
        )
    if shapes:
        problems.append("wrong shapes: " + "; ".join(shapes[:8]))
    if problems:
        raise ValueError(f"checkpoint {source} does not match the policy config: " + " | ".join(problems))
    module.load_state_dict(state, strict=True)
