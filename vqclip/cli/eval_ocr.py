"""`vqclip eval ocr`: IIIT5K word recognition by retrieval among lexicon words, per space (docs/method.md §6)."""

from __future__ import annotations

from pathlib import Path

from .common import (add_cache_arg, add_clip_args, add_compare_spaces_args, add_device_args, add_quiet_arg,
                     command_parser)


def register(evals) -> None:
    p = command_parser(
        evals, "ocr", help="OCR by retrieval on IIIT5K word crops, per space (docs/method.md §6)",
        description="For each cropped word image of IIIT5K, pick the lexicon word whose text embedding is nearest "
                    "in each space (small = 50 words, medium = 1000 words, full = every test word) and report word "
                    "accuracy. Reads the released testdata.mat; images are found relative to it.",
        examples=["vqclip eval ocr --annotations IIIT5K/testdata.mat --lexicon small,full --max-images 500"])
    p.add_argument("--annotations", required=True, metavar="MAT_OR_DIR",
                   help="IIIT5K testdata.mat, or the folder holding it and its test/ images")
    p.add_argument("--images-root", default=None, metavar="DIR",
                   help="folder the ImgName paths are relative to (default: the .mat file's folder)")
    p.add_argument("--lexicon", default="small,medium,full", metavar="LIST",
                   help="lexicons to evaluate, comma-separated from small, medium, full (default all three)")
    p.add_argument("--template", default="{}", help='text template for each word (default "{}": the raw word)')
    add_compare_spaces_args(p)
    p.add_argument("--max-images", type=int, default=0, help="evaluate only the first N word images (default 0 = all)")
    p.add_argument("--batch-size", type=int, default=64, help="images per CLIP batch (default 64)")
    p.add_argument("--out", default=None, metavar="DIR", help="report folder (default outputs/eval/ocr-iiit5k)")
    add_quiet_arg(p, "no progress bar")
    add_clip_args(p)
    add_device_args(p)
    add_cache_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import VqclipError, bad_arg
    from ..evaluate.common import resolve_eval_spaces
    from ..evaluate.iiit5k import LEXICONS, evaluate_iiit5k, iiit5k_table, read_iiit5k
    from ..io import write_json, write_text
    from .common import load_clip_from_args
    from .eval_typographic import split_spaces

    lexicons = [s.strip() for s in args.lexicon.split(",") if s.strip()]
    bad = [s for s in lexicons if s not in LEXICONS]
    if bad or not lexicons:
        raise bad_arg("--lexicon", "must list small, medium and/or full", args.lexicon, "For example small,full.")
    if "{}" not in args.template:
        raise bad_arg("--template", "must contain {} for the word", args.template, 'For example "{}".')
    if args.batch_size < 1 or args.max_images < 0:
        raise bad_arg("--batch-size/--max-images", "must be positive (max-images 0 = all)",
                      (args.batch_size, args.max_images), "Try the defaults.")
    try:
        data = read_iiit5k(args.annotations, args.images_root)
    except ImportError as e:  # one clear line (the install command), not a traceback
        raise VqclipError(str(e)) from e
    clip = load_clip_from_args(args)
    spaces = resolve_eval_spaces(clip.identity, clip.embed_dim, split_spaces(args.spaces), args.projection,
                                 args.cache_dir, clip_flags=clip.cli_flags())
    report = evaluate_iiit5k(data, clip, spaces, lexicons, args.template, args.batch_size, args.max_images or None,
                             not args.quiet)
    report["clip"] = clip.describe()
    table = iiit5k_table(report)
    out = Path(args.out).expanduser() if args.out else Path("outputs") / "eval" / "ocr-iiit5k"
    write_text(out / "table.md", table)
    write_json(out / "report.json", {**report, "table": table})
    print(f"IIIT5K: {report['images']} word images, {len(report['skipped'])} skipped")
    print(table, end="")
    for s in report["skipped"][:10]:
        print(f"  skipped {s['path']}: {s['reason']}")
    print(f"reports in {out}")
    return 0
