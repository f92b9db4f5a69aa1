"""`vqclip eval typographic`: zero-shot robustness to written words, in CLIP and learned spaces side by side."""

from __future__ import annotations

from pathlib import Path

from .common import (add_cache_arg, add_clip_args, add_compare_spaces_args, add_device_args, add_quiet_arg,
                     command_parser)


def register(evals) -> None:
    p = command_parser(
        evals, "typographic", help="typographic-attack robustness of each space (docs/method.md §6)",
        description="Zero-shot classification of photos with a misleading word written on them, in the original "
                    "CLIP space and in learned projections side by side. Datasets: the paper's real photos "
                    "(annotation.json), PAINT / RTA-100 folders (label=OBJECT_text=WORD.ext), or synthetic attacks "
                    "written on any labelled image folder. Protocols: classes = object labels only, and classes = "
                    "object + attack labels.",
        examples=["vqclip eval typographic --dataset typographic_attack_dataset/",
                  "vqclip eval typographic --synthetic cifar10:test --max-images 500 --spaces clip,forget"])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", metavar="DIR", help="typographic-attack folder (annotation.json or label=_text= names)")
    src.add_argument("--synthetic", metavar="IMAGES",
                     help="build synthetic attacks from an image folder ROOT/class_name/*.jpg (or a torchvision "
                          "dataset name such as cifar10:test) by writing a wrong class word on each image")
    p.add_argument("--format", default="auto", choices=("auto", "annotation", "filename"),
                   help="dataset format for --dataset (default: detected)")
    p.add_argument("--template", default="a photo of a {}.", help='class prompt template (default "a photo of a {}.")')
    add_compare_spaces_args(p)
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default outputs/eval/typographic-<dataset name>)")
    p.add_argument("--batch-size", type=int, default=32, help="images per CLIP batch (default 32)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in --out (and --synthetic-out) that vqclip did not write (its own are always "
                        "replaced)")
    g = p.add_argument_group("synthetic attacks")
    g.add_argument("--synthetic-out", default=None, metavar="DIR",
                   help="where the synthetic set is written (default: in the cache; reused when the recipe matches)")
    g.add_argument("--seed", type=int, default=0, help="seed for the image subset, words and rendering (default 0)")
    g.add_argument("--size", type=int, default=384,
                   help=f"side of the square synthetic images, {SYNTHETIC_SIZE[0]} to {SYNTHETIC_SIZE[1]} (default 384)")
    g.add_argument("--max-images", type=int, default=1000,
                   help=f"source images to use, 0 = all, at most {MAX_IMAGES:,} (default 1000)")
    g.add_argument("--attack-words", default=None, metavar="FILE_OR_LIST",
                   help="words to write (a file, one per line, or a comma-separated list); default: other class names")
    g.add_argument("--class-map", default=None, metavar="FILE", help="folder name -> class name map for --synthetic")
    add_quiet_arg(p, "no progress bars")
    add_clip_args(p)
    add_device_args(p)
    add_cache_arg(p)
    p.set_defaults(func=run)


SYNTHETIC_SIZE = (8, 2048)  # --size 100000 ended in MemoryError (issue 28)
MAX_IMAGES = 10_000_000


def read_word_arg(text: str, arg: str) -> list[str]:
    """A word file (one per line, `#` comments; read bounded: a regular UTF-8 text file) or a comma-separated list."""
    from ..errors import bad_arg
    from ..untrusted import read_text

    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():  # a FIFO or a device is refused by read_text, not taken as words
        lines = read_text(path, arg=arg, what="word file").splitlines()
        words = [l.split("#", 1)[0].split(",")[0].strip() for l in lines]
    else:
        words = [w.strip() for w in text.split(",")]
    words = [w for w in words if w]
    if not words:
        raise bad_arg(arg, "needs at least one word", text, "Give a file with one word per line or a,b,c.")
    return words


def split_spaces(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


def run(args) -> int:
    from ..cache import cache_dir, slug
    from ..errors import bad_arg
    from ..evaluate.common import resolve_eval_spaces
    from ..evaluate.synthetic_attacks import build_synthetic_attacks
    from ..evaluate.typographic import (check_report_out, check_template, evaluate_typographic,
                                        open_typographic_dataset, write_typographic_report)
    from ..io import disk_errors
    from .common import load_clip_from_args

    check_template(args.template)
    if args.batch_size < 1:
        raise bad_arg("--batch-size", "must be at least 1", args.batch_size, "Try 32.")
    progress = not args.quiet
    if args.out:  # a user's table.md or report.json is refused before any work
        check_report_out(Path(args.out).expanduser(), args.overwrite)
    if args.dataset:
        dataset = open_typographic_dataset(args.dataset, args.format)
    else:
        from ..spelling.sources import open_images

        from ..untrusted import check_count

        if args.size < SYNTHETIC_SIZE[0]:
            raise bad_arg("--size", "must be at least 8 pixels", args.size, "Try 384.")
        check_count(args.size, "--size", *SYNTHETIC_SIZE, "384")
        check_count(args.max_images, "--max-images", 0, MAX_IMAGES, "1000 (0 = all)")
        source = open_images(args.synthetic, args.class_map, arg="--synthetic")
        words = read_word_arg(args.attack_words, "--attack-words") if args.attack_words else None
        where = Path(args.synthetic_out).expanduser() if args.synthetic_out else (
            cache_dir(args.cache_dir) / "typographic" / f"{slug(source.name)}-seed{args.seed}-{args.size}")
        with disk_errors("--synthetic-out", "rerun to rebuild the set"):
            dataset = build_synthetic_attacks(source, where, args.seed, args.size, args.max_images or None,
                                              attack_words=words, progress=progress, overwrite=args.overwrite)
    clip = load_clip_from_args(args)
    spaces = resolve_eval_spaces(clip.identity, clip.embed_dim, split_spaces(args.spaces), args.projection,
                                 args.cache_dir, clip_flags=clip.cli_flags())
    report = evaluate_typographic(dataset, clip, spaces, args.template, args.batch_size, progress)
    report["clip"] = clip.describe()
    out = Path(args.out).expanduser() if args.out else Path("outputs") / "eval" / f"typographic-{slug(dataset.name)}"
    with disk_errors("--out", "nothing partial is left; rerun to write the reports"):
        table = write_typographic_report(report, out, args.overwrite)
    d = report["dataset"]
    print(f"dataset {d['name']} ({d['format']}): {d['evaluated']} images evaluated "
          f"({d['clean']} clean, {d['attacked']} attacked listed), {len(d['skipped'])} skipped")
    print(table, end="")
    for s in d["skipped"][:10]:
        print(f"  skipped {s['path']}: {s['reason']}")
    if len(d["skipped"]) > 10:
        print(f"  ... {len(d['skipped']) - 10} more in {out / 'report.json'}")
    print(f"reports in {out}")
    return 0
