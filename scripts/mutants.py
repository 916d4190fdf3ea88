#!/usr/bin/env python3
"""Mutation check of the glue: each single-line mutation, alone, must fail at least one fast test.

For every mutation below the script copies ``src/``, ``tests/`` and ``pyproject.toml`` into a temporary
directory, applies the mutation there (the source text must occur exactly once), and runs the named
fast tests from the copy with ``PYTHONPATH`` at the copy's ``src`` (so the editable install in the venv
is not what gets imported: checked before every run). A mutation is *killed* when pytest reports a
failed test (exit status 1), *survived* when the tests pass, and an *error* otherwise (the text was not
found, collection failed, or the run timed out). Before any mutation the same tests run on an unmutated
copy: they must pass, or no verdict means anything.

``listed`` marks the mutations named by issue 21 (every one must be killed); the others probe the same
glue (training loop, heads, decode). Results go to ``benchmarks/results/mutants.json``.

    .venv/bin/python scripts/mutants.py                  # every mutation
    .venv/bin/python scripts/mutants.py --only flow_head_ignores_token_mask --no-baseline
    .venv/bin/python scripts/mutants.py --list
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "mutants.json"


@dataclass(frozen=True)
class Mutant:
    """One mutation: replace ``old`` (exactly one occurrence) by ``new`` in ``file``."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str
    listed: bool = False


GLUE = "tests/policy/test_glue.py"
SUCCESS = "tests/sim/tabletop/test_success_criteria.py"
CONTROLS = "tests/evaluation/test_blind_controls.py"
E2E = "tests/test_end_to_end.py"
OPTIM = "tests/training/test_optimisation.py"
FUSION = "tests/modules/test_cross_attention_fusion.py"

