"""`vqclip train`: build the five-tuples, extract CLIP features (cached, resumable) and train a projection."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from ..errors import bad_arg
from .common import (add_cache_arg, add_clip_args, add_device_args, add_out_file_arg, add_quiet_arg, check_out_file,
                     command_parser)


# What the columns of the epoch log mean (printed above it, and in --help and docs/spelling.md).
EPOCH_LOG_HEADER = ("epoch log: step = optimiser steps so far; train = the objective averaged over the epoch's batches "
                    "(the signed InfoNCE terms plus gamma x R: lower is better, and it can be negative); val = the "
                    "same on the validation split (the epoch with the lowest val is kept); R = the orthogonality "
                    "penalty ||I - W W^T||_F (0 = orthonormal rows)")


def _pair(text: str, cast, arg: str):
    try:
        lo, hi = (cast(v) for v in text.split(","))
    except ValueError as e:
        raise bad_arg(arg, "must be two numbers MIN,MAX", text, f"For example {arg} 3,8.") from e
    return lo, hi


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Options that define the five-tuples and their feature cache (shared with `vqclip eval retrieval`)."""
    from .choices import DEFAULT_VOCAB, TORCHVISION_DATASETS
    from .choices import SPELLING_TEMPLATE as DEFAULT_TEMPLATE

    g = p.add_argument_group("natural images and words")
    g.add_argument("--images", metavar="PATH_OR_NAME",
                   help="an image folder ROOT/class_name/*.jpg (ImageNet layout), imagenetv2 (the default: "
                        "ImageNetV2 matched-frequency, 1000 classes x 10 images, ~1.26 GB, downloaded once), or a "
                        f"torchvision dataset that downloads itself: {', '.join(TORCHVISION_DATASETS)} (NAME:test "
                        "for another split). ImageNet cannot download itself: pass its train folder "
                        "(ROOT/n01440764/*.JPEG), whose folder ids become class names")
    g.add_argument("--class-map", metavar="FILE",
                   help="map folder names (e.g. n01440764) to class names: JSON {id: name} or lines 'id name'")
    g.add_argument("--data-root", metavar="DIR", help="where torchvision datasets are kept (default <cache>/datasets)")
    g.add_argument("--max-images", type=int, metavar="N", help="use a seeded random subset of N images (default: all)")
    g.add_argument("--words", type=int, metavar="N", help="word pool size (default: one per image, at most 20,000)")
    g.add_argument("--real-fraction", type=float, default=0.5, help="share of real English words (default 0.5)")
    g.add_argument("--word-length", default="3,8", metavar="MIN,MAX", help="letters per word (default 3,8)")
    g.add_argument("--vocab", type=int, default=DEFAULT_VOCAB,
                   help=f"real words come from the N most frequent English words (default {DEFAULT_VOCAB})")
    g.add_argument("--word-list", metavar="FILE", help="use this words.json / text file instead of sampling words")
    g.add_argument("--val-fraction", type=float, default=0.1, help="held-out validation share (default 0.1)")
    g.add_argument("--test-fraction", type=float, default=0.1, help="held-out test share (default 0.1)")
    g.add_argument("--prompt-template", default=DEFAULT_TEMPLATE,
                   help=f"class prompt y_i with {{name}} and {{article}} (default '{DEFAULT_TEMPLATE}')")
    g.add_argument("--class-renders", type=int, default=4,
                   help="rendered images per class name for the visual-comprehension test (default 4)")
    g.add_argument("--seed", type=int, default=0, help="seed for words, splits and rendering (default 0)")
    r = p.add_argument_group("rendering")
    r.add_argument("--font", action="append", metavar="NAME_OR_FILE",
                   help="font file or name of an available font (repeatable; default: bold DejaVu Sans, Serif, "
                        "Sans Mono and STIX)")
    r.add_argument("--font-dir", metavar="DIR", help="add every .ttf/.otf font in this folder")
    r.add_argument("--text-size", default="0.14,0.24", metavar="MIN,MAX",
                   help="font size range as a fraction of the image side (default 0.14,0.24)")
    r.add_argument("--text-colors", metavar="COLORS", help="text colours, e.g. #000000,#1e1e1e")
    r.add_argument("--background-colors", metavar="COLORS", help="x_t background colours, e.g. #ffffff,#f5f5ee")
    r.add_argument("--box-colors", metavar="COLORS", help="colours of the box behind the word on x_it")
    r.add_argument("--jitter", type=float, default=0.05, help="position jitter, fraction of the side (default 0.05)")
    e = p.add_argument_group("feature extraction")
    e.add_argument("--features", metavar="DIR",
                   help="an existing feature folder to use as is (skips building and extraction)")
    e.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: min(8, CPU cores))")
    e.add_argument("--extract-batch-size", type=int, default=64, help="tuples per CLIP call batch (default 64)")
    e.add_argument("--shard-size", type=int, default=4096, help="tuples per cache shard (default 4096)")
    add_quiet_arg(e, "no progress bars, no epoch log")


