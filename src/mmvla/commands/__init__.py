"""CLI subcommands: one module each, exposing ``HELP``, ``add_arguments(parser)`` and ``run(args)``.

Command modules import heavy libraries inside ``run`` so that ``mmvla --help`` stays fast.
"""

import argparse


def csv_list(text: str) -> tuple[str, ...]:
    """argparse type: "a, b,c" -> ("a", "b", "c"); an empty list is an error."""
    items = tuple(s.strip() for s in text.split(",") if s.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}")
    return items