MUTANTS: tuple[Mutant, ...] = (
    # ---- the mutations issue 21 names
    Mutant(
        "language_mask_inverted",
        "src/mmvla/policy/model.py",
        "lang_mask = torch.cat([lang.mask.any(-1, keepdim=True), lang.mask], dim=1)",
        "lang_mask = torch.cat([lang.mask.any(-1, keepdim=True), ~lang.mask], dim=1)",
        (GLUE,),
        "the language padding mask inverted in the policy's encode path",
        listed=True,
    ),
    Mutant(
        "decode_without_unnormalisation",
        "src/mmvla/policy/model.py",
        "return self.normalizer.unnormalize(ACTION_KEY, pred).clamp(-1.0, 1.0)",
        "return pred.clamp(-1.0, 1.0)",
        (GLUE,),
        "the action un-normalisation dropped from the policy's decode",
        listed=True,
    ),
    Mutant(
        "flow_head_ignores_token_mask",
        "src/mmvla/modules/heads.py",
        "keep = torch.cat([fused.mask, torch.ones_like(fused.mask[:, :1])], dim=1)",
        "keep = torch.ones_like(torch.cat([fused.mask, fused.mask[:, :1]], dim=1))",
        (GLUE,),
        "the flow head ignoring the fused-token mask",
        listed=True,
    ),
    Mutant(
        "lift_threshold_5mm",
        "src/mmvla/sim/tabletop/env.py",
        "LIFT_HEIGHT = 0.05",
        "LIFT_HEIGHT = 0.005",
        (SUCCESS,),
        "the pick success threshold cut to 5 mm",
        listed=True,
    ),
    Mutant(
        "push_threshold_5mm",
        "src/mmvla/sim/tabletop/env.py",
        "PUSH_DISTANCE = 0.06",
        "PUSH_DISTANCE = 0.005",
        (SUCCESS,),
        "the push success threshold cut to 5 mm",
        listed=True,
    ),
    Mutant(
        "pick_any_object",
        "src/mmvla/sim/tabletop/env.py",
        "return bool(pos[2] - start[2] >= LIFT_HEIGHT and self.is_pinched(target))",
        "return any(self.data.xpos[o.body_id][2] - s[2] >= LIFT_HEIGHT and self.is_pinched(o)"
        " for o, s in zip(self.objects, self.initial_positions))",
        (SUCCESS,),
        "pick success for any object lifted (the wrong object lifted counts)",
        listed=True,
    ),
    Mutant(
        "push_either_way",
        "src/mmvla/sim/tabletop/env.py",
        "moved = (pos[0] - start[0]) * sign",
        "moved = abs(pos[0] - start[0])",
        (SUCCESS,),
        "push success in either direction (pushed the wrong way counts)",
        listed=True,
    ),
    Mutant(
        "place_without_release",
        "src/mmvla/sim/tabletop/env.py",
        "            and not self.is_pinched(target)\n            and not any(self.finger_contacts(target))\n",
        "",
        (SUCCESS,),
        "place success without releasing the object",
        listed=True,
    ),
    Mutant(
        "evaluation_never_succeeds",
        "src/mmvla/sim/rollout.py",
        'success = success or bool(info.get("success", False))',
        'success = success and bool(info.get("success", False))',
        (E2E,),
        "evaluation never counting a success",
        listed=True,
    ),
    Mutant(
        "wrong_instruction_noop",
        "src/mmvla/evaluation/controls.py",
        "return str(np.random.default_rng(seed).choice(others)) if others else canonical",
        "return canonical",
        (CONTROLS,),
        "the wrong-instruction control made a no-op",
        listed=True,
    ),
    Mutant(
        "blank_images_noop",
        "src/mmvla/evaluation/controls.py",
        "return dict(obs, **{c: np.zeros_like(obs[c]) for c in cameras})",
        "return dict(obs, **{c: obs[c] for c in cameras})",
        (CONTROLS,),
        "the blank-images control made a no-op",
        listed=True,
    ),
    Mutant(
        "cross_attention_is_self_attention",
        "src/mmvla/modules/fusion/cross_attention.py",
        "others = [o for o in self.names if o != m] or [m]",
        "others = [m]",
        (FUSION,),
        "cross-attention fusion replaced by per-modality self-attention",
        listed=True,
    ),
    # ---- further mutations of the same glue
    Mutant(
        "ema_wrong_weight",
        "src/mmvla/training/trainer.py",
        "pe.lerp_(p, 1 - train_cfg.ema_decay)",
        "pe.lerp_(p, train_cfg.ema_decay)",
        (OPTIM,),
        "EMA update weighs the new weights by decay instead of 1 - decay",
    ),
    Mutant(
        "no_gradient_clipping",
        "src/mmvla/training/trainer.py",
        'train_cfg.grad_clip or float("inf")',
        'float("inf")',
        (OPTIM,),
        "gradient clipping switched off",
    ),
    Mutant(
        "weight_decay_on_vectors",
        "src/mmvla/training/trainer.py",
        "(decay if p.dim() >= 2 else no_decay).append(p)",
        "(decay if p.dim() >= 1 else no_decay).append(p)",
        (OPTIM,),
        "weight decay on biases and norms too",
    ),
    Mutant(
        "train_ignores_weight_decay",
        "src/mmvla/training/trainer.py",
        "param_groups(policy, train_cfg.weight_decay)",
        "param_groups(policy, 0.0)",
        (OPTIM,),
        "the training loop ignores the configured weight decay",
    ),
    Mutant(
        "masked_mean_ignores_mask",
        "src/mmvla/modules/heads.py",
        "w = mask.to(x.dtype).expand_as(x)",
        "w = torch.ones_like(x)",
        (GLUE,),
        "head losses average over padded chunk steps too",
    ),
    Mutant(
        "decode_without_clip",
        "src/mmvla/policy/model.py",
        "return self.normalizer.unnormalize(ACTION_KEY, pred).clamp(-1.0, 1.0)",
        "return self.normalizer.unnormalize(ACTION_KEY, pred)",
        (GLUE,),
        "decoded actions not clipped to [-1, 1]",
    ),
    Mutant(
        "modality_dropout_at_eval",
        "src/mmvla/policy/model.py",
        "        if self.training:\n            g = self.cfg\n",
        "        if True:\n            g = self.cfg\n",
        (GLUE,),
        "camera/instruction dropout applied in eval mode too",
    ),
    Mutant(
        "eval_wrong_split_instruction",
        "src/mmvla/evaluation/evaluate.py",
        '                told if opts["wordings"] == "canonical"',
        '                told.upper() if opts["wordings"] == "canonical"',
        (CONTROLS,),
        "evaluation hands the policy something other than the (rephrased) instruction",
    ),
)


def _copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    shutil.copytree(ROOT / "src", dest / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def _env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy / "src")
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _imports_copy(copy: Path) -> str:
    """The file ``import mmvla`` resolves to from the copy; raises unless it is the copy's."""
    r = subprocess.run(
        [sys.executable, "-c", "import mmvla; print(mmvla.__file__)"],
        cwd=copy,
        env=_env(copy),
        capture_output=True,
        text=True,
        check=True,
    )
    path = Path(r.stdout.strip()).resolve()
    if not path.is_relative_to(copy.resolve()):
        raise RuntimeError(f"the copy at {copy} imports mmvla from {path}, not from the copy")
    return str(path)


def _pytest(copy: Path, tests: Sequence[str], timeout: float) -> tuple[int | None, str, float]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", *tests]
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=copy, env=_env(copy), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timeout", time.perf_counter() - t0
    return r.returncode, r.stdout + r.stderr, time.perf_counter() - t0