def _style_from_args(args):
    from ..spelling.render import TextStyle, parse_colors, resolve_fonts

    kw = {"size_range": _pair(args.text_size, float, "--text-size"), "jitter": args.jitter, "seed": args.seed}
    for name in ("text_colors", "background_colors", "box_colors"):
        value = getattr(args, name)
        if value:
            kw[name] = parse_colors(value, "--" + name.replace("_", "-"))
    return TextStyle(fonts=resolve_fonts(args.font, args.font_dir), **kw)


def _data_config(args):
    from ..spelling.dataset import DataConfig

    min_len, max_len = _pair(args.word_length, int, "--word-length")
    return DataConfig(words=args.words, real_fraction=args.real_fraction, min_len=min_len, max_len=max_len,
                      vocab=args.vocab, word_list=args.word_list, max_images=args.max_images,
                      val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                      prompt_template=args.prompt_template, class_renders=args.class_renders, seed=args.seed)


def explicit_clip_identity(args) -> str | None:
    """The identity of --clip/--pretrained if the user named a model, else None."""
    from ..models.clip import DEFAULT_PRETRAINED, clip_identity

    if args.clip is None:
        return None
    return clip_identity(args.clip, args.pretrained if args.pretrained is not None else DEFAULT_PRETRAINED)


def load_clip_args(args):
    from ..models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED, load_clip
    from .common import preflight_from_args

    preflight_from_args(args)
    return load_clip(args.clip or DEFAULT_CLIP, args.pretrained if args.pretrained is not None else DEFAULT_PRETRAINED,
                     device=args.device, precision=args.precision, cache_dir=args.cache_dir)


def features_from_args(args, clip=None, on_clip=None):
    """(SpellingFeatures, clip identity, feature folder, extraction seconds) from --features or by extraction.

    `on_clip(clip)` runs right after CLIP is loaded, so callers can refuse bad settings before the long part.
    """
    import torch

    from ..spelling.features import extract_features, load_features, read_meta

    if args.features:
        meta = read_meta(args.features)
        named = explicit_clip_identity(args)
        if named is not None and named != meta["clip_model"]:
            raise bad_arg("--features", f"the feature cache was written by CLIP {meta['clip_model']!r}", named,
                          "Leave --clip out to use the cache's model, or extract features for this model.")
        dtype = torch.float16 if meta["tuples"] * meta["embed_dim"] > 50_000_000 else torch.float32
        return load_features(args.features, meta["clip_model"], dtype=dtype), meta["clip_model"], \
            Path(args.features), 0.0
    from ..spelling.dataset import build_dataset
    from ..spelling.sources import open_images
    from ..downloads import download_note
    from ..spelling.sources import DEFAULT_IMAGES

    config, style = _data_config(args), _style_from_args(args)  # validate before loading anything heavy
    if clip is None:  # a mistyped model name fails before a 1.26 GB download, not after
        from ..models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED, check_identifier

        check_identifier(args.clip or DEFAULT_CLIP,
                         args.pretrained if args.pretrained is not None else DEFAULT_PRETRAINED)
    if clip is None:  # CLIP, ImageNetV2 (no --images) and wordfreq (no --word-list): what is missing, in one message
        from .common import preflight_from_args

        preflight_from_args(args, imagenetv2=not args.images, extras=() if args.word_list else ("wordfreq",))
    if not args.images and not args.quiet:
        print(f"vqclip train: no --images, so the default training set: "
              f"{download_note(args.cache_dir, args.data_root)}", file=sys.stderr)
    source = open_images(args.images or DEFAULT_IMAGES, args.class_map, args.data_root or _default_data_root(args))
    clip = clip or load_clip_args(args)
    if on_clip:
        on_clip(clip)
    dataset = build_dataset(source, (clip.input_size[1], clip.input_size[0]), style, config)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    start = time.perf_counter()
    folder = extract_features(clip, dataset, cache=args.cache_dir, batch_size=args.extract_batch_size,
                              num_workers=workers, shard_size=args.shard_size, progress=not args.quiet)
    seconds = time.perf_counter() - start
    dtype = torch.float16 if len(dataset) * clip.embed_dim > 50_000_000 else torch.float32
    return load_features(folder, clip.identity, dtype=dtype), clip.identity, folder, seconds


