"""The ``mmvla`` command line: argument parsing only, one module per subcommand (``mmvla.cli.<name>``).

Each subcommand module imports the library at module level and exposes ``add_arguments(parser)`` and
``run(args) -> int``. ``main`` imports only the module of the subcommand given, so ``mmvla --help`` and
``mmvla collect ...`` do not pay for the whole library (torch, the simulator).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterable, Sequence

from mmvla import __version__

# name -> one-line help, in the order ``mmvla --help`` lists them.
COMMANDS: dict[str, str] = {
    "demo": "Run the whole chain on built-in defaults (about 20-25 minutes on a 2-core CPU) and write a report.",
    "collect": "Run the scripted expert in parallel processes and write a LeRobot v3.0 dataset (successes only).",
    "train": "Train a policy on a dataset (torchrun --standalone --nproc_per_node=N -m mmvla.cli train ... for DDP).",
    "eval": "Evaluate a policy checkpoint in closed loop; writes metrics.json (and GIFs with --video).",
    "compare": "Compare fusion designs, action heads or language encoders on one dataset with one budget: success on both splits, blind controls, parameters, latency, training time; resumable.",
    "pretrain": "Contrastively pre-train the vision and language encoders on (frame, instruction) pairs; start a policy from them with `mmvla train --config OUT/train_config.json --init-from OUT`.",
    "report": "Write RUN/report.html (success tables, comparison, curves, diagnostics, attention, clips; images embedded); --diagnostics first measures how much each modality matters.",
    "serve": "Serve a policy checkpoint over WebSockets (msgpack, per-connection state, safety fallback, /healthz).",
}


def build_parser(load: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The top-level parser; the subcommands in ``load`` (default: all) get their full arguments.

    The others are listed with their help only (parsing them would print a usage error), which is
    enough for ``mmvla --help``.
    """
    chosen = set(COMMANDS if load is None else load)
    parser = argparse.ArgumentParser(prog="mmvla", description="Multimodal vision-language-action learning.")
    parser.add_argument("--version", action="version", version=f"mmvla {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name in chosen:
            module = importlib.import_module(f"mmvla.cli.{name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmvla`` console script; returns the process exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in args_list if not a.startswith("-")), None)
    parser = build_parser([command] if command in COMMANDS else [])
    args = parser.parse_args(args_list)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        result = args._run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"mmvla {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(result or 0)