def apply(mutant: Mutant, copy: Path) -> None:
    """Apply ``mutant`` to the copy; ``ValueError`` unless its text occurs exactly once."""
    path = copy / mutant.file
    text = path.read_text()
    count = text.count(mutant.old)
    if count != 1:
        raise ValueError(f"{mutant.file}: the mutated text occurs {count} times (want 1): {mutant.old!r}")
    path.write_text(text.replace(mutant.old, mutant.new))


def run_one(mutant: Mutant, timeout: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix=f"mutant_{mutant.name}_") as tmp:
        copy = Path(tmp)
        _copy(copy)
        row: dict[str, object] = {
            "name": mutant.name,
            "file": mutant.file,
            "what": mutant.what,
            "listed": mutant.listed,
            "tests": list(mutant.tests),
        }
        try:
            apply(mutant, copy)
        except ValueError as e:
            return {**row, "result": "error", "detail": str(e), "seconds": 0.0}
        row["imported_from"] = _imports_copy(copy)
        rc, out, seconds = _pytest(copy, mutant.tests, timeout)
        failed = re.findall(r"^FAILED (\S+)", out, re.M)
        result = "killed" if rc == 1 else "survived" if rc == 0 else "error"
        detail = "" if result != "error" else (out[-1500:] if rc is not None else "timed out")
        return {**row, "result": result, "rc": rc, "killed_by": failed, "seconds": seconds, "detail": detail}


def baseline(mutants: Sequence[Mutant], timeout: float) -> dict[str, object]:
    """The union of the mutants' tests on an unmutated copy: they must pass."""
    tests = sorted({t for m in mutants for t in m.tests})
    with tempfile.TemporaryDirectory(prefix="mutant_baseline_") as tmp:
        copy = Path(tmp)
        _copy(copy)
        imported = _imports_copy(copy)
        rc, out, seconds = _pytest(copy, tests, timeout * 2)
    return {
        "tests": tests,
        "rc": rc,
        "passed": rc == 0,
        "seconds": seconds,
        "imported_from": imported,
        "tail": "" if rc == 0 else out[-3000:],
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run these mutations only")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--out", type=Path, default=RESULT, help="JSON result file")
    ap.add_argument("--write", action="store_true", help="write the JSON for an --only run too")
    args = ap.parse_args(argv)
    chosen = list(MUTANTS)
    if args.only:
        names = {m.name for m in MUTANTS}
        unknown = sorted(set(args.only) - names)
        if unknown:
            ap.error(f"unknown mutation(s): {', '.join(unknown)}")
        chosen = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:36s} {'listed' if m.listed else '      '} {m.file}: {m.what}")
        return 0
    t0 = time.perf_counter()
    base = None
    if not args.no_baseline:
        base = baseline(chosen, args.timeout)
        print(f"baseline (unmutated): {'pass' if base['passed'] else 'FAIL'} in {base['seconds']:.0f} s")
        if not base["passed"]:
            print(base["tail"])
            return 2
    rows = []
    for m in chosen:
        row = run_one(m, args.timeout)
        rows.append(row)
        by = ", ".join(row.get("killed_by", []) or [])  # type: ignore[arg-type]
        print(f"{row['result']:8s} {m.name:36s} {row['seconds']:6.1f} s  {by}", flush=True)
        if row["result"] == "error":
            print("    " + str(row["detail"]).replace("\n", "\n    ")[-1200:])

    def rate(rs: list[dict[str, object]]) -> float | None:
        return sum(r["result"] == "killed" for r in rs) / len(rs) if rs else None

    listed = [r for r in rows if r["listed"]]
    summary = {
        "mutants": len(rows),
        "killed": sum(r["result"] == "killed" for r in rows),
        "survived": [r["name"] for r in rows if r["result"] == "survived"],
        "errors": [r["name"] for r in rows if r["result"] == "error"],
        "kill_rate": rate(rows),
        "listed_kill_rate": rate(listed),
        "seconds": time.perf_counter() - t0,
    }
    out = {"summary": summary, "partial": args.only is not None, "baseline": base, "mutants": rows}
    if args.only is None or args.write:  # a partial run replaces the full result only when asked
        from mmvla.core.io import atomic_write_json

        atomic_write_json(args.out, out)

    def pct(x: object) -> str:
        return "n/a" if x is None else f"{x:.0%}"

    print(
        f"killed {summary['killed']}/{summary['mutants']} (kill rate {pct(summary['kill_rate'])}); "
        f"issue 21's mutations: {pct(summary['listed_kill_rate'])} killed"
        + (f"; survived: {', '.join(summary['survived'])}" if summary["survived"] else "")
        + (f"; errors: {', '.join(summary['errors'])}" if summary["errors"] else "")
    )
    return 0 if not summary["survived"] and not summary["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