def _default_data_root(args):
    from ..cache import cache_dir

    return cache_dir(args.cache_dir) / "datasets"


def register(sub) -> None:
    from .choices import DEFAULT_GAMMA
    from .choices import SPACE_PRESETS as PRESETS

    p = command_parser(
        sub, "train", help="train a learn-to-spell or forget-to-spell projection",
        description="Build the five-tuples (natural image, class prompt, word image, word, image with the word "
                    "drawn on), extract CLIP features once (cached, resumable), train the projection W and write "
                    "it where `vqclip generate --space learn|forget` finds it. Every training tuple is used in "
                    "every epoch (the last, partial batch too, as in the reference code). A training too short to "
                    "move W (too few steps for the learning rate) is warned about before it starts. The "
                    + EPOCH_LOG_HEADER + ".",
        examples=["vqclip train --space forget --images /data/imagenet/train   # features cached, then trained",
                  "vqclip train --space learn --images photos/ --epochs 60 --out-file learn.safetensors",
                  "vqclip train --space forget --clip ViT-L-14 --pretrained openai  # no --images: ImageNetV2",
                  "vqclip train --direction textoff   # the text direction, from the same cached features"],
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--space", choices=tuple(PRESETS),
                      help="learn: keep what is written (-L1+L3+L4+L5, d=64); "
                           "forget: keep what is depicted (L1+L2-L5+L6, d=256)")
    what.add_argument("--direction", choices=("textoff",),
                      help="textoff: instead of a projection, the text direction normalize(mean x_it - mean x_i) "
                           "of the training tuples, for `vqclip generate --anti-text textoff` (no training loop)")
    add_data_args(p)
    t = p.add_argument_group("training")
    t.add_argument("--dim", type=int, help="projection size d, 1..D (default: the preset's, 64 / 256 for D=512)")
    t.add_argument("--weights", metavar="L1=W,...",
                   help="signed loss-term weights overriding the preset, e.g. L1=-1,L3=1,L4=1,L5=1 "
                        "(or full-learn / full-forget for all six terms)")
    t.add_argument("--gamma", type=float, help=f"orthogonality penalty weight (default {DEFAULT_GAMMA})")
    t.add_argument("--epochs", type=int, default=30, help="passes over the training tuples, at least 1 (default 30)")
    t.add_argument("--batch-size", type=int, default=128,
                   help="tuples per step; the in-batch negatives of InfoNCE, at least 2 (default 128)")
    t.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    t.add_argument("--step-size", type=int, default=4000, help="StepLR period in steps (default 4000)")
    t.add_argument("--lr-decay", type=float, default=0.5, help="StepLR factor, in (0, 1] (default 0.5)")
    t.add_argument("--drop-last", action="store_true",
                   help="drop each epoch's last, partial batch (by default it is trained on, as in the reference "
                        "code)")
    t.add_argument("--mask-duplicates", action="store_true",
                   help="do not count in-batch items of the same class (L2, L6) or word (L4, L5) as negatives")
    t.add_argument("--extract-only", action="store_true", help="build and cache the features, then stop")
    o = p.add_argument_group("output")
    add_out_file_arg(o, "FILE.safetensors", "where to write the projection (default: <cache>/projections/<clip>/"
                                            "<space>.safetensors, where vqclip generate looks)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an existing projection file (and a --json file vqclip did not write)")
    o.add_argument("--json", metavar="FILE", help="also write the run summary and metrics as JSON")
    add_clip_args(p)
    add_device_args(p)
    add_cache_arg(p)
    p.set_defaults(func=run, clip=None, pretrained=None)


