"""The ``mmvla`` command line: a thin layer over library functions, one module per subcommand."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> module under mmvla.cli; a module that does not exist yet is simply not offered.
COMMANDS: tuple[str, ...] = (
    "demo",
    "collect",
    "train",
    "eval",
    "compare",
    "pretrain",
    "report",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the top-level parser with every available subcommand."""
    from mmvla import __version__

    parser = argparse.ArgumentParser(prog="mmvla", description="Multimodal vision-language-action learning.")
    parser.add_argument("--version", action="version", version=f"mmvla {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"mmvla.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"mmvla.cli.{name}":
                continue
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmvla`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        result = args._run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"mmvla {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(result or 0)
