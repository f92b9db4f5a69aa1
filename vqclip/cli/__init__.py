"""The `vqclip` command: argparse subcommands over the library. `main(argv) -> exit code`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import VqclipError

# One module per subcommand, each with `register(subparsers)` that sets `func(args) -> int`.
COMMANDS = ("generate", "batch", "grid", "train", "eval", "score", "models", "testbed")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqclip",
        description="VQGAN+CLIP image generation in the original CLIP space or in learn-to-spell / "
                    "forget-to-spell subspaces (Materzynska, Torralba, Bau, CVPR 2022).",
    )
    parser.add_argument("--version", action="version", version=f"vqclip {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details (model loading, downloads)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":  # subcommand not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        if getattr(args, "config", None) and getattr(args, "_parser", None):
            from .generate import apply_config_file

            apply_config_file(args._parser, args.config)  # file values become defaults; flags still win
            args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except VqclipError as e:
        print(f"vqclip {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vqclip {args.command}: interrupted", file=sys.stderr)
        return 130
