"""CLI subcommands: one module each, exposing ``HELP``, ``add_arguments(parser)`` and ``run(args)``.

Command modules import heavy libraries inside ``run`` so that ``mmvla --help`` stays fast.
"""
