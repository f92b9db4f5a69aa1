"""`vqclip reproduce {typographic,ocr,all}`: the paper's headline experiments with one command, paper vs measured."""

from __future__ import annotations


from ..errors import bad_arg
from .common import (add_cache_arg, add_clip_args, add_device_args, add_quiet_arg, command_line, command_parser,
                     set_default, sigterm_as_interrupt)

# vqclip.reproduce.options.PROG and .DEFAULT_OUT, as literals: building the parser imports no torch
PROG = "vqclip reproduce"
DEFAULT_OUT = "outputs/reproduce"


# --------------------------------------------------------------------------------------------------- arguments

def register(sub) -> None:
    p = command_parser(
        sub, "reproduce", help="rerun the paper's headline experiments and print paper vs measured",
        description="Rerun the experiments of Materzynska, Torralba, Bau (CVPR 2022) with one command and put the "
                    "measured numbers beside the published ones: `typographic` (the authors' 180 photos, fetched "
                    "from their Google Drive folder; zero-shot accuracy in clip / learn / forget), `ocr` (real and "
                    "nonsense words generated in the three spaces, EasyOCR at confidence > 0 and > 0.25) and `all` "
                    "(both, into one report folder with Markdown, JSON and grids). Needs the network the first "
                    "time (weights, projections, photos); a GPU for `ocr` and `all` at any useful --scale.",
        examples=["vqclip reproduce typographic", "vqclip reproduce all --scale 0.05 --out outputs/reproduce"])
    parts = p.add_subparsers(dest="part", metavar="PART", required=True)
    t = command_parser(parts, "typographic", help="typographic-attack accuracy on the paper's photos",
                       description="Fetch the authors' typographic-attack photos (180 images, 20 objects, 8 attack "
                                   "words) into the cache and classify them zero-shot in clip, learn and forget "
                                   "with the paper's projections; print accuracy with 95 % Wilson intervals next to "
                                   "the paper's 49.4 % (CLIP) and 77.2 % (forget).",
                       examples=["vqclip reproduce typographic",
                                 "vqclip reproduce typographic --dataset typographic_attack_dataset/"])
    _typographic_args(t)
    add_clip_args(t)
    add_device_args(t)
    _common_args(t)
    t.set_defaults(func=run_typographic_command, _reproduce_parser=t)

    o = command_parser(parts, "ocr", help="text in generated images, per space and word set",
                       description="Generate real and nonsense words in clip, learn and forget (the batch runner: "
                                   "resumable, shardable with --shard i/n or torchrun), score every image with "
                                   "EasyOCR at confidence > 0 and > 0.25 and print the table next to the paper's "
                                   "(learn 53.3 / CLIP 33.0 / forget 3.3 % for all words at > 0), with a "
                                   "comparison grid. --scale 1 is the paper's ~2,000 images per word set and "
                                   "space (12,000 images); a smaller scale keeps honest (wider) intervals.",
                       examples=["vqclip reproduce ocr --scale 0.05",
                                 "torchrun --nproc-per-node 8 -m vqclip reproduce ocr --scale 1"])
    _ocr_args(o)
    _common_args(o, cache=False)
    o.set_defaults(func=run_ocr_command, _reproduce_parser=o)

    a = command_parser(parts, "all", help="both experiments into one report folder",
                       description="Run `typographic` and `ocr` into one report folder (report.md, report.json, "
                                   "grid PNGs) with every setting, model hashes and timings; print a time estimate "
                                   "measured on this device before it starts, and one progress bar over the run.",
                       examples=["vqclip reproduce all --scale 0.05", "vqclip reproduce all --dry-run"])
    _typographic_args(a)
    _ocr_args(a)
    _common_args(a, cache=False)
    a.set_defaults(func=run_all_command, _reproduce_parser=a)


def _common_args(p, cache: bool = True) -> None:
    p.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                   help=f"report folder (default {DEFAULT_OUT}); re-use it to resume or to add the other part")
    p.add_argument("--projection-learn", default=None, metavar="FILE",
                   help="learn projection file (default: the paper's, fetched from the registry)")
    p.add_argument("--projection-forget", default=None, metavar="FILE",
                   help="forget projection file (default: the paper's, fetched from the registry)")
    if cache:  # `ocr` and `all` get --cache-dir with the model flags
        add_cache_arg(p)
    add_quiet_arg(p)


def _typographic_args(p) -> None:
    g = p.add_argument_group("typographic attacks")
    g.add_argument("--dataset", default=None, metavar="DIR",
                   help="a local copy of the paper's photo folder (annotation.json or annotations.json); default: "
                        "fetched into the cache on first use")
    g.add_argument("--template", default="a photo of a {}.", help='class prompt template (default "a photo of a {}.")')
    g.add_argument("--batch-size", type=int, default=32, help="photos per CLIP batch (default 32)")


