"""`vqclip generate PROMPT`: one image, with the CLIP loss in the clip, learn or forget space."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..errors import VqclipError, bad_arg, choices_hint, one_line
from .common import (add_cache_arg, add_clip_args, add_device_args, add_quiet_arg, check_memory, command_parser,
                     output_errors, sigterm_as_interrupt)
from .choices import VIDEO_FORMATS  # noqa: F401 - animate and tests take it from here


def add_model_args(p: argparse.ArgumentParser) -> None:
    add_clip_args(p)
    g = p.add_argument_group("VQGAN model")
    g.add_argument("--vqgan", default=None, metavar="NAME",
                   help="registry name (see `vqclip models list`; default: the recipe's, vqgan_imagenet_f16_16384 for vqclip and "
                        "nerdyrodent, vqgan_imagenet_f16_1024 for paper)")
    g.add_argument("--vqgan-config", default=None, metavar="YAML", help="taming config file, for offline use")
    g.add_argument("--vqgan-checkpoint", default=None, metavar="FILE",
                   help="taming checkpoint (.ckpt, state dict or .safetensors), for offline use")
    g = p.add_argument_group("projections")
    g.add_argument("--auto-train", action="store_true",
                   help="when no learn/forget projection exists for this CLIP (none cached, none registered, or "
                        "the registered download fails), train one first with the defaults of `vqclip train` "
                        "(downloads ImageNetV2 once; needs the train extra: pip install -e \".[train]\") and then generate")
    add_device_args(p)
    add_cache_arg(p)


def add_settings_args(p: argparse.ArgumentParser) -> None:
    """The flags that determine an image; shared with `vqclip batch`."""
    from .choices import AUGMENTATIONS, LOSSES, METHODS, OPTIMIZERS, RECIPES

    g = p.add_argument_group("space")
    g.add_argument("--projection", default=None, metavar="FILE",
                   help="projection file for the learn/forget space (default: the cached one for this CLIP); "
                        "without --space the file's own space is used, and --space clip with a file is an error; "
                        "a torch file holding only W may state its CLIP and orientation as FILE@NAME/TAG@dxD "
                        "(see docs/models.md)")
    g = p.add_argument_group("optimisation (defaults: the recipe's; shown for vqclip / paper / nerdyrodent)")
    g.add_argument("--recipe", default=None, choices=sorted(RECIPES),
                   help="a named set of settings proven equal to its anchor: vqclip (fast default), paper "
                        "(Crowson's codebook-sampling notebook, as the paper ran it), nerdyrodent (its generate.py "
                        "defaults); flags given explicitly win and run.json records them as overrides (docs/method.md)")
    g.add_argument("--size", nargs=2, type=int, default=None, metavar=("W", "H"),
                   help="image size in pixels, snapped down to a multiple of the VQGAN factor (480 480 / 480 480 / "
                        "512 512)")
    g.add_argument("--steps", type=int, default=None, help="optimisation steps (300 / 300 / 500)")
    g.add_argument("--lr", type=float, default=None, help="learning rate (default 0.1 for zquant, 0.05 for codebook)")
    g.add_argument("--optimizer", default=None, choices=sorted(OPTIMIZERS),
                   help="optimizer (default adam for zquant, adamw for codebook)")
    g.add_argument("--method", default=None, choices=METHODS,
                   help="zquant: Adam on continuous z with straight-through quantization; codebook: the paper's "
                        "codebook sampling on per-token logits (zquant / codebook / zquant)")
    g.add_argument("--loss", default="spherical", choices=sorted(LOSSES),
                   help="spherical: 2·arcsin(‖a−b‖/2)² (default); cosine: 1 − cos")
    g.add_argument("--cutn", type=int, default=None, help="cutouts per step, encoded by CLIP in one batch (32 / 64 / 32)")
    g.add_argument("--cut-pow", type=float, default=None, help="cutout size exponent; >1 favours small cutouts (1)")
    g.add_argument("--augment", default=None, metavar="LIST",
                   help=f"comma list of augmentations from {','.join(AUGMENTATIONS)}, or none "
                        "(affine,perspective,jitter,erasing / none / the same as kornia's Af,Pe,Ji,Er)")
    g.add_argument("--noise", type=float, default=None, help="maximum noise added to cutouts (0.1 / 0 / 0.1)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: drawn and recorded)")
    g.add_argument("--change-every", type=int, default=0, metavar="N",
                   help="a prompt with phases separated by '^' (\"a forest ^ a city\") moves to the next phase every "
                        "N steps and starts again from the first after the last, as nerdyrodent's story mode "
                        "(default 0: no phases)")
    g.add_argument("--image-prompt", action="append", default=[], metavar="PATH[:W]",
                   help="image target with optional weight; repeatable")
    g.add_argument("--image-prompt-mode", default="cutouts", choices=("cutouts", "centre"),
                   help="cutouts: encode an image prompt through the run's own cutouts of it at the run's size, "
                        "as Crowson's notebook and the common tools do (default); centre: one centre crop")
    g.add_argument("--noise-prompt", action="append", default=[], metavar="SEED[:W]",
                   help="a random target embedding drawn from SEED, with optional weight (negative pushes away); "
                        "repeatable")
    g.add_argument("--init-image", default=None, metavar="PATH", help="start from this image instead of noise")
    g.add_argument("--init-weight", type=float, default=0.0,
                   help="pull toward the initial latent (useful with --init-image); with --method codebook it "
                        "pulls the expected code softmax(logits)·codebook (default 0)")
    g.add_argument("--init-code-probability", type=float, default=None, metavar="P",
                   help="with --init-image and --method codebook: the probability each token starts on the "
                        "image's own code (default 0.95); lower starts from noisier samples around the image")
    g.add_argument("--save-best", action="store_true",
                   help="keep the image of the step with the lowest loss instead of the last one (run.json "
                        "records which step)")
    add_anti_text_args(p)


def add_anti_text_args(p: argparse.ArgumentParser) -> None:
    """Ways of keeping text out besides --space forget (docs/method.md §10); shared with `vqclip batch`."""
    from .choices import ANTI_TEXT_DEFAULTS as D
    from .choices import TEXT_MODES

    g = p.add_argument_group("keeping text out (besides --space forget)")
    g.add_argument("--anti-text", default=None, metavar="WAYS",
                   help="negative: a negative prompt in every phase; textoff: push away from this CLIP's text "
                        "direction (`vqclip train --direction textoff`); join both with '+' (default: none)")
    g.add_argument("--negative-text", default=D["negative_text"], metavar="TEXT",
                   help=f"the negative prompt's words (default {D['negative_text']!r})")
    g.add_argument("--negative-weight", type=finite_float, default=D["negative_weight"],
                   help=f"its weight, below zero (default {D['negative_weight']})")
    g.add_argument("--textoff", default=None, metavar="FILE",
                   help="text direction file (default: the one computed for this CLIP in the cache); pixray's "
                        "vectors/textoff.json works for OpenAI's CLIPs")
    g.add_argument("--textoff-mode", default=D["textoff_mode"], choices=TEXT_MODES,
                   help="target: a negative target, as pixray's vector prompt (default); project: the direction is "
                        "removed from every embedding")
    g.add_argument("--textoff-weight", type=finite_float, default=D["textoff_weight"],
                   help=f"the negative target's weight, below zero (default {D['textoff_weight']})")


def finite_float(text: str) -> float:
    """An argparse type: a finite number (`-inf`, `inf` and `nan` are refused when the command line is read, not at
    the first step)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}. Try e.g. -0.5")
    return value


