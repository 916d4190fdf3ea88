"""Checkpoint saves survive a kill at any point: `checkpoints/last` is always complete and loadable.

Two ways of killing a save of `checkpoints/last` (step 1 on disk, step 2 being written):

- fault injection: from its k-th filesystem call on (open, fsync, rename, exchange, unlink, mkdir,
  safetensors write, ...) every call of the save fails without touching the disk, so its clean-up
  handlers change nothing either, as after SIGKILL; for every k until the save completes;
- SIGKILL: a subprocess saving in a loop is killed after varied delays (slow).

After each kill, ``last`` must load (policy + trainer state, as ``train(resume=True)`` does) and be
*one* checkpoint: weights, config and trainer state all of step 1 or all of step 2. The next save
removes every stale temporary. The weights of step s are all equal to s, an independent reference.

A reader running while a save swaps ``last`` gets one whole checkpoint (the old or the new), never the
statistics of one save with the weights of another.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from vla_testdata import small_policy_dict

import mmvla.core.io
import mmvla.policy.checkpoint
import mmvla.training.trainer
from mmvla.core.io import durable_directory, exchange_paths, recover_directory
from mmvla.policy import PolicyConfig
from mmvla.policy.checkpoint import checkpoint_id, load_config, read_checkpoint, save_pretrained
from mmvla.policy.model import VLAPolicy
from mmvla.policy.normalize import Normalizer

MODES = {"observation.state": "mean_std", "action": "mean_std"}
OS_CALLS = ("open", "close", "fsync", "replace", "rename", "unlink", "rmdir", "mkdir", "chmod")


class _Run:
    """A tiny policy with an AdamW state, an EMA copy and a sampler generator, like ``train``."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        cfg = PolicyConfig.from_dict(small_policy_dict())
        stats = _stats(cfg)
        self.policy = VLAPolicy(cfg, Normalizer(stats, MODES)).eval()
        self.ema: nn.Module = VLAPolicy(cfg, Normalizer(stats, MODES)).eval()
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=1e-3)
        self.gen = torch.Generator().manual_seed(0)

    def set_step(self, step: int) -> None:
        """Every weight (and EMA weight, optimiser moment) becomes ``step``: a checkpoint names its step."""
        with torch.no_grad():
            for p in [*self.policy.parameters(), *self.ema.parameters()]:
                p.fill_(float(step))
        for p in self.policy.parameters():
            self.optimizer.state[p] = {
                "step": torch.tensor(float(step)),
                "exp_avg": torch.full_like(p, float(step)),
                "exp_avg_sq": torch.full_like(p, float(step)),
            }

    def save(self, last: Path, step: int) -> None:
        self.set_step(step)
        mmvla.training.trainer._checkpoint(
            last, self.policy, self.optimizer, self.ema, self.gen, step, rank=0
        )


def _stats(cfg: PolicyConfig) -> dict[str, dict[str, Any]]:
    import numpy as np

    vec = lambda n: {"mean": np.zeros(n), "std": np.ones(n), "min": -np.ones(n), "max": np.ones(n)}  # noqa: E731
    img = {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25)}
    img |= {"min": np.zeros((3, 1, 1)), "max": np.ones((3, 1, 1))}
    out = {"observation.state": vec(cfg.state_dim), "action": vec(cfg.action_dim)}
    out |= {f"observation.images.{cam}": img for cam in cfg.cameras}
    return out


_SCRATCH: list[_Run] = []


def _loaded_step(last: Path) -> int:
    """Load ``last`` as resume does; the single step all its files agree on (assertion otherwise)."""
    policy = VLAPolicy.from_pretrained(last)
    weights = {float(v) for p in policy.parameters() for v in p.detach().reshape(-1).unique()}
    assert len(weights) == 1, f"weights of several saves mixed: {sorted(weights)}"
    (w,) = weights
    _, extra = load_config(last)
    if not _SCRATCH:
        _SCRATCH.append(_Run())
    run = _SCRATCH[0]
    run.set_step(-1)
    step = mmvla.training.trainer._load_trainer_state(last, run.optimizer, run.ema, run.gen)
    moments = {float(v) for st in run.optimizer.state.values() for v in st["exp_avg"].reshape(-1).unique()}
    ema = {float(v) for p in run.ema.parameters() for v in p.detach().reshape(-1).unique()}
    assert w == extra["step"] == step and moments == ema == {float(step)}, (w, extra, step, moments, ema)
    return step


def _leftovers(last: Path) -> list[str]:
    return sorted(p.name for p in last.parent.iterdir() if p.name != last.name)


class _Killed(BaseException):
    """The simulated kill: not an OSError, so no ``except OSError`` in the save can swallow it."""