def _target(args, identity: str) -> Path:
    from ..io import check_writable
    from ..projections import projection_path
    from ..projections.direction import direction_path

    if args.out:
        target = Path(args.out)
    elif args.direction:
        target = direction_path(identity, args.cache_dir)
    else:
        target = projection_path(args.space, identity, args.cache_dir)
    what = "text direction" if args.direction else "projection"
    if target.exists() and not args.overwrite and not args.extract_only:
        raise bad_arg("--out-file", f"a {what} already exists there", str(target),
                      "Pass --overwrite to replace it, or --out-file another file.")
    if not args.extract_only:
        check_writable(target.parent, "--out-file" if args.out else "--cache-dir")  # before features and training
    return target


def run(args) -> int:
    """`vqclip train`: check every flag, get the features (extracted once, cached), train W, write it and report."""
    from ..spelling.train import train_test_metrics

    if args.direction:
        return _run_direction(args)
    config, device = _checked_config(args)
    features, identity, folder, extract_s = _features_checked(args)
    target = _target(args, identity)
    sizes = features.split_sizes()
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    say(f"features: {folder} ({len(features)} tuples, splits {sizes}, "
        f"{features.metadata.get('skipped_images', 0)} unreadable images skipped)")
    if args.extract_only:
        print(folder)
        return 0

    result, short = _train(features, config, say)
    test_split = "test" if sizes.get("test", 0) >= 2 else "val"
    test = train_test_metrics(features, result.W, test_split, device)
    path = _write(args, result, features, identity, target, folder, test)
    summary = {"projection": str(path), "space": result.space, "clip_model": identity, "dim": result.dim,
               "embed_dim": features.embed_dim, "weights": result.weights, "gamma": result.gamma,
               "best_epoch": result.best_epoch, "train_seconds": round(result.seconds, 2),
               "extract_seconds": round(extract_s, 2), "features": str(folder), "split_sizes": sizes,
               "metrics": {"val": result.metrics.get("val"), "test": test}, "warnings": [short] if short else []}
    _report(args, path, result, test, test_split, short, summary)
    return 0


def _checked_config(args):
    """Every flag checked before any image is read: the output files, the weights, --dim and the training
    config; returns (TrainConfig, device)."""
    from ..devices import resolve_device
    from ..io import check_replaceable, check_writable
    from ..spelling.losses import parse_weights
    from ..spelling.train import TrainConfig

    check_out_file(args, "train")
    if args.weights:
        parse_weights(args.weights)  # unknown terms fail before any work
    if args.dim is not None and args.dim < 1:
        raise bad_arg("--dim", "must be between 1 and the CLIP embedding size D", args.dim, "Use e.g. 64 or 256.")
    device = resolve_device(args.device)
    config = TrainConfig(space=args.space, dim=args.dim, weights=args.weights, gamma=args.gamma, lr=args.lr,
                         batch_size=args.batch_size, epochs=args.epochs, step_size=args.step_size,
                         lr_decay=args.lr_decay, mask_duplicates=args.mask_duplicates, drop_last=args.drop_last,
                         seed=args.seed, device=str(device)).check()  # before any image is read

    if args.json:
        check_replaceable([args.json], args.overwrite, "--json")  # a user's file of that name is never replaced
        check_writable(Path(args.json).parent, "--json")
    if args.out and not args.extract_only:
        check_writable(Path(args.out).parent, "--out-file")  # before any image is read
    return config, device


def _features_checked(args):
    """The features (extracted or cached), with the preset and the target file checked against the CLIP as soon as
    it is known, before extraction; returns what `features_from_args` does."""
    from ..spelling.losses import resolve_preset

    def check(clip):
        resolve_preset(args.space, args.dim, args.weights, args.gamma, clip.embed_dim)
        _target(args, clip.identity)

    features, identity, folder, extract_s = features_from_args(args, on_clip=check)
    resolve_preset(args.space, args.dim, args.weights, args.gamma, features.embed_dim)
    return features, identity, folder, extract_s