def _ocr_args(p) -> None:
    from .choices import JUDGE_CLIP, PAPER_GENERATION as G
    from .generate import add_model_args, add_settings_args

    g = p.add_argument_group("text in generated images")
    g.add_argument("--scale", type=float, default=None, metavar="FRACTION",
                   help="share of the paper's 2,000 words per set to generate (default 1: 2,000 real + 2,000 "
                        "nonsense words x 3 spaces; with --words, the whole list); e.g. 0.05 = 100 words per set")
    g.add_argument("--words", default=None, metavar="FILE",
                   help="word list instead of the drawn one: words.json, or one `word,real|nonsense` a line")
    g.add_argument("--shard", default=None, metavar="I/N",
                   help="generate share I of N (0-based); under torchrun the share comes from RANK/WORLD_SIZE. "
                        "Scoring and the report follow when every share is done")
    g.add_argument("--group-size", default="auto", metavar="N|auto",
                   help="images optimised together on one device by the batch runner's grouped generation: auto = "
                        "as many as the GPU's free memory holds, one on a CPU (default auto)")
    g.add_argument("--ocr-batch-size", type=int, default=8, metavar="N", help="images per EasyOCR batch (default 8)")
    g.add_argument("--grid-words", type=int, default=8, metavar="N",
                   help="words per word set in the comparison grids (default 8; 0 = no grid)")
    g.add_argument("--dry-run", action="store_true",
                   help="print the plan and the time estimate (measured on a few steps) and stop")
    g.add_argument("--methods", default=None, metavar="LIST",
                   help="also measure these ways of keeping text out, as columns beside the paper's (whose three "
                        "stay its recipe): e.g. clip,forget,negative,textoff,forget+negative (docs/method.md §10)")
    g.add_argument("--judge-clip", default=None, metavar="MODEL[:PRETRAINED]",
                   help="a second CLIP, not the guiding one, that classifies each real word's images zero-shot over "
                        "the run's real words to say whether the object is still there (a proxy: CLIPs read text; "
                        "also reported on the images without OCR text): NAME:TAG, NAME:FILE, local-dir:PATH or "
                        f"hf-hub:ORG/REPO. Default with --methods {JUDGE_CLIP} (a further download), without them "
                        "none (the paper's table alone has no object check)")
    add_settings_args(p)
    add_model_args(p)
    set_default(p, "recipe", "paper", "the generation recipe (default paper: Crowson's codebook-sampling notebook "
                 f"as the paper ran it, {G['method']} on {G['vqgan']}, {G['cutn']} cutouts, no augmentations, no "
                 "noise); flags given explicitly win and the report lists them as overrides")
    set_default(p, "seed", 0, "seed of every image and of the drawn word list (default 0)")


# ---------------------------------------------------------------------------------------------------- commands

def _options(args, **checked):
    """The flags as `ReproduceOptions`, with the `checked` values replacing the raw ones."""
    from ..reproduce.options import ReproduceOptions

    return ReproduceOptions.from_flags(vars(args), command=lambda: command_line(args._reproduce_parser, args, ["vqclip", "reproduce", args.part]), **checked)


def _check_out(args, typographic: bool) -> None:
    from ..reproduce.report import check_out_folder

    if getattr(args, "batch_size", 1) < 1:
        raise bad_arg("--batch-size", "must be at least 1", args.batch_size, "Try 32.")
    check_out_folder(args.out, typographic)  # a user's file under typographic/ is refused before any work


def run_typographic_command(args) -> int:
    from ..evaluate.typographic import check_template
    from ..reproduce.run import reproduce_typographic

    _check_out(args, typographic=True)
    check_template(args.template)
    return reproduce_typographic(_options(args))


def _ocr_options(args, typographic: bool):
    """The flags of `ocr` and `all` checked in the order the run meets them, before any model is loaded."""
    from ..batch.plan import base_settings_record
    from ..batch.shard import resolve_shard
    from ..errors import check_seed
    from ..evaluate.objectjudge import check_judge_clip
    from ..evaluate.typographic import check_template
    from .choices import JUDGE_CLIP
    from ..reproduce.ocr_run import check_ocr_flags
    from ..reproduce.options import SPACES
    from .batch import projections_from_args
    from .generate import settings_from_args

    _check_out(args, typographic)
    if typographic:
        check_template(args.template)
    # parsed in place: the report's command line shows the parsed --group-size
    args.group_size = check_ocr_flags(args.group_size, args.ocr_batch_size, args.grid_words)
    check_seed(args.seed)
    settings = settings_from_args(args, "")
    base_settings_record(settings)  # flag errors name the flag before any word is blamed
    methods = _methods(args)
    if args.judge_clip is None:  # the object check belongs to the methods' comparison; asked for, it runs alone too
        args.judge_clip = JUDGE_CLIP if methods else "none"
    judge = check_judge_clip(args.judge_clip, args.clip, args.pretrained)
    shard = resolve_shard(args.shard)
    return _options(args, settings=settings, shard=shard, projections=projections_from_args(args, SPACES),
                    methods=methods, judge_clip=args.judge_clip.strip() if judge else None)


def _methods(args) -> tuple[str, ...]:
    """--methods beyond the paper's spaces; --anti-text is refused: it would change the paper's own columns."""
    from ..batch import parse_spaces
    from ..reproduce.options import SPACES

    if args.anti_text:
        raise bad_arg("--anti-text", "reproduce runs the paper's columns as the paper did", args.anti_text,
                      "Add the ways of keeping text out as columns of their own: --methods negative,textoff.")
    return tuple(m for m in parse_spaces(args.methods, "--methods") if m not in SPACES) if args.methods else ()


def _model_loader(args):
    """Loads the generation models with the command's flags, under torchrun on this share's GPU."""
    from .batch import shard_device
    from .generate import load_models_from_args

    def load(shard, spaces):
        shard_device(args, shard)  # sets args.device, so the report's command line names the GPU
        return load_models_from_args(args, spaces, PROG)

    return load


def run_ocr_command(args) -> int:
    from ..reproduce.run import reproduce_ocr

    with sigterm_as_interrupt():
        return reproduce_ocr(_ocr_options(args, typographic=False), _model_loader(args))


def run_all_command(args) -> int:
    from ..reproduce.run import reproduce_all

    with sigterm_as_interrupt():
        return reproduce_all(_ocr_options(args, typographic=True), _model_loader(args))
