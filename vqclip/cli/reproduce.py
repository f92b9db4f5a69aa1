"""`vqclip reproduce {typographic,ocr,all}`: the paper's headline experiments with one command, paper vs measured."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from ..errors import VqclipError, bad_arg
from .common import (add_cache_arg, add_clip_args, add_device_args, add_quiet_arg, check_memory, command_parser,
                     sigterm_as_interrupt)

PROG = "vqclip reproduce"
DEFAULT_OUT = "outputs/reproduce"
PARTS = ("typographic", "ocr", "all")


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


def _set_default(p, dest: str, value, help: str) -> None:
    """Change a shared flag's default to the paper's setting, and its help to say so."""
    for action in p._actions:
        if action.dest == dest:
            action.default, action.help = value, help
    p.set_defaults(**{dest: value})


def _ocr_args(p) -> None:
    from .choices import PAPER_GENERATION as G
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
    add_settings_args(p)
    add_model_args(p)
    _set_default(p, "recipe", "paper", "the generation recipe (default paper: Crowson's codebook-sampling notebook "
                 f"as the paper ran it, {G['method']} on {G['vqgan']}, {G['cutn']} cutouts, no augmentations, no "
                 "noise); flags given explicitly win and the report lists them as overrides")
    _set_default(p, "seed", 0, "seed of every image and of the drawn word list (default 0)")


def command_line(args) -> str:
    """The command as typed, rebuilt from the flags that differ from their defaults (for the report)."""
    parser = args._reproduce_parser
    words = ["vqclip", "reproduce", args.part]
    seen = set()
    for action in parser._actions:
        if not action.option_strings or action.dest in seen or action.default is argparse.SUPPRESS or \
                action.help is argparse.SUPPRESS or action.dest in ("help", "debug"):
            continue
        seen.add(action.dest)
        value = getattr(args, action.dest, None)
        if value == action.default or value is None:
            continue
        flag = action.option_strings[-1]
        if isinstance(value, bool):
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return shlex.join(words)


# ---------------------------------------------------------------------------------------------------- progress

class Progress:
    """One bar over the whole run (tasks: photos, images to generate, images to OCR) above a per-image step bar."""

    def __init__(self, quiet: bool):
        from tqdm import tqdm

        self.tqdm, self.quiet = tqdm, quiet
        self.overall = tqdm(total=0, desc=PROG, unit="task", position=0, disable=quiet, dynamic_ncols=True)
        self.job = None

    def add(self, n: int) -> None:
        self.overall.total += n
        self.overall.refresh()

    def stage(self, name: str) -> None:
        self.overall.set_description(f"{PROG}: {name}")

    def advance(self, n: int = 1) -> None:
        self.overall.update(n)

    # BatchHooks
    def on_job_start(self, job, settings) -> None:
        if self.job is None:  # a group of images starts together: one step bar for the group
            self.job = self.tqdm(total=settings.steps, desc=job.id, unit="step", position=1, leave=False,
                                 disable=self.quiet, dynamic_ncols=True)

    def on_step(self, info) -> None:
        if self.job is not None:  # the loop may report every few steps (every 10 on a GPU)
            self.job.update(max(0, info.step - self.job.n))

    def on_job_end(self, job, outcome, line) -> None:
        if self.job is not None:
            self.job.close()
            self.job = None
        if outcome != "done":
            self.advance(1)
        if outcome == "failed":
            self.tqdm.write(f"{PROG}: image {job.id} failed: {line.get('error') if line else ''}", file=sys.stderr)

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
        self.overall.close()


class CountingReader:
    """An OCR reader that moves the overall bar by the images it reads."""

    def __init__(self, reader, progress: Progress):
        self.reader, self.progress, self.key, self.count = reader, progress, reader.key, 0

    def read(self, images):
        out = self.reader.read(images)
        self.count += len(images)
        self.progress.advance(len(images))
        return out


def say(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------- typographic

def projection_files(args) -> dict[str, str | None]:
    return {"learn": args.projection_learn, "forget": args.projection_forget}


def offline_hint(args, vqgan: bool = False, already: str = "") -> str:
    """What else an offline run needs by hand: the paper's projections (and, for generation, the VQGAN files) that
    are not cached, with where each goes. Folders `already` names are left out."""
    from ..models.clip import clip_identity
    from ..models.registry import cache_status, cached_file, VQGAN_ASSETS
    from ..projections import registered_projection
    from ..projections.published import published_dir
    from ..projections import projection_path

    needed = []
    try:
        identity = clip_identity(args.clip, args.pretrained)
    except Exception:  # noqa: BLE001 - an identifier the loader will reject with its own message
        identity = None
    for space, given in projection_files(args).items():
        asset = registered_projection(identity, space) if identity else None
        if given or asset is None or projection_path(space, identity, args.cache_dir).is_file():
            continue
        needed.append((f"the paper's projections, the folder {asset.folders[0]}", published_dir(asset, args.cache_dir)))
    name = getattr(args, "vqgan", None)
    if vqgan and not getattr(args, "vqgan_checkpoint", None) and name in VQGAN_ASSETS:
        asset = VQGAN_ASSETS[name]
        if cache_status(asset, args.cache_dir) == "not cached":
            for remote in (asset.config, asset.checkpoint):
                needed.append((f"{remote.filename} from {remote.urls[0]}", cached_file(asset, remote, args.cache_dir)))
    text = ""
    for what, where in dict.fromkeys(needed):
        if str(where) not in already:
            text += f" Also needed offline: {what} in {where}{'/' if not Path(str(where)).suffix else ''}."
    return text


def dataset_root(args, progress: bool) -> Path:
    from ..evaluate.typographic import fetch_paper_dataset, find_dataset_root

    if args.dataset:
        root = find_dataset_root(Path(args.dataset).expanduser())
        if root is None:
            raise bad_arg("--dataset", "no annotation.json or annotations.json in the folder or below it",
                          args.dataset, "Point at the folder of the paper's typographic-attack photos.")
        return root
    try:
        return fetch_paper_dataset(args.cache_dir, progress=progress)
    except VqclipError as e:
        raise VqclipError(f"{e}{offline_hint(args, vqgan=hasattr(args, 'vqgan'), already=str(e))}") from None


def typographic_spaces(clip, args):
    """clip, learn and forget: a --projection-SPACE file is loaded as that space (the flag says which, so the
    paper's torch files holding only W load without a --space reproduce does not have); the others come from the
    cache or the registry."""
    from ..evaluate.common import resolve_eval_spaces
    from ..projections import resolve_space

    given = {space: resolve_space(space, clip.identity, clip.embed_dim, path, args.cache_dir,
                                  clip_flags=clip.cli_flags(), projection_arg=f"--projection-{space}")
             for space, path in projection_files(args).items() if path}
    spaces = resolve_eval_spaces(clip.identity, clip.embed_dim, [s for s in ("clip", "learn", "forget")
                                                                 if s not in given], [], args.cache_dir,
                                 clip_flags=clip.cli_flags())
    return {**spaces, **given}


def model_files(clip_args, spaces, vqgan_info=None) -> dict:
    """Names and sha256 of the model files in use (projections, an explicit CLIP checkpoint, the VQGAN file)."""
    from ..reproduce.report import file_hashes

    paths = {f"{name} projection": sp.metadata.get("path") for name, sp in spaces.items() if sp.W is not None}
    pretrained = Path(str(clip_args.pretrained or "")).expanduser()
    if clip_args.pretrained and pretrained.is_file():
        paths["clip checkpoint"] = pretrained
    if vqgan_info and vqgan_info.get("checkpoint"):
        paths["vqgan"] = vqgan_info["checkpoint"]
    return file_hashes(paths)


def run_typographic_part(args, clip, root: Path, progress: Progress | None) -> dict:
    from ..evaluate.typographic import check_template
    from ..reproduce.typographic import run_typographic

    check_template(args.template)
    spaces = typographic_spaces(clip, args)
    if progress is not None:
        progress.stage("typographic attacks")
    section = run_typographic(root, clip, spaces, Path(args.out) / "typographic", args.template, args.batch_size,
                              progress=not args.quiet)
    if progress is not None:
        progress.advance(section["dataset"]["images"])
    section["models"] = {"names": {"clip": clip.identity}, "files": model_files(args, spaces)}
    return section


def print_typographic(section: dict) -> None:
    from ..reproduce.paper import format_comparison, format_paper

    d = section["dataset"]
    print(f"Typographic attacks: {d['evaluated']} photos ({d['clean']} clean, {d['attacked']} attacked listed), "
          "object accuracy on all images, % [95 % CI] (k/n):")
    for r in section["rows"]:
        print(f"  {r['protocol_label']:<24} {r['space']:<7} {format_comparison(r):<28} paper {format_paper(r)}")
    for note in section["notes"]:
        print(f"  note: {note}")


def check_common(args) -> None:
    from ..io import check_writable
    from ..reproduce.report import check_report_folder

    if getattr(args, "batch_size", 1) < 1:
        raise bad_arg("--batch-size", "must be at least 1", args.batch_size, "Try 32.")
    check_report_folder(args.out)
    check_writable(args.out, "--out")
    if args.part in ("typographic", "all"):  # a user's file under typographic/ is refused before any work
        from ..evaluate.typographic import check_report_out

        check_report_out(Path(args.out) / "typographic", overwrite=False)


def run_typographic_command(args) -> int:
    from ..evaluate.typographic import check_template
    from ..reproduce.report import write_report
    from .common import load_clip_from_args, preflight_from_args

    check_common(args)
    check_template(args.template)
    preflight_from_args(args, paper_dataset=not args.dataset)
    start = time.perf_counter()
    root = dataset_root(args, not args.quiet)
    fetched = time.perf_counter() - start
    clip = load_clip_from_args(args)
    section = run_typographic_part(args, clip, root, None)
    section["timing"] = {"fetch": round(fetched, 2), "evaluate": section["seconds"]}
    write_report(args.out, {"typographic": section}, command_line(args))
    print_typographic(section)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


# --------------------------------------------------------------------------------------------------------- ocr

class OcrPlan:
    """Everything decided before any model is loaded: words, settings, batch record, this process's share."""

    def __init__(self, args):
        from ..batch import check_batch_dir
        from ..batch.plan import check_item_settings, model_identity
        from ..batch.shard import resolve_shard, shard_jobs
        from ..batch.store import job_state, manifest_ok
        from ..errors import check_seed
        from ..reproduce import ocr
        from .batch import projections_from_args
        from .generate import settings_from_args

        args.group_size = ocr.parse_group_size(args.group_size)
        if args.ocr_batch_size < 1:
            raise bad_arg("--ocr-batch-size", "must be at least 1", args.ocr_batch_size, "Try 8.")
        if args.grid_words < 0:
            raise bad_arg("--grid-words", "must be 0 (no grid) or more", args.grid_words, "Try 8.")
        check_seed(args.seed)
        self.spaces = ("clip", "learn", "forget")
        self.folder = Path(args.out) / "ocr"
        self.batch_dir = self.folder / "batch"
        self.base = settings_from_args(args, "")
        ocr.base_settings_record(self.base)  # flag errors name the flag before any word is blamed
        self.shard = resolve_shard(args.shard)
        self.projections = projections_from_args(args, self.spaces)
        models_id = model_identity(args.clip, args.pretrained, args.vqgan, args.vqgan_config, args.vqgan_checkpoint,
                                   args.precision)
        if args.scale is not None or not args.words:
            self.per_set = ocr.words_per_set(1.0 if args.scale is None else args.scale)
        self.words = ocr.word_list(self.folder, args.seed, args.words, save=False)  # saved when generating
        if args.scale is None and args.words:  # your own list: all of it (as many of each set as both have)
            self.per_set = max(1, min(sum(self.words.is_real), len(self.words) - sum(self.words.is_real)))
        self.scale = self.per_set / ocr.PER_SET
        self.items = ocr.word_items(ocr.select_words(self.words, self.per_set, "--words" if args.words else "--scale"))
        check_item_settings(self.items, self.base)
        self.spec = ocr.make_spec(self.items, self.spaces, args.seed, self.base, models_id, self.projections)
        self.record = self.spec.to_record()
        try:
            self.action = check_batch_dir(self.batch_dir, self.record)
        except VqclipError as e:  # `vqclip batch` offers --overwrite here; reproduce never redoes finished images
            text = str(e)
            for offer, instead in ((", choose another --out, or pass --overwrite to redo its jobs with the new "
                                    "settings", " or choose another --out"), (", or pass --overwrite", ""),
                                   (" or pass --overwrite", "")):
                text = text.replace(offer, instead)
            error = VqclipError(text)
            error.arg = e.arg
            raise error from None
        self.mine = shard_jobs(self.spec.jobs, self.shard)
        ok = manifest_ok(self.batch_dir) if self.batch_dir.is_dir() else {}
        self.todo = [j for j in self.mine if job_state(self.batch_dir, j, self.spec.job_fp(j), ok) == "todo"]

    def unfinished(self) -> list:
        from ..batch.store import job_state, manifest_ok

        ok = manifest_ok(self.batch_dir) if self.batch_dir.is_dir() else {}
        return [j for j in self.spec.jobs if job_state(self.batch_dir, j, self.spec.job_fp(j), ok) != "done"]

    def describe(self) -> str:
        return (f"{self.per_set} real + {self.per_set} nonsense words x {len(self.spaces)} spaces = "
                f"{len(self.spec.jobs)} images; share {self.shard}: {len(self.mine)}, {len(self.todo)} to generate")


def load_generation_models(args, plan: OcrPlan):
    from .batch import shard_device
    from .generate import load_models_from_args

    check_memory([(plan.base.size, plan.base.cutn, "")], args.device, args)
    shard_device(args, plan.shard)
    try:
        return load_models_from_args(args, [(s, plan.projections.get(s), f"--projection-{s}") for s in plan.spaces],
                                     PROG)
    except VqclipError as e:  # offline: name every folder still to fetch by hand, not one per attempt
        hint = offline_hint(args, vqgan=True, already=str(e))
        if not hint:
            raise
        error = VqclipError(f"{e}{hint}")
        error.arg, error.exit_code = e.arg, e.exit_code
        raise error from None


def measure(args, plan: OcrPlan, models, reader) -> dict:
    from ..reproduce import ocr

    from ..batch.plan import job_settings

    group = ocr.images_per_group(args.group_size, models, job_settings(plan.base, plan.items[0], args.seed))
    group = max(1, min(group, len(plan.todo) or 1))
    probe = ocr.measure_step_seconds(models, plan.base, plan.spaces[0], plan.projections.get(plan.spaces[0]),
                                     group=group)
    ocr_seconds = ocr.measure_ocr_seconds(reader, probe["image"]) if reader is not None else None
    est = ocr.estimate(len(plan.todo), plan.base.steps, probe["seconds_per_step"], len(plan.spec.jobs), ocr_seconds,
                       ocr.device_name(models), plan.shard.count)
    est["group"] = group
    est["measured_in"] = (f"1 + {probe['steps_measured'] - 1} steps of {group} probe image(s) in the "
                          f"{probe['space']} space")
    est["grouping"] = ocr.grouping_note(args.group_size, group)
    est["text"] = ocr.estimate_text(est)
    return est


def run_ocr_part(args, plan: OcrPlan, models, reader, progress: Progress, est: dict | None) -> tuple[dict | None, int]:
    """Generate this share, then (when every share is done) score, draw the grids and return the report section."""
    from ..batch import open_batch_dir
    from ..reproduce import ocr

    timing = {}
    start = time.perf_counter()
    ocr.save_words(plan.words, plan.folder)
    open_batch_dir(plan.batch_dir, plan.record, plan.action)
    progress.stage("generating")
    summary = ocr.generate(plan.spec, plan.mine, plan.base, models, plan.batch_dir, progress, args.group_size,
                           {"shard": str(plan.shard)})
    timing["generation"] = round(time.perf_counter() - start, 2)
    if summary.stopped:
        from ..errors import OutputError

        raise OutputError(f"--out {args.out}: stopped early: {summary.stopped}; every finished image is kept. Free "
                          "some space and run the same command again to resume.")
    if summary.interrupted:
        return None, 130
    unfinished = plan.unfinished()
    mine = {j.id for j in plan.mine}
    others = [j for j in unfinished if j.id not in mine]
    if plan.shard.count > 1 and others:
        say(f"share {plan.shard} finished ({summary.ok} generated, {summary.failed} failed); {len(others)} images "
            "of other shares are not done yet. Scoring and the report follow when the last share finishes (or run "
            "the same command without --shard).")
        return None, 1 if summary.failed else 0
    progress.stage("OCR")
    start = time.perf_counter()
    counting = CountingReader(reader, progress)
    scored = ocr.score(plan.batch_dir, [j.id for j in plan.spec.jobs], plan.folder / "score", counting,
                       args.cache_dir, batch_size=args.ocr_batch_size, progress=not args.quiet,
                       extra={"experiment": "vqclip reproduce ocr", "scale": plan.scale})
    progress.advance(max(0, len(plan.spec.jobs) - counting.count))
    timing["ocr"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    grids = [str(p) for p in ocr.comparison_grids(plan.batch_dir, plan.items, plan.folder, args.grid_words)] \
        if args.grid_words else []
    timing["grid"] = round(time.perf_counter() - start, 2)
    timing["generation_seconds_per_image"] = round(
        sum(line.get("seconds") or 0 for line in _ok_lines(plan)) / max(1, len(_ok_lines(plan))), 3)
    spaces = {s: models.space(s, plan.projections.get(s)) for s in plan.spaces} if models is not None else {}
    words = plan.words.recipe
    section = {
        "scale": plan.scale, "seed": args.seed, "spaces": list(plan.spaces),
        "words": {"per_set": plan.per_set, "file": str(plan.folder / ocr.WORDS_NAME), "recipe": words,
                  "source": _words_source(words)},
        "jobs": {"planned": len(plan.spec.jobs), "generated_now": summary.ok, "failed": summary.failed,
                 "unfinished": len(unfinished), "scored": scored["n_scored"], "skipped": scored["n_skipped"]},
        "complete": not unfinished,
        "settings": plan.record["settings"], "recipe": plan.base.with_recipe().recipe_record(),
        "batch_fingerprint": plan.spec.fingerprint,
        "grouping": ocr.grouping_note(args.group_size, (est or {}).get("group")), "ocr": scored.get("ocr"),
        "thresholds": scored["thresholds"],
        "rows": ocr.comparison_rows(scored["groups"], scored["thresholds"]),
        "legibility": ocr.legibility_rows(scored["groups"]),
        "grids": grids, "estimate": est, "timing": timing,
        "models": {"names": {"clip": args.clip, "pretrained": args.pretrained,
                             "vqgan": args.vqgan_checkpoint or args.vqgan,
                             "device": ocr.device_name(models) if models is not None else None},
                   "files": model_files(args, spaces, models.vqgan_info if models is not None else None)},
        "files": {"batch": str(plan.batch_dir), "words": str(plan.folder / ocr.WORDS_NAME),
                  **{k: v for k, v in scored["files"].items()}},
    }
    return section, 1 if summary.failed else 0


def _ok_lines(plan: OcrPlan) -> list[dict]:
    from ..io import read_jsonl

    ids = {j.id for j in plan.spec.jobs}
    return [line for line in read_jsonl(plan.batch_dir / "manifest.jsonl")
            if line.get("status") == "ok" and line.get("id") in ids]


def _words_source(recipe: dict) -> str:
    if recipe.get("source") == "wordfreq":
        return (f"drawn with seed {recipe.get('seed')}: real words from the {recipe.get('vocab')} most frequent "
                f"English words of wordfreq {recipe.get('wordfreq')}, {recipe.get('min_len')}-{recipe.get('max_len')}"
                " letters a-z; nonsense: random letter strings wordfreq does not know")
    return f"from the file {recipe.get('path')}"


def print_ocr(section: dict) -> None:
    from ..reproduce.paper import format_comparison, format_paper

    j = section["jobs"]
    print(f"Text in generated images: {j['scored']} images scored of {j['planned']} planned"
          f"{'' if section['complete'] else ' (incomplete)'}; share with any OCR text, % [95 % CI] (k/n):")
    for r in section["rows"]:
        print(f"  > {r['threshold']:<4g} {r['word_type']:<8} {r['space']:<6} {format_comparison(r):<28} "
              f"paper {format_paper(r)}")


def _ocr_reader(args):
    from ..reproduce import ocr

    try:
        return ocr.ocr_reader(args.device)
    except ImportError as e:  # one clear line with the install command, before any image is generated
        raise VqclipError(str(e)) from e


def _run_ocr(args, typographic: bool) -> int:
    from ..reproduce.report import write_report

    check_common(args)
    if typographic:
        from ..evaluate.typographic import check_template

        check_template(args.template)
    timing = {}
    plan = OcrPlan(args)
    info = print if args.dry_run else (lambda text: None) if args.quiet else say  # -q hides info lines
    info(f"plan: {plan.describe()}")
    if not _preflight(args, plan, typographic):
        return 0  # a dry run offline: the plan and what is missing, printed
    start = time.perf_counter()
    root = dataset_root(args, not args.quiet) if typographic else None
    timing["fetch"] = round(time.perf_counter() - start, 2)
    reader = _ocr_reader(args)
    start = time.perf_counter()
    models = load_generation_models(args, plan)  # also when nothing is left: the report hashes its files
    timing["load"] = round(time.perf_counter() - start, 2)
    est = None
    if models is not None and (plan.todo or args.dry_run):
        start = time.perf_counter()
        est = measure(args, plan, models, reader)
        timing["estimate"] = round(time.perf_counter() - start, 2)
        info(est["text"])
    if args.dry_run:
        return 0
    progress = Progress(args.quiet or (plan.shard.source == "torchrun" and plan.shard.index != 0))
    typographic = typographic and plan.shard.index == 0  # the photos are evaluated once, by the first share
    sections: dict = {}
    try:
        progress.add(len(plan.todo) + len(plan.spec.jobs))
        if typographic:
            from ..evaluate.typographic import open_typographic_dataset

            progress.add(len(open_typographic_dataset(root, "annotation").samples))
            start = time.perf_counter()
            sections["typographic"] = run_typographic_part(args, models.clip, root, progress)
            sections["typographic"]["timing"] = {"fetch": timing["fetch"], "evaluate": round(time.perf_counter() -
                                                                                             start, 2)}
        section, code = run_ocr_part(args, plan, models, reader, progress, est)
    finally:
        progress.close()
    if section is not None:
        section["timing"] = {**{k: v for k, v in timing.items() if k != "fetch"}, **section["timing"]}
        sections["ocr"] = section
    if sections:
        write_report(args.out, sections, command_line(args))
    if "typographic" in sections:
        print_typographic(sections["typographic"])
    if section is not None:
        print_ocr(section)
    if sections:
        print(f"report: {Path(args.out) / 'report.md'}")
    if code == 130:
        say("interrupted; finished images are kept. Run the same command again to resume.")
    return code


def _preflight(args, plan: OcrPlan, typographic: bool) -> bool:
    """Every file the run needs (CLIP, VQGAN, the projections, the paper's photos), before any download: one
    message for all that are missing when they cannot be fetched. A --dry-run without network prints them and
    returns False (the time estimate needs the models) instead of failing."""
    from ..preflight import format_table, network_available, preflight
    from .common import plan_from_args

    needs = plan_from_args(args, [(s, plan.projections.get(s)) for s in plan.spaces], vqgan=True,
                           paper_dataset=typographic and not args.dataset)
    if args.dry_run and any(not n.present for n in needs) and not network_available():
        print("no network: the time estimate needs the models, and these are missing:")
        print(format_table([n for n in needs if not n.present]))
        return False
    preflight(needs)
    return True


def run_ocr_command(args) -> int:
    with sigterm_as_interrupt():
        return _run_ocr(args, typographic=False)


def run_all_command(args) -> int:
    with sigterm_as_interrupt():
        return _run_ocr(args, typographic=True)
