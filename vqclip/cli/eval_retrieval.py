"""`vqclip eval retrieval`: the word-retrieval and visual-comprehension metrics of docs/method.md §6, side by side."""

from __future__ import annotations

from pathlib import Path

from ..errors import bad_arg
from .common import add_cache_arg, add_clip_args, add_device_args, command_parser
from .train import add_data_args, features_from_args


def register(sub) -> None:
    p = command_parser(
        sub, "retrieval",
        help="word retrieval (x_t↔y_t, x_it↔x_t, x_it↔x_i, x_it↔y_t), class accuracy, visual comprehension",
        description="Compare CLIP and learned projections on held-out five-tuples: top-1 retrieval both ways, "
                    "split real / nonsense words (deduplicated by word), class accuracy of x_i and x_it, and "
                    "classification of natural images by rendered class-name images (image encoder only).",
        examples=["vqclip eval retrieval --images /data/imagenet/val   # clip plus every cached projection",
                  "vqclip eval retrieval --images photos/ --spaces clip --projection learn.safetensors --json r.json"])
    g = p.add_argument_group("spaces")
    g.add_argument("--projection", action="append", default=[], metavar="FILE",
                   help="a projection file to evaluate (repeatable); a torch file holding only W may state its "
                        "CLIP and orientation as FILE@NAME/TAG@dxD (see docs/models.md)")
    g.add_argument("--spaces", default="auto",
                   help="comma list of clip, learn, forget (cached projections for this CLIP); auto = clip plus "
                        "every cached projection found (default auto)")
    g.add_argument("--split", default="test", choices=("train", "val", "test", "all"),
                   help="which tuples to evaluate; the trainer never sees test (default test)")
    g.add_argument("--json", metavar="FILE", help="write all metrics as JSON")
    add_data_args(p)
    add_clip_args(p)
    add_device_args(p)
    add_cache_arg(p)
    p.set_defaults(func=run, clip=None, pretrained=None)


def _spaces(args, identity: str, embed_dim: int, clip_flags: str | None = None) -> dict:
    """name -> Space for every space asked for; explicit names must exist, `auto` takes what is cached."""
    from ..projections import load_projection, projection_path, resolve_space
    from ..spaces import identity_space

    names = [s.strip() for s in args.spaces.split(",") if s.strip()]
    out = {}
    for name in names:
        if name == "auto":
            out["clip"] = identity_space()
            for space in ("learn", "forget"):
                if projection_path(space, identity, args.cache_dir).is_file():
                    out[space] = resolve_space(space, identity, embed_dim, cache=args.cache_dir,
                                               clip_flags=clip_flags)
        elif name in ("clip", "learn", "forget"):
            out[name] = resolve_space(name, identity, embed_dim, cache=args.cache_dir, clip_flags=clip_flags)
        else:
            raise bad_arg("--spaces", "unknown space", name, "Use clip, learn, forget or auto.")
    for path in args.projection:
        sp = load_projection(path, None, embed_dim)
        sp.check_clip(identity, embed_dim, clip_flags=clip_flags)
        label = f"{sp.name}:{Path(sp.metadata['path']).stem}"
        out[label] = sp
    if not out:
        raise bad_arg("--spaces", "nothing to evaluate", args.spaces, "Use --spaces auto or pass --projection.")
    return out


def run(args) -> int:
    from ..devices import resolve_device
    from ..io import write_json
    from ..spelling.retrieval import format_table, retrieval_metrics

    holder = {}

    def check(clip):  # refuse bad projections before extracting anything
        holder["spaces"] = _spaces(args, clip.identity, clip.embed_dim, clip.cli_flags())

    features, identity, folder, _ = features_from_args(args, on_clip=check)
    spaces = holder.get("spaces") or _spaces(args, identity, features.embed_dim)
    part = features.part(args.split) if features.split is not None else features
    if len(part) < 2:
        raise bad_arg("--split", "the split holds fewer than 2 tuples", f"{args.split}: {len(part)}",
                      "Use more images, --split all, or larger --val-fraction / --test-fraction.")
    device = resolve_device(args.device)
    results = {name: retrieval_metrics(part, sp.W if sp.W is not None else None, device)
               for name, sp in spaces.items()}
    print(f"{args.split} split: {len(part)} tuples, {len(set(part.word_ids.tolist()))} words, "
          f"{len(features.class_features)} classes; features {folder}")
    print(format_table(results))
    if args.json:
        write_json(args.json, {"clip_model": identity, "features": str(folder), "split": args.split,
                               "tuples": len(part), "spaces": {n: sp.describe() for n, sp in spaces.items()},
                               "metrics": results})
    return 0
