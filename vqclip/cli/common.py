"""Options shared by several subcommands."""

from __future__ import annotations

import argparse

from ..devices import DEVICES, PRECISIONS
from ..models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED


def add_clip_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("CLIP model")
    g.add_argument("--clip", default=DEFAULT_CLIP, metavar="NAME",
                   help=f"open_clip model: a name (default {DEFAULT_CLIP}), hf-hub:ORG/REPO or local-dir:PATH")
    g.add_argument("--pretrained", default=DEFAULT_PRETRAINED, metavar="TAG_OR_FILE",
                   help=f"pretrained tag for a named model, or a local checkpoint file (default {DEFAULT_PRETRAINED})")


def add_device_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("device")
    g.add_argument("--device", default="auto", help=f"one of {', '.join(DEVICES)} or cuda:N (default auto)")
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="CLIP precision: auto = bf16/fp16 autocast on CUDA, fp32 elsewhere")


def add_compare_spaces_args(p: argparse.ArgumentParser) -> None:
    """Which spaces an evaluation puts side by side."""
    p.add_argument("--spaces", default=None, metavar="LIST",
                   help="comma-separated spaces to compare (default: clip plus every cached learn/forget projection)")
    p.add_argument("--projection", action="append", default=[], metavar="[LABEL=]FILE",
                   help="a projection file to compare as its own column (repeatable)")


def add_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where weights, projections and features are kept (default $VQCLIP_CACHE or ~/.cache/vqclip)")


def load_clip_from_args(args):
    from ..models.clip import load_clip

    return load_clip(args.clip, args.pretrained, device=args.device, precision=args.precision,
                     cache_dir=getattr(args, "cache_dir", None))
