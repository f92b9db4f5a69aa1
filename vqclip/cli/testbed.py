"""`vqclip testbed`: train a small CLIP on a synthetic world and measure learn / forget to spell on it (CPU)."""

from __future__ import annotations

import argparse

from .common import add_quiet_arg, command_parser, sigterm_as_interrupt


def register(sub) -> None:
    p = command_parser(
        sub, "testbed", help="reproduce the paper's qualitative claims in a synthetic world, on the CPU, no downloads",
        description="Generate a synthetic world of drawn objects and written words, train a small open_clip CLIP on "
                    "it from scratch, build five-tuples, train learn / forget projections with the standard trainer, "
                    "and evaluate clean / attacked accuracy and word retrieval in clip, learn and forget spaces. "
                    "Writes the model, projections, attack set and a results table (Markdown + JSON) to --out. "
                    "Exits with status 1 when a direction is not reproduced.",
        examples=["vqclip testbed --quick --out outputs/testbed-quick   # a few minutes on 2 CPU cores",
                  "vqclip testbed --quick --seeds 0-2                    # median over three seeds"])
    _add_run_args(p)
    _add_projection_args(p)
    _add_generation_args(p)
    add_quiet_arg(p, "no progress bars")
    p.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.set_defaults(func=run)


def _default(field: str) -> str:
    """The help's "(default N)" of a TestbedConfig field, with the --quick value when it differs."""
    from .choices import TESTBED_DEFAULTS

    value, quick_value = TESTBED_DEFAULTS[field]
    return f"(default {value})" if value == quick_value else f"(default {value}; {quick_value} with --quick)"


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """Where the run goes, its seeds, the world and the small CLIP."""
    p.add_argument("--out", default="outputs/testbed", metavar="DIR", help="output folder (default: outputs/testbed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the world, the CLIP and the projections (default: 0)")
    p.add_argument("--seeds", default=None, metavar="LIST",
                   help="run every seed (e.g. 0,1,2 or 0-5) into --out/seed-N and check the directions on the median "
                        "over the seeds, as the test suite does; replaces --seed")
    p.add_argument("--quick", action="store_true",
                   help="the reduced configuration the test suite runs (6 classes; about 2.5 minutes a seed on 2 cores "
                        "instead of 7)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help=f"contrastive training steps of the small CLIP {_default('clip_steps')}")
    p.add_argument("--pairs", type=int, default=None, metavar="N",
                   help=f"image-caption pairs to train the CLIP on {_default('n_pairs')}")
    p.add_argument("--tuples", type=int, default=None, metavar="N",
                   help=f"five-tuples for the projections {_default('n_tuples')}")
    p.add_argument("--attacks", type=int, default=None, metavar="N",
                   help=f"objects to attack with a wrong word {_default('n_attacks')}")
    p.add_argument("--clip-crop", type=float, default=None, metavar="S",
                   help="train the CLIP on random square crops of side S..1 of the picture, rescaled, like the "
                        "generator's cutouts (default 1: none; the drawing recipe uses 0.6, docs/testbed.md)")
    p.add_argument("--robust-steps", type=int, default=None, metavar="N",
                   help="then fine-tune the CLIP adversarially (PGD-L2, radius growing to --robust-eps) for N steps, "
                        "so that its gradients draw shapes (default 0: off; about 0.4 s a step on one thread)")
    p.add_argument("--robust-eps", type=float, default=None, metavar="E",
                   help="the adversarial fine-tune's L2 radius in [0, 1] pixel units (default 3.0)")
    p.add_argument("--reuse-clip", action="store_true",
                   help="keep the small CLIP already in --out when it was trained with the same world and settings "
                        "(to try projection settings in seconds)")


def _add_projection_args(p: argparse.ArgumentParser) -> None:
    """The learn / forget projections' training settings (the trainer's presets by default)."""
    from .choices import DEFAULT_GAMMA

    g = p.add_argument_group("projections (defaults: the trainer's learn / forget presets)")
    g.add_argument("--epochs", type=int, default=None, metavar="N",
                   help=f"projection training epochs {_default('proj_epochs')}")
    g.add_argument("--proj-lr", type=float, default=None, metavar="LR",
                   help=f"projection learning rate {_default('proj_lr')}")
    g.add_argument("--learn-dim", type=int, default=None, metavar="D", help="d of the learn projection (default: "
                   "the learn preset's, 64 of 512 scaled to the small CLIP's width)")
    g.add_argument("--forget-dim", type=int, default=None, metavar="D", help="d of the forget projection (default: "
                   "the forget preset's, 256 of 512 scaled to the small CLIP's width)")
    g.add_argument("--learn-weights", default=None, metavar="TERMS",
                   help="e.g. L1=-1,L3=1,L4=1,L5=1 or full-learn (default: the learn preset)")
    g.add_argument("--forget-weights", default=None, metavar="TERMS",
                   help="e.g. L1=1,L2=1,L5=-1,L6=1 or full-forget (default: the forget preset)")
    g.add_argument("--gamma", type=float, default=None,
                   help=f"weight of the orthogonality penalty (default {DEFAULT_GAMMA}, the trainer's)")
    g.add_argument("--include-class-words", action="store_true",
                   help="let the five-tuples write the class names too (by default they are held out, so attacks "
                        "use words the projections never saw)")


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    """--generate and its settings: the paper's OCR table in the world."""
    from .choices import TEXT_MODES

    g = p.add_argument_group("generation: the paper's OCR table in the world")
    g.add_argument("--generate", action="store_true",
                   help="also train a VQGAN of the world and independent judges (text detector, object classifier), "
                        "generate every class word and phrase in clip, learn and forget space with `vqclip batch` "
                        "(from a blank page), score the images with `vqclip score --detector world:...`, print the "
                        "generation table and check that forget writes the word less, learn the phrase more")
    g.add_argument("--gen-seeds", default=None, metavar="LIST",
                   help="generation seeds per prompt and space (default 0,1,2)")
    g.add_argument("--world-models", default=None, metavar="DIR",
                   help="take the world VQGAN and judges from DIR (the world-models/ folder of an earlier --generate "
                        "run) instead of training them again (about 5 minutes on one CPU thread)")
    g.add_argument("--gen-steps", type=int, default=None, metavar="N",
                   help="VQGAN+CLIP steps per image (default 100)")
    g.add_argument("--gen-templates", default=None, metavar="LIST",
                   help="prompt templates to generate: word (the bare class word), phrase (\"an image of a ...\"); "
                        "default word,phrase")
    g.add_argument("--methods", default=None, metavar="LIST",
                   help="also measure ways of keeping text out beside the three spaces, e.g. "
                        "negative,textoff,forget+negative (the testbed's own text direction; the negative prompt in "
                        "the world's words, 'the word'); written to generation-methods/ (docs/testbed.md)")
    g.add_argument("--textoff-mode", default=None, choices=TEXT_MODES,
                   help="how --methods uses the text direction: target (a negative target, the default) or project "
                        "(removed from every embedding; written to generation-methods-project/)")


def run(args) -> int:
    from ..io import no_empty_folders_left

    with no_empty_folders_left(args.out):  # Ctrl-C or a failure before anything is written leaves no empty --out
        return _run(args)


def _run(args) -> int:
    config = _testbed_config(args)
    gen_config = _gen_config(args)  # checked before minutes of training
    _say_estimate(args, config, gen_config)
    result, wrote, seconds = _run_testbed(args, config)
    checks = list(result["checks"])
    if args.generate:
        gen = _generate(args, config, gen_config)
        checks += gen["checks"]
        seconds += gen["seconds"]
        wrote += ", generation_summary.md, world-models/, */generation/"
    for check in checks:
        print(f"[{'ok' if check['passed'] else 'FAILED'}] {check['claim']}: {check['detail']}")
    print(f"\n{seconds:.0f} s; wrote {wrote} in {args.out}")
    return _exit_status(args, checks)


def _testbed_config(args):
    """The TestbedConfig of the flags: --quick's or the full one, with every flag given."""
    from dataclasses import replace

    from ..testbed.config import TestbedConfig

    config = TestbedConfig.quick(args.seed) if args.quick else TestbedConfig(seed=args.seed)
    overrides = {"clip_steps": args.steps, "n_pairs": args.pairs, "n_tuples": args.tuples,
                 "n_attacks": args.attacks, "proj_epochs": args.epochs, "proj_lr": args.proj_lr,
                 "learn_dim": args.learn_dim, "forget_dim": args.forget_dim, "learn_weights": args.learn_weights,
                 "forget_weights": args.forget_weights, "gamma": args.gamma, "clip_crop": args.clip_crop,
                 "robust_steps": args.robust_steps, "robust_eps": args.robust_eps}
    return replace(config, **{k: v for k, v in overrides.items() if v is not None},
                   include_class_words=args.include_class_words or config.include_class_words)


def _say_estimate(args, config, gen_config) -> None:
    """One line on stderr before any work (unless --quiet): about how long the run takes on a quiet 2-core
    machine."""
    import sys

    if args.quiet:
        return
    from ..batch.plan import parse_seeds
    from ..testbed.config import estimate_seconds

    seeds = len(parse_seeds(args.seeds)) if args.seeds is not None else 1
    images = 0
    if gen_config is not None:
        columns = len(gen_config.columns)
        images = seeds * len(config.classes) * len(gen_config.templates) * columns * len(gen_config.seeds)
    seconds = estimate_seconds(config, seeds, images, gen_config.steps if gen_config else 0,
                               gen_config is not None and args.world_models is None)
    what = f"{seeds} seed{'s' * (seeds > 1)}" + (f", {images} generated images" if images else "")
    print(f"testbed: {what}: about {max(1, round(seconds / 60))} min on a quiet 2-core machine, longer when it is "
          "busy", file=sys.stderr, flush=True)


def _run_testbed(args, config) -> tuple[dict, str, float]:
    """One run, or one per --seeds; its tables printed. Returns the result, what was written and the seconds."""
    from ..testbed.report import markdown_table
    from ..testbed.run import run_testbed  # looked up now: tests replace it

    if args.seeds is None:
        result = run_testbed(config, args.out, progress=not args.quiet, reuse_clip=args.reuse_clip)
        print(markdown_table(result["rows"]))
        return result, "results.md, results.json, clip/, learn.safetensors, forget.safetensors, attacks/", \
            result["seconds"]["total"]
    from ..batch.plan import parse_seeds
    from ..testbed.run import run_testbed_seeds

    result = run_testbed_seeds(config, parse_seeds(args.seeds), args.out, progress=not args.quiet,
                               reuse_clip=args.reuse_clip)
    for seed, run_ in result["per_seed"].items():
        print(f"seed {seed}\n{markdown_table(run_['rows'])}")
    print("directions on the median over seeds " + ", ".join(map(str, result["seeds"])) + ":")
    return result, "summary.md, summary.json and seed-N/", result["seconds"]


def _exit_status(args, checks: list[dict]) -> int:
    """1, with one line on stderr naming every direction not reproduced, when any failed; else 0."""
    failed = [c for c in checks if not c["passed"]]
    if not failed:
        return 0
    import sys

    report = "summary.md" if args.seeds is not None else "results.md"
    print(f"testbed: {len(failed)} of {len(checks)} directions not reproduced: "
          + "; ".join(f"{c['claim']} ({c['detail']})" for c in failed)
          + f". Every number is in {args.out}/{report}.", file=sys.stderr)
    return 1


def _gen_config(args):
    from ..testbed.generate import GenerationConfig

    if not args.generate:
        given = [args.gen_seeds, args.gen_steps, args.world_models, args.methods, args.gen_templates,
                 args.textoff_mode]
        if any(v is not None for v in given):
            from ..errors import bad_arg

            raise bad_arg("--gen-seeds/--gen-steps/--world-models/--methods/--gen-templates/--textoff-mode",
                          "only apply with --generate",
                          next(v for v in given if v is not None),
                          "Add --generate.")
        return None
    overrides = {}
    if args.gen_seeds is not None:
        from ..batch.plan import parse_seeds

        overrides["seeds"] = tuple(parse_seeds(args.gen_seeds, "--gen-seeds"))
    if args.gen_steps is not None:
        overrides["steps"] = args.gen_steps
    if args.methods is not None:
        overrides["methods"] = args.methods
    if args.textoff_mode is not None:
        overrides["textoff_mode"] = args.textoff_mode
    if args.gen_templates is not None:
        overrides["templates"] = tuple(t.strip() for t in args.gen_templates.split(",") if t.strip())
    if args.world_models is not None:
        from ..testbed.generate import load_world_models

        load_world_models(args.world_models)  # a wrong folder fails now, not after the testbed's minutes
    return GenerationConfig(**overrides)


def _generate(args, config, gen_config) -> dict:
    """The generation experiment on the testbed run(s) just made in --out; its tables printed. SIGTERM stops its
    batch as Ctrl-C does (finished images kept), as it did when the batch ran as `vqclip batch`."""
    from ..batch.plan import parse_seeds
    from ..testbed.generate import TEMPLATES, markdown_table, run_generation_on_testbed

    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    with sigterm_as_interrupt():
        gen = run_generation_on_testbed(args.out, config, seeds, gen_config, models_dir=args.world_models,
                                        progress=not args.quiet)
    for template, rows in gen["by_template"].items():
        print(f"\ngeneration, CLIP seeds {', '.join(map(str, gen['seeds']))} pooled, template {template} "
              f"(\"{TEMPLATES[template].format('star')}\"; percent [95 % interval]):")
        print(markdown_table(rows))
    return gen