def _train(features, config, say):
    """Train W on the train split (keeping the epoch of lowest val loss), logging each epoch; returns (result, the
    too-few-steps warning or None)."""
    from ..spelling.train import too_few_steps_warning, train_projection

    train = features.part("train") if features.split is not None else features
    short = too_few_steps_warning(len(train), config, features.embed_dim)
    if short:
        print(f"vqclip train: {short}", file=sys.stderr)  # shown with -q too: it is not progress

    def on_epoch(r):
        val = f" val {r['val_loss']:.4f}" if "val_loss" in r else ""
        say(f"epoch {r['epoch']:3d}  step {r['step']:6d}  train {r['train_loss']:.4f}{val}  R {r['train_R']:.4f}")

    say(EPOCH_LOG_HEADER)
    val = features.part("val") if features.split is not None else None
    return train_projection(train, val, config, on_epoch), short


def _write(args, result, features, identity: str, target: Path, folder, test):
    """Write the projection file with its recipe, split sizes and test metrics; returns its path."""
    from ..io import disk_errors
    from ..spelling.train import write_projection

    recipe = {**features.metadata.get("recipe", {}), "features": str(folder),
              "clip_precision": features.metadata.get("clip_precision")}
    with disk_errors("--out-file" if args.out else "--cache-dir", "no projection file was written (no partial file is "
                     "left)"):
        return write_projection(result, identity, target, recipe=recipe, split_sizes=features.split_sizes(),
                                metrics={"test": test} if test else None, overwrite=True)


def _report(args, path, result, test, test_split: str, short, summary: dict) -> None:
    """The test table and the `wrote` line on stdout, and the summary as --json."""
    from ..io import check_replaceable, disk_errors, record_written, write_json
    from ..spelling.retrieval import format_table

    if test:
        print(f"{test_split} split ({test['n']} tuples):")
        print(format_table({"clip": test["clip"], result.space: test["projection"]}))
    print(f"wrote {path}  (d={result.dim}, best epoch {result.best_epoch}, trained in {result.seconds:.1f} s"
          + ("; too few steps to matter, see the warning above)" if short else ")"))
    if args.json:
        with disk_errors("--json", f"the projection {path} is written"):
            check_replaceable([args.json], args.overwrite, "--json")
            write_json(args.json, summary)
            record_written(args.json)


def _run_direction(args) -> int:
    """`vqclip train --direction textoff`: the text direction from the cached features, written beside the
    projections with its provenance (no training loop, so the training flags do not apply)."""
    from ..io import check_replaceable, check_writable, disk_errors, record_written, write_json
    from ..projections.direction import TRAIN_SOURCE
    from ..spelling.direction import direction_agreement, text_direction, write_direction

    check_out_file(args, "train")
    if args.json:
        check_replaceable([args.json], args.overwrite, "--json")
        check_writable(Path(args.json).parent, "--json")
    features, identity, folder, _ = features_from_args(args, on_clip=lambda clip: _target(args, clip.identity))
    target = _target(args, identity)
    if args.extract_only:
        print(folder)
        return 0
    vector = text_direction(features)
    held_out = direction_agreement(features, vector)
    recipe = dict(features.metadata.get("recipe", {}))
    if "source" in recipe:  # the word list's source; `source` in a direction file says what made the file
        recipe["word_source"] = recipe.pop("source")
    record = {**recipe, "features": str(folder), "split_sizes": features.split_sizes(),
              "n_tuples": int(features.split_sizes().get("train", len(features))), "held_out": held_out,
              "source": TRAIN_SOURCE}
    with disk_errors("--out-file" if args.out else "--cache-dir", "no direction file was written"):
        path = write_direction(vector, identity, target, record=record)
    print(f"wrote {path}  (text direction of {identity}; on the {held_out['split']} split the written image lies "
          f"further along it in {held_out['share_written_further']:.0%} of {held_out['n']} tuples)")
    if args.json:
        with disk_errors("--json", f"the direction {path} is written"):
            check_replaceable([args.json], args.overwrite, "--json")
            write_json(args.json, {"direction": str(path), "clip_model": identity, "features": str(folder),
                                   "held_out": held_out})
            record_written(args.json)
    return 0