def _crash_from_call(k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """From the k-th filesystem call on, every call raises :class:`_Killed` without touching the disk.

    Like SIGKILL, the save stops changing the filesystem at call k: its clean-up handlers run, but each
    of their calls (unlink, rmdir, rename, ...) is refused too, so they change nothing.
    """
    count = [0]

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*a: Any, **kw: Any) -> Any:
            count[0] += 1
            if count[0] >= k:
                raise _Killed
            return fn(*a, **kw)

        return inner

    for name in OS_CALLS:
        monkeypatch.setattr(os, name, wrap(getattr(os, name)))
    for module, name in (
        (mmvla.core.io, "exchange_paths"),
        (mmvla.policy.checkpoint, "save_file"),
        (mmvla.training.trainer, "save_file"),
    ):
        monkeypatch.setattr(module, name, wrap(getattr(module, name)))


def _save_files(last: Path, step: int) -> None:
    """A checkpoint's file set (weights, config, stats, trainer state) written as ``_checkpoint`` writes
    it, every file naming ``step``: the cheap stand-in for a policy in the exhaustive kill test."""
    with durable_directory(last) as tmp:
        mmvla.policy.checkpoint.save_file(
            {"w": torch.full((64,), float(step))}, str(tmp / "model.safetensors")
        )
        mmvla.core.io.atomic_write_json(tmp / "config.json", {"extra": {"step": step}})
        mmvla.core.io.atomic_write_json(tmp / "stats.json", {"step": step})
        mmvla.training.trainer.save_file(
            {"rng": torch.full((8,), float(step))}, str(tmp / "trainer_state.safetensors")
        )
        mmvla.core.io.atomic_write_json(tmp / "trainer_state.json", {"step": step})


def _files_step(last: Path) -> int:
    """The single step every file of ``last`` names (assertion otherwise)."""
    import json

    from safetensors.torch import load_file

    steps = {
        float(load_file(str(last / "model.safetensors"))["w"].unique().item()),
        float(load_file(str(last / "trainer_state.safetensors"))["rng"].unique().item()),
        json.loads((last / "config.json").read_text())["extra"]["step"],
        json.loads((last / "stats.json").read_text())["step"],
        json.loads((last / "trainer_state.json").read_text())["step"],
    }
    assert len(steps) == 1, f"files of several saves mixed: {steps}"
    return int(steps.pop())


def _killed(save: Callable[[], None], k: int) -> bool:
    """Run ``save`` killed at filesystem call k; True when it completed before call k."""
    with pytest.MonkeyPatch.context() as mp:
        _crash_from_call(k, mp)
        try:
            save()
        except _Killed:
            return False
    return True


def _check_fault_injection(
    tmp_path: Path,
    save: Callable[[Path, int], None],
    loaded_step: Callable[[Path], int],
    points: Callable[[int], bool] = lambda k: True,
    recovery: bool = False,
) -> int:
    """For k = 1, 2, ...: step 1 on disk, a save of step 2 killed at call k, then checks; returns the number of
    filesystem calls of a whole save. ``points`` picks the k that are checked (all by default); with
    ``recovery``, :func:`recover_directory` runs after the kill, as ``train`` does before resuming."""
    k, completed = 0, False
    while not completed:
        k += 1
        assert k < 500, "the save never completed"
        last = tmp_path / f"k{k}" / "checkpoints" / "last"
        if not points(k):  # not checked: only whether the save completes before call k
            completed = _killed(functools.partial(save, last, 2), k)
            continue
        save(last, 1)
        completed = _killed(functools.partial(save, last, 2), k)
        if recovery:  # what train() runs first (the fallback may leave `last` renamed aside)
            recover_directory(last)
        assert last.is_dir(), f"no checkpoints/last after a kill at call {k}: {_leftovers(last)}"
        step = loaded_step(last)
        assert step in (1, 2) and (step == 2 or not completed), (k, step)
        save(last, 3)  # the next save: cleans every stale temporary
        assert _leftovers(last) == [], (k, _leftovers(last))
        assert loaded_step(last) == 3
    return k


def test_save_killed_at_every_filesystem_call_leaves_a_complete_last(tmp_path: Path) -> None:
    calls = _check_fault_injection(tmp_path, _save_files, _files_step)
    assert calls > 20  # the save was cut at every one of its steps (writes, fsyncs, renames, ...)


def test_fallback_without_rename_exchange_also_survives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where RENAME_EXCHANGE is unsupported: two renames; a kill between them is undone by recovery."""
    monkeypatch.setattr(mmvla.core.io, "exchange_paths", lambda a, b: False)
    _check_fault_injection(tmp_path, _save_files, _files_step, recovery=True)


def test_policy_checkpoint_killed_mid_save_resumes(tmp_path: Path) -> None:
    """The real ``_checkpoint`` (policy, AdamW, EMA, generator) killed at spread-out calls loads as resume does."""
    run = _Run()
    _check_fault_injection(tmp_path, run.save, _loaded_step, points=lambda k: k % 9 == 1)


def test_recovery_restores_last_killed_between_the_fallback_renames(tmp_path: Path) -> None:
    last = tmp_path / "checkpoints" / "last"
    with durable_directory(last) as tmp:
        (tmp / "a.txt").write_text("old")
    os.rename(last, last.parent / ".last.prev-x1")  # the kill came right after the first rename
    assert recover_directory(last) and (last / "a.txt").read_text() == "old"
    assert not recover_directory(last)  # nothing left to do


def test_exchange_paths_swaps_directories(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("in a")
    (b / "y").write_text("in b")
    if not exchange_paths(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) unsupported here")
    assert (a / "y").read_text() == "in b" and (b / "x").read_text() == "in a"


_LOOP = """
import sys
sys.path.insert(0, {tests!r})
from policy.test_checkpoint_crash import _Run
from pathlib import Path
run = _Run()
last = Path({last!r})
step = 2
print("ready", flush=True)
while True:
    run.save(last, step)
    step += 1
