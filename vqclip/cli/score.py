"""`vqclip score PATH...`: how often generated images contain text, and whether the prompt word is legible."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_cache_arg, add_quiet_arg, command_parser


def _thresholds(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1], got {text!r}") from None
    if not values or any(not 0.0 <= v < 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers in [0, 1), got {text!r}")
    return values


def register(sub) -> None:
    p = command_parser(
        sub, "score", help="OCR generated images: share with any text, and prompt-word legibility per space",
        description="Run EasyOCR (offline English weights) over generated images - single runs, batch folders or "
                    "plain image folders - and report, per space and word type, the share of images with any text "
                    "above each OCR confidence threshold and the share where the prompt word itself is legible, "
                    "with 95 % Wilson intervals (docs/method.md §6). OCR results are cached by image content. "
                    "For the testbed world, --detector world:FILE reads with the world's own text detector "
                    "(vqclip.testbed.detector) instead: one whole-image detection when it sees text, reading one of "
                    "the world's words with confidence p_text x p_word.",
        examples=["vqclip score outputs/words-batch        # writes outputs/words-batch/score/",
                  "vqclip score runs/apple-clip runs/apple-forget --out reports/apple",
                  "vqclip score my_images/ --words words.txt --space clip"])
    p.add_argument("paths", nargs="+", metavar="PATH", help="run folders, batch folders, image folders or images")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="report folder (default: PATH/score for the first folder given)")
    p.add_argument("--words", default=None, metavar="FILE",
                   help="word list, one `word[,real|nonsense]` a line: prompt words and types for images without "
                        "metadata, and the word type where the metadata lacks it")
    p.add_argument("--thresholds", type=_thresholds, default=[0.0, 0.25], metavar="T1,T2",
                   help="OCR confidence thresholds for 'any text' (default 0.0,0.25 as in the paper)")
    p.add_argument("--max-distance", type=float, default=0.3, metavar="D",
                   help="prompt word counts as legible when its normalised edit distance to a detected string is "
                        "at most D (default 0.3)")
    p.add_argument("--group-by", action="append", default=[], metavar="FIELD",
                   help="extra metadata field to group by (repeatable; dotted paths such as settings.steps)")
    p.add_argument("--space", default=None, metavar="NAME",
                   help="space to assume for images whose metadata and folder name do not tell")
    p.add_argument("--no-stem-words", action="store_true",
                   help="do not take the prompt word from the file name of images without metadata")
    p.add_argument("--detector", default="easyocr", metavar="NAME",
                   help="who reads the images: easyocr (default), or world:PATH/text_detector.safetensors, the "
                        "testbed world's own text detector (independent of the CLIP that generated the images)")
    p.add_argument("--batch-size", type=int, default=8, help="images per EasyOCR detection batch (default 8)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N for EasyOCR (default auto)")
    p.add_argument("--no-chart", action="store_true", help="skip the bar chart")
    p.add_argument("--overwrite", action="store_true",
                   help="replace report files in --out that vqclip did not write (its own are always replaced)")
    add_quiet_arg(p, "no progress bar")
    add_cache_arg(p)
    p.set_defaults(func=run)


WORLD_PREFIX = "world:"


def check_detector(value: str) -> None:
    """`easyocr` or `world:FILE`; refused before any image is collected."""
    from ..errors import bad_arg

    if value == "easyocr" or (value.startswith(WORLD_PREFIX) and value[len(WORLD_PREFIX):].strip()):
        return
    raise bad_arg("--detector", "must be easyocr or world:FILE (a text_detector.safetensors of the testbed world)",
                  value, "Use --detector easyocr, or --detector world:OUT/text_detector.safetensors.")


def default_out(paths: list[str]) -> Path:
    first = Path(paths[0]).expanduser()
    return (first if first.is_dir() else first.parent) / "score"


def run(args) -> int:
    from ..errors import VqclipError, bad_arg
    from ..evaluate.ocr import EasyOcrReader, OcrCache
    from ..evaluate.scoring import check_group_fields, output_paths, score_paths, score_report
    from ..evaluate.sources import collect_images, read_words_file
    from ..io import check_replaceable, check_writable, disk_errors

    if not 0.0 <= args.max_distance <= 1.0:
        raise bad_arg("--max-distance", "must be between 0 and 1", args.max_distance, "Try 0.3 (the default).")
    if args.batch_size < 1:
        raise bad_arg("--batch-size", "must be at least 1", args.batch_size, "Try 8.")
    check_detector(args.detector)
    out = Path(args.out).expanduser() if args.out else default_out(args.paths)
    check_replaceable(output_paths(out), args.overwrite, "--out")  # a user's table.md is never replaced silently
    check_writable(out, "--out")  # before OCR runs over every image
    words = read_words_file(args.words) if args.words else None
    items, skipped = collect_images(args.paths, exclude=[out])
    if not items:
        raise bad_arg("PATH", "no images found (skipped: %d)" % len(skipped), " ".join(args.paths),
                      "Point at run folders (run.json), batch folders (manifest.jsonl) or folders of images.")
    group_by = ["space", "word_type"] + [g for g in args.group_by if g not in ("space", "word_type")]
    check_group_fields(items, group_by[2:], words, args.space, not args.no_stem_words)
    if args.detector == "easyocr":
        try:
            reader = EasyOcrReader(device=args.device)
        except ImportError as e:  # one clear line (the install command), not a traceback
            raise VqclipError(str(e)) from e
    else:
        from ..testbed.detector import WorldTextReader

        reader = WorldTextReader(args.detector[len(WORLD_PREFIX):].strip(), arg="--detector")
    cache = OcrCache(reader.key, args.cache_dir)
    detector = {"name": args.detector.split(":", 1)[0], "key": reader.key}
    if args.detector != "easyocr":
        detector["path"] = str(reader.path)
    with disk_errors("--out", "OCR results are cached, so running again resumes at once"):
        summary = score_paths(items, skipped, out, reader, cache, words, args.thresholds, args.max_distance,
                              group_by, args.space, not args.no_stem_words, args.batch_size, not args.quiet,
                              extra={"inputs": [str(p) for p in args.paths], "detector": detector},
                              chart=not args.no_chart, overwrite=args.overwrite)
    print(score_report(summary, out), end="")
    return 0