def anti_text_uses(args: argparse.Namespace, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The ways of keeping text out that --anti-text (and `extra`, e.g. batch's space entries) turn on; refuses
    --textoff FILE when textoff is not among them (the file would be silently ignored)."""
    from ..generation.antitext import parse_anti_text

    ways = tuple(dict.fromkeys(parse_anti_text(args.anti_text) + tuple(extra)))
    if getattr(args, "textoff", None) and "textoff" not in ways:
        raise bad_arg("--textoff", "a text direction file is used only with --anti-text textoff (it would be "
                      "ignored)", args.textoff, "Add --anti-text textoff, or drop --textoff.")
    return ways


def check_args_early(args: argparse.Namespace, prompt: str) -> None:
    """The checks that need no model and no torch: prompt syntax, image and noise prompts, the ways of keeping text
    out; run before torch is imported, so a mistyped argument is reported in well under a second."""
    from ..generation.prompts import parse_image_prompt, parse_noise_prompt, parse_story

    if prompt:
        parse_story(prompt)
    for spec in args.image_prompt:
        parse_image_prompt(spec)
    for spec in args.noise_prompt:
        parse_noise_prompt(spec)
    anti_text_uses(args)


def fill_recipe_defaults(args: argparse.Namespace) -> None:
    """Give every optimisation flag left unset the value of `--recipe`, and --vqgan the recipe's VQGAN unless a
    checkpoint file is given; explicit flags are kept (Settings records those that differ as overrides)."""
    from ..generation.recipes import RECIPE_FIELDS, get_recipe, recipe_vqgan

    recipe = get_recipe(getattr(args, "recipe", None))
    args.recipe = recipe.name
    for name in RECIPE_FIELDS:
        if name != "augment" and getattr(args, name, None) is None:
            value = recipe.defaults[name]
            setattr(args, name, list(value) if isinstance(value, tuple) else value)
    if hasattr(args, "vqgan"):
        args.vqgan = recipe_vqgan(recipe.name, args.vqgan, getattr(args, "vqgan_checkpoint", None))


def settings_from_args(args: argparse.Namespace, prompt: str):
    from ..generation import Settings, parse_image_prompt
    from ..generation.prompts import parse_noise_prompt, parse_story

    phases = parse_story(prompt) if prompt else [[]]
    return Settings(prompts=phases[0], story=phases[1:],
                    image_prompts=[parse_image_prompt(s) for s in args.image_prompt],
                    size=tuple(args.size), steps=args.steps, lr=args.lr, optimizer=args.optimizer,
                    method=args.method, loss=args.loss, cutn=args.cutn, cut_pow=args.cut_pow,
                    augment=args.augment, noise=args.noise, seed=args.seed, init_image=args.init_image,
                    init_weight=args.init_weight, init_code_probability=args.init_code_probability,
                    change_every=args.change_every,
                    noise_prompts=[parse_noise_prompt(s) for s in args.noise_prompt],
                    image_prompt_mode=args.image_prompt_mode, save_best=args.save_best, recipe=args.recipe,
                    anti_text=args.anti_text or (), negative_text=args.negative_text,
                    negative_weight=args.negative_weight, textoff=args.textoff, textoff_mode=args.textoff_mode,
                    textoff_weight=args.textoff_weight)


def load_models_from_args(args: argparse.Namespace, spaces=(), prog: str = "vqclip generate"):
    """Load CLIP, then the `spaces` [(space, projection file, flag)] (fetched or, with --auto-train, trained),
    then the VQGAN."""
    from ..generation import load_models
    from .common import preflight_from_args

    preflight_from_args(args, spaces, vqgan=True)  # every missing file in one message, before anything loads
    quiet = getattr(args, "quiet", False)
    models = load_models(args.clip, args.pretrained, args.vqgan, args.vqgan_config, args.vqgan_checkpoint,
                         args.device, args.precision, args.cache_dir, spaces=spaces, auto_train=args.auto_train,
                         progress=not quiet, say=lambda text: print(f"{prog}: {text}", file=sys.stderr))
    if models.clip.device.type == "cuda":
        import torch

        torch.backends.cudnn.benchmark = True  # fixed image size: let cuDNN pick the fastest convolutions
    return models


_TYPE_RULES = {int: "a whole number", float: "a number", str: "text"}


def _config_scalar(action: argparse.Action, key: str, value, where: str):
    """One config value through the flag's own type and choices, as if it had been typed after the flag."""
    kind = action.type or str
    rule = _TYPE_RULES.get(kind, "a valid value")
    example = f"`{key}: {action.default}`" if action.default not in (None, [], ()) else f"`{key}: VALUE`"
    if isinstance(value, (bool, list, dict)) or value is None:
        raise bad_arg(where, f"must be {rule}", value, f"Write e.g. {example} (see --help for --{key.replace('_', '-')}).")
    try:
        converted = kind(value if isinstance(value, str) else str(value))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        detail = f" ({e})" if isinstance(e, argparse.ArgumentTypeError) else ""
        raise bad_arg(where, f"must be {rule}{detail}", value, f"Write e.g. {example}.") from None
    if action.choices is not None and converted not in action.choices:
        raise bad_arg(where, "not one of the choices", value, choices_hint(str(c) for c in action.choices))
    return converted


def config_value(action: argparse.Action, key: str, value, path: str):
    """A YAML value for `action`, checked like the flag would check it; errors name the file and the key."""
    where = f"--config {path}: {key}"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise bad_arg(where, "must be true or false", value, f"Write `{key}: true` or `{key}: false`.")
        return value
    if value is None and action.default is None:
        return None  # `lr: null` keeps the flag's "not given" meaning
    if isinstance(action, argparse._AppendAction):
        return [_config_scalar(action, key, v, where) for v in (value if isinstance(value, list) else [value])]
    if isinstance(action.nargs, int) or action.nargs in ("+", "*"):
        n = action.nargs
        if not isinstance(value, list) or (isinstance(n, int) and len(value) != n) or (n == "+" and not value):
            names = action.metavar if isinstance(action.metavar, tuple) else None
            shape = f"a list of {n} values" if isinstance(n, int) else "a list of values"
            example = f"[{', '.join(str(v) for v in action.default)}]" if isinstance(action.default, list) else "[...]"
            raise bad_arg(where, shape + (f" ({' '.join(names)})" if names else ""), value,
                          f"Write e.g. `{key}: {example}`.")
        return [_config_scalar(action, key, v, where) for v in value]
    if action.nargs == "?" and value is True and action.const is not None:
        return action.const  # `video: true` = the bare flag
    return _config_scalar(action, key, value, where)


def apply_config_file(parser: argparse.ArgumentParser, path: str) -> dict[str, str]:
    """`--config FILE.yaml` sets the parser's defaults (omegaconf); flags on the command line still win.

    Every value goes through the same type, choices and arity checks as its flag. Returns {dest: key in the file},
    so later errors about an option can say that its value came from the file.
    """
    from omegaconf import OmegaConf

    from ..untrusted import UntrustedFileError, config_problem, read_yaml

    try:
        # bounded first (a regular UTF-8 file of at most 1 MiB, nesting at most 32 deep, no alias bombs; at most
        # 256 keys and 10,000 values; `${key}` interpolations only, whose resolved text is at most 1 MiB), then
        # omegaconf for its interpolations
        data = read_yaml(path, "--config") or {}
        problem = config_problem(data)
        if problem:
            raise bad_arg("--config", f"could not read the YAML file ({problem[0]})", path, problem[1])
        cfg = OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    except UntrustedFileError as e:
        raise bad_arg("--config", f"could not read the YAML file ({e.rule})", path, e.fix) from None
    except VqclipError:
        raise
    except Exception as e:  # missing file, YAML syntax errors, interpolation errors
        raise bad_arg("--config", "could not read the YAML file", path, f"Check the file ({one_line(e, 200)}).") \
            from None
    if not isinstance(cfg, dict):
        raise bad_arg("--config", "the file must hold a mapping of option names to values", path,
                      "Write e.g. `steps: 200` on its own line.")
    actions = {a.dest: a for a in parser._actions
               if a.dest not in ("help", "config", "func") and not a.dest.startswith("_")}
    keys = {str(k).replace("-", "_"): str(k) for k in cfg}
    cfg = {str(k).replace("-", "_"): v for k, v in cfg.items()}
    unknown = sorted(keys[k] for k in set(cfg) - set(actions))
    if unknown:
        raise bad_arg(f"--config {path}", "unknown option names in the file", ", ".join(unknown),
                      "Valid names: " + ", ".join(sorted(actions)) + ".")
    parser.set_defaults(**{dest: config_value(actions[dest], keys[dest], v, path) for dest, v in cfg.items()})
    return {dest: keys[dest] for dest in cfg}


def register(sub) -> None:
    p = command_parser(sub, "generate", help="generate one image from a prompt", examples=[
        'vqclip generate --space forget "a photo of an apple"',
        'vqclip generate "a forest ^ a city at night" --change-every 100 --steps 300 --save-every 10 --video',
        'vqclip generate "an apple:1 | written text:-0.5" --space clip --seed 7 --size 256 256 --save-best'],
                       description="Generate an image with VQGAN+CLIP, the CLIP loss computed in the clip, learn or "
                                   "forget space. Prompts: 'text:weight:stop' items separated by '|', e.g. "
                                   "\"an apple:1 | written text:-0.5\". Numbers are read from the right, so the text may "
                                   "hold ':' (\"a photo: an apple\", URLs); one word glued to the last ':' "
                                   "(\"an apple:abc\") is refused as a mistyped weight - add a space after the ':' "
                                   "or an explicit weight to keep it as text. Phases separated by '^' change "
                                   "every --change-every steps.")
    p.add_argument("prompt", nargs="?", default=None, metavar="PROMPT", help="text prompt(s)")
    p.add_argument("--space", default=None, choices=("clip", "learn", "forget"),
                   help="embedding space of the CLIP loss (default: the space of the --projection file, else clip)")
    add_settings_args(p)
    add_model_args(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, metavar="DIR",
                   help="run folder (default outputs/<date>-<time>-<prompt>)")
    g.add_argument("--outputs-root", default="outputs", metavar="DIR", help="where default run folders go")
    g.add_argument("--overwrite", action="store_true", help="replace the run in an existing --out folder")
    g.add_argument("--save-every", type=int, default=0, metavar="N", help="save a frame every N steps")
    g.add_argument("--video", nargs="?", const="mp4", default=None, choices=VIDEO_FORMATS,
                   help="assemble the saved frames into video.mp4 (the default; needs imageio-ffmpeg: "
                        "pip install -e \".[video]\") or video.gif. Needs --save-every N with N at most --steps; "
                        "both are checked before the run starts, and a video that cannot be written is an error")
    g.add_argument("--fps", type=int, default=12, help="video frame rate, above 0 (default 12)")
    g.add_argument("--config", default=None, metavar="FILE.yaml",
                   help="YAML file of option values (e.g. `steps: 200`); command-line flags override it")
    add_quiet_arg(g, "no progress bar")
    p.set_defaults(func=run_generate, _parser=p)


def check_output_args(args: argparse.Namespace) -> None:
    """Refuse frame and video options that cannot work, before any model is loaded or folder created."""
    from ..outputs import check_video_support

    if args.save_every < 0:
        raise bad_arg("--save-every", "must be 0 (off) or a positive number of steps", args.save_every,
                      "Try --save-every 10.")
    if not args.video:
        return
    if not args.save_every:
        raise bad_arg("--video", "a video is made from saved frames", args.video, "Add --save-every N (e.g. 10).")
    if args.save_every > args.steps:
        raise bad_arg("--save-every", f"with --video it must be at most --steps ({args.steps}), or no frame is "
                      "saved to make the video from", args.save_every,
                      f"Use e.g. --save-every {max(1, args.steps // 10)}, or more --steps.")
    if args.fps < 1:
        raise bad_arg("--fps", "the frame rate must be above 0", args.fps, "Try --fps 12.")
    check_video_support(args.video)


def run_generate(args: argparse.Namespace) -> int:
    from ..outputs import check_run_dir, default_run_dir

    if not args.prompt and not args.image_prompt and not args.noise_prompt:
        raise bad_arg("PROMPT", "a text prompt (or --image-prompt) is required", args.prompt,
                      'Try: vqclip generate "a photo of an apple".')
    check_output_args(args)
    prompt = args.prompt or ""
    check_args_early(args, prompt)  # before torch is imported
    settings = settings_from_args(args, prompt)
    settings.resolved(1)  # every check that does not need the VQGAN, before loading it
    out = Path(args.out) if args.out else default_run_dir(prompt or "image-prompt", args.outputs_root)
    check_run_dir(out, args.overwrite)  # also: can files be written there, before any work
    check_memory([(settings.size, settings.cutn, "")], args.device, args)
    with sigterm_as_interrupt():
        return _generate(args, settings, prompt, out)


FEW_STEPS = 10  # below this a learn/forget run is warned that the spaces may not differ yet


def few_steps_notice(steps: int) -> str | None:
    """The note for a run in a learn/forget space with so few steps that the spaces can give the same image."""
    if steps >= FEW_STEPS:
        return None
    return (f"with {steps} steps the quantized codes have barely moved: clip, learn and forget can give "
            "pixel-identical images; use 100 or more steps to compare spaces")


LONG_RUN_SECONDS = 600  # a run expected to take longer says so after its first measured steps


def _generate(args: argparse.Namespace, settings, prompt: str, out: Path) -> int:
    """Load the models, resolve the settings against the VQGAN, run with a progress bar, write the run folder and
    report; returns the exit status."""
    from ..generation.api import space_of
    from ..outputs import prepare_run_dir

    models = load_models_from_args(args, spaces=[(args.space, args.projection, "--projection")])
    if "textoff" in anti_text_uses(args):
        from ..batch.runner import check_text_direction

        check_text_direction(models, args.textoff)
    space = space_of(models, args.space, args.projection, settings)
    settings, notices = settings.resolved(models.vqgan.factor)
    created = not out.exists()
    prepare_run_dir(out, args.overwrite)
    _print_notes(args, settings, space, notices)
    result, image_path = _run_and_write(args, settings, models, space, prompt, out, created)
    return _report(args, out, result, image_path)


def _print_notes(args: argparse.Namespace, settings, space, notices: list) -> None:
    """The settings' notices, a note when too few steps leave the spaces alike, and the seed when it was drawn."""
    if space.name != "clip" and few_steps_notice(settings.steps):
        notices = [*notices, few_steps_notice(settings.steps)]
    for notice in notices:
        print(f"vqclip generate: note: {notice}", file=sys.stderr)
    if args.seed is None and not args.quiet:
        print(f"vqclip generate: seed {settings.seed} (drawn; --seed {settings.seed} repeats this run)",
              file=sys.stderr)


def _progress(args: argparse.Namespace, settings, space, models, out: Path):
    """The progress bar and the step callback that moves it, says once when the run will be long, and saves a
    frame every --save-every steps; returns (bar, on_step)."""
    from tqdm import tqdm

    from ..generation.loop import to_pil
    from ..outputs import save_frame

    bar = tqdm(total=settings.steps, desc=space.name, unit="step", disable=args.quiet, dynamic_ncols=True)
    said = []

    def on_step(info):
        bar.update(info.step - bar.n)
        bar.set_postfix(loss=f"{info.loss:.4f}", refresh=False)
        if not said and info.step >= 2 and info.step < info.steps and not args.quiet:
            said.append(True)  # one estimate, from the steps measured so far (the first one pays warm-up)
            total = info.elapsed / info.step * info.steps
            if total > LONG_RUN_SECONDS:
                bar.write(f"vqclip generate: note: about {total / 60:.0f} minutes for {info.steps} steps on "
                          f"{models.clip.device.type} ({info.elapsed / info.step:.1f} s a step measured); lower "
                          "--size, --cutn or --steps for a quicker look", file=sys.stderr)
        if args.save_every and info.step % args.save_every == 0:
            with output_errors(out, f"frames up to step {info.step - args.save_every} are kept; no image was "
                                    "written"):
                save_frame(out, info.step, to_pil(info.image))

    return bar, on_step


def _run_and_write(args: argparse.Namespace, settings, models, space, prompt: str, out: Path, created: bool):
    """Run the loop, then write image.png and run.json; a failed run leaves no empty folder that it created.
    Returns (result, image path)."""
    from ..generation import run
    from ..generation.loop import default_report_every
    from ..outputs import build_record, discard_empty_run_dir, write_run

    bar, on_step = _progress(args, settings, space, models, out)
    # Losses are read back from a GPU every few steps only; frames need their exact steps.
    report_every = default_report_every(models.clip.device)
    if args.save_every:
        report_every = math.gcd(report_every, args.save_every)
    try:
        try:
            result = run(settings, models.clip, models.vqgan, space, on_step, report_every=report_every)
            bar.set_postfix(loss=f"{result.loss:.4f}", refresh=False)  # the bar ends on the loss the run reports
            bar.update(bar.total - bar.n if result.status == "finished" else 0)
        finally:
            bar.close()
        record = build_record(result, models.describe(), space.describe(), prompt,
                              {"space_name": space.name, "load_seconds": round(models.load_seconds, 3)})
        with output_errors(out, "the image of this run could not be kept"):
            image_path = write_run(out, result, record)
    except BaseException:
        if created:  # a run that failed (or whose first write failed: a full disk) leaves no empty folder
            discard_empty_run_dir(out)
        raise
    return result, image_path


def _report(args: argparse.Namespace, out: Path, result, image_path) -> int:
    """The video when asked for, the image's path on stdout, and the exit status (130 interrupted, 1 non-finite)."""
    from ..outputs import write_video

    if args.video:
        if result.steps_done >= args.save_every:
            with output_errors(out, "image.png, run.json and the frames are kept"):
                write_video(out, args.fps, args.video)
        else:
            print(f"vqclip generate: note: no video: the run stopped after {result.steps_done} steps, before the "
                  f"first frame (--save-every {args.save_every})", file=sys.stderr)
    print(f"{image_path}")
    if result.status == "interrupted":
        print(f"vqclip generate: {result.message}; wrote the current image and run.json", file=sys.stderr)
        return 130
    if result.status == "nonfinite":
        print(f"vqclip generate: error: {result.message}", file=sys.stderr)
        return 1
    return 0