"""


@pytest.mark.slow
def test_sigkill_at_varied_delays_then_resume(tmp_path: Path) -> None:
    run = _Run()
    last = tmp_path / "checkpoints" / "last"
    rng = random.Random(0)
    tests = str(Path(__file__).resolve().parents[1])
    steps = []
    for _ in range(12):
        run.save(last, 1)
        code = _LOOP.format(tests=tests, last=str(last))
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        steps.append(_loaded_step(last))  # loadable, and one consistent save
        run.save(last, 1)
        assert _leftovers(last) == []
    assert len(set(steps)) > 3, steps  # the kills landed at different saves


def _reference_id(directory: Path) -> str:
    h = hashlib.sha256()
    for rel in sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()):
        data = (directory / rel).read_bytes()
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def test_checkpoint_id_covers_every_file(tmp_path: Path) -> None:
    run = _Run()
    last = tmp_path / "last"
    run.save(last, 1)
    ident = checkpoint_id(last)
    assert ident == _reference_id(last)
    for name in ("model.safetensors", "config.json", "stats.json", "trainer_state.json"):
        data = (last / name).read_bytes()
        (last / name).write_bytes(data + b" ")
        assert checkpoint_id(last) != ident, f"{name} is not covered by checkpoint_id"
        (last / name).write_bytes(data)
    assert checkpoint_id(last) == ident


def _save_policy_step(last: Path, step: int) -> None:
    """``save_pretrained`` of a policy whose weights are all ``step`` and whose state mean is ``step``."""
    cfg = PolicyConfig.from_dict(small_policy_dict())
    stats = _stats(cfg)
    stats["observation.state"]["mean"] = stats["observation.state"]["mean"] + step
    policy = VLAPolicy(cfg, Normalizer(stats, MODES))
    with torch.no_grad():
        for p in policy.parameters():
            p.fill_(float(step))
    save_pretrained(policy, last)


def _read_step(last: Path) -> int:
    """``read_checkpoint`` of ``last``: the one step its statistics and weights agree on (assertion otherwise)."""
    _, normalizer, state = read_checkpoint(last)
    means = {float(v) for v in normalizer.stats["observation.state"]["mean"]}
    weights = {float(v) for t in state.values() if t.is_floating_point() for v in t.unique()}
    assert len(means) == 1 and means == weights, f"statistics of save {means}, weights of {weights}"
    return int(means.pop())


@pytest.mark.parametrize(("swap", "expected"), [("exchange only", 1), ("whole save", 2)])
def test_reader_during_a_save_gets_one_whole_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swap: str, expected: int
) -> None:
    """A save swaps ``last`` between the reader's opening of the statistics and of the weights: the reader
    gets one version.

    "exchange only": the new directory is swapped in, the old one kept aside: the reader finishes the
    old one (step 1). "whole save": the old one is also removed under the read: the reader starts
    again on the new one (step 2). Reading by path would mix step-1 statistics with step-2 weights.
    """
    last = tmp_path / "checkpoints" / "last"
    _save_policy_step(last, 1)
    new = tmp_path / "checkpoints" / "new"
    _save_policy_step(new, 2)
    real_open, opened, fired = os.open, [], []

    def open_then_swap(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if dir_fd is not None:  # a file opened relative to the directory
            opened.append(path)
        if len(opened) == 2 and not fired:  # config and statistics open, the weights not yet
            fired.append(path)
            if swap == "exchange only":
                assert exchange_paths(new, last) or pytest.skip("renameat2(RENAME_EXCHANGE) unsupported")
            else:
                _save_policy_step(last, 2)
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)
    assert _read_step(last) == expected
    monkeypatch.undo()
    assert fired and _read_step(last) == 2  # the swap did happen during the read


def test_read_checkpoint_refuses_a_fifo_or_directory_as_weights(tmp_path: Path) -> None:
    """Not a regular file: reported missing at once (a FIFO opened for reading would block forever)."""
    for kind in ("fifo", "directory"):
        last = tmp_path / kind
        _save_policy_step(last, 1)
        (last / "model.safetensors").unlink()
        os.mkfifo(last / "model.safetensors") if kind == "fifo" else (last / "model.safetensors").mkdir()
        with pytest.raises(FileNotFoundError, match=r"checkpoint weights not found: .*model\.safetensors"):
            read_checkpoint(last)
