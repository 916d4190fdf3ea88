"""``mmvla eval``: closed-loop success rates of a checkpoint, per split and task family."""

from __future__ import annotations

import argparse

from mmvla.core.keys import CAMERA_FAILURES, CONTROLS, ENV_NAMES, FALLBACKS, SPLITS
from mmvla.evaluation.evaluate import (
    EvalConfig,
    evaluate,
    evaluate_wordings,
    format_metrics,
    format_wordings,
    read_rephrase_file,
)
from mmvla.evaluation.shifts import evaluate_shifts, format_shift_table, worst_axis
from mmvla.modules.lexicon import LEXICONS
from mmvla.policy.runtime import CHUNK_MODES
from mmvla.sim.tabletop.shift import parse_axes, severity_value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        help="policy directory (a run's policy/ folder); with --server optional (then checked against it)",
    )
    p.add_argument(
        "--server", metavar="WS_URL", help="act through a running `mmvla serve` (ws://host:port) instead"
    )
    p.add_argument(
        "--env",
        default="tabletop",
        choices=ENV_NAMES,
        help="simulator (default tabletop); metaworld-mt10/-mt50 cycle their tasks: --episodes 500 = 50 per MT10 task",
    )
    p.add_argument("--episodes", type=int, default=100, help="episodes per split")
    p.add_argument(
        "--split", default=None, choices=(*SPLITS, "all"), help="default all (with --shift: train)"
    )
    p.add_argument("--out", help="directory for metrics.json, episodes.json and videos/")
    p.add_argument("--workers", type=int, default=2, help="parallel processes")
    p.add_argument("--seed", type=int, default=1_000_000, help="first episode seed")
    p.add_argument("--max-steps", type=int, help="episode time limit in steps (default: the environment's)")
    p.add_argument(
        "--families", help="comma-separated task families or Meta-World tasks (default: the environment's)"
    )
    p.add_argument(
        "--control",
        default="none",
        choices=CONTROLS,
        help="blind control, or instruction_swap (another object on the table becomes the target)",
    )
    p.add_argument("--chunk-mode", default="ensemble", choices=CHUNK_MODES)
    p.add_argument(
        "--video",
        nargs="?",
        const=4,
        type=int,
        default=0,
        metavar="N",
        help="record N episodes per split as GIF",
    )
    p.add_argument(
        "--rephrase", help="file of 'canonical<TAB>user wording' lines given to the policy instead"
    )
    p.add_argument(
        "--wordings",
        default="canonical",
        metavar="SETS",
        help="comma-separated built-in wording sets: canonical, train, heldout (words training never "
        "used), heldout_fresh (a second such vocabulary), heldout_phrasing, dev (the lexical grounding's "
        "development words: not held out), everyday (shades, sizes, shape adjectives and common verbs "
        "around known words), heldout_blind and heldout_blind2 (a third and a fourth, each written "
        "before a round of the reader's rules); several sets run the same "
        "episodes each and are compared with the first (paired test)",
    )
    p.add_argument(
        "--shift",
        metavar="AXES",
        help="distribution-shift suite: 'all' or comma-separated axes (camera, lighting, table, object_size, "
        "distractors, gripper_start, image, language); runs the clean episodes and each shifted variant on "
        "the same seeds, --episodes per split and cell, and writes OUT/shift.json",
    )
    p.add_argument(
        "--severities",
        default="mild,medium,strong",
        help="with --shift: comma-separated severities (mild, medium, strong or numbers in (0, 3])",
    )
    p.add_argument(
        "--camera-failure",
        choices=CAMERA_FAILURES,
        help="the context task: a camera goes blank or freezes partway through every episode, from a step "
        "drawn from the episode seed (the wrist camera and the state continue)",
    )
    p.add_argument("--failure-camera", default="front", help="the camera that fails (default front)")
    p.add_argument(
        "--failure-start",
        default="4,16",
        metavar="LO,HI",
        help="inclusive range of the first failed step (observation index, >= 1; default 4,16)",
    )
    p.add_argument(
        "--fallback",
        choices=FALLBACKS,
        help="the safety layer's fallback while a camera has failed (local checkpoint; default: hold): hold "
        "position, continue acting for at most --continue-steps steps, or hand over (stop the episode)",
    )
    p.add_argument("--continue-steps", type=int, default=8, help="N of --fallback continue (default 8)")
    p.add_argument(
        "--lexicon",
        choices=LEXICONS,
        help="how the local policy reads words training never showed it: wordnet (rewritten into the known "
        "word WordNet relates them to) or none (read as given); default: the checkpoint's setting",
    )
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:

    if not args.checkpoint and not args.server:
        raise ValueError("give --checkpoint DIR or --server ws://host:port")
    wordings = [w.strip() for w in args.wordings.split(",") if w.strip()]
    split = args.split or ("train" if args.shift else "all")
    cfg = EvalConfig(
        episodes=args.episodes,
        split=split,
        workers=args.workers,
        seed=args.seed,
        families=tuple(f for f in args.families.split(",") if f) if args.families else None,
        control=args.control,
        chunk_mode=args.chunk_mode,
        video_episodes=args.video,
        rephrase=read_rephrase_file(args.rephrase) if args.rephrase else {},
        env=args.env,
        max_steps=args.max_steps,
        server=args.server,
        wordings=wordings[0] if wordings else "canonical",
        camera_failure=args.camera_failure,
        failure_camera=args.failure_camera,
        failure_start=_int_pair(args.failure_start, "--failure-start"),
        fallback=args.fallback,
        continue_steps=args.continue_steps,
        lexicon=args.lexicon,
    )
    if args.shift:
        if not args.checkpoint:
            raise ValueError("--shift needs --checkpoint (the suite runs the policy locally)")
        axes = parse_axes(args.shift)
        sev = [severity_value(x.strip(), "--severities") for x in args.severities.split(",") if x.strip()]
        result = evaluate_shifts(args.checkpoint, cfg, axes, sev, args.out, progress=not args.quiet)
        print(format_shift_table(result["table"]))
        worst = worst_axis(result["table"])
        if worst is not None:
            print(f"hurts most: {worst[0]} (success {worst[1]:.0%} at its strongest severity)")
        print(f"{result['episodes']} episodes in {result['seconds']:.0f} s")
        if args.out:
            print(f"shift table: {args.out}/shift.json")
        return 0
    if len(wordings) > 1:
        if not args.out:
            raise ValueError("--wordings with several sets needs --out (each set's results are kept)")
        metrics = evaluate_wordings(args.checkpoint, cfg, wordings, args.out, progress=not args.quiet)
        print(format_metrics(metrics))
        print(format_wordings(metrics["wordings"]))
    else:
        metrics = evaluate(args.checkpoint, cfg, args.out, progress=not args.quiet)
        print(format_metrics(metrics))
    if args.out:
        print(f"metrics: {args.out}/metrics.json")
    return 0


def _int_pair(text: str, flag: str) -> tuple[int, int]:
    """``"4,16"`` -> (4, 16); a ValueError naming ``flag`` otherwise."""
    try:
        lo, hi = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} must be two integers LO,HI, got {text!r}") from None
    return lo, hi
