"""The ``mmvla`` command line: argument parsing only, one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args)``; ``run`` calls the library
(mostly :mod:`mmvla.pipeline`) and prints. :func:`main` imports only the module of the subcommand given.
"""

import argparse
from typing import Any


def csv_list(text: str) -> tuple[str, ...]:
    """argparse type: "a, b,c" -> ("a", "b", "c"); an empty list is an error."""
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items


def flags(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.<name>}`` for each of ``names``: options passed on under the parameter's own name."""
    return {n: getattr(args, n) for n in names}


from mmvla.cli.main import build_parser, main  # noqa: E402  (main's subcommands import csv_list)

__all__ = ["build_parser", "csv_list", "flags", "main"]
