"""The `vqclip` command: argparse subcommands over the library. `main(argv) -> exit code`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..errors import VqclipError, missing_extra_hint

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


def _option_dests(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{"--steps": "steps", ...}: which option string sets which attribute."""
    return {opt: a.dest for a in parser._actions for opt in a.option_strings}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from_config: dict[str, str] = {}  # dest -> key in the --config file, for values the command line did not set
    try:
        if getattr(args, "config", None) and getattr(args, "_parser", None):
            from .generate import apply_config_file

            sub = args._parser
            before = {dest: getattr(args, dest, None) for dest in vars(args)}
            keys = apply_config_file(sub, args.config)  # file values become defaults; flags still win
            config_path = args.config
            args = parser.parse_args(argv)
            from_config = {d: k for d, k in keys.items() if getattr(args, d, None) != before.get(d)}
            dests = _option_dests(sub)
        return int(args.func(args) or 0)
    except VqclipError as e:
        message = str(e)
        dest = dests.get(e.arg or "") if from_config else None
        if dest in from_config:  # the value that broke the rule came from the file, not the command line
            message += f" (The value comes from --config {config_path}, key {from_config[dest]!r}.)"
        print(f"vqclip {args.command}: error: {message}", file=sys.stderr)
        return 2
    except ImportError as e:
        hint = missing_extra_hint(e)
        if hint is None:
            raise
        print(f"vqclip {args.command}: error: {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"vqclip {args.command}: interrupted", file=sys.stderr)
        return 130
