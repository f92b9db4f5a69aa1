"""Options shared by several subcommands."""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import threading
from typing import Iterable, Iterator, Sequence

from ..errors import bad_arg
from .choices import DEFAULT_CLIP, DEFAULT_PRETRAINED, DEVICES, PRECISIONS

# The heading of the epilog every command's --help ends with (tests/test_cli_help.py checks that each has one).
EXAMPLE_HEADING = "example:"
EXAMPLES_HEADING = "examples:"


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that the "example(s):" epilog keeps its line breaks (one command per line)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith((EXAMPLE_HEADING, EXAMPLES_HEADING)):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)


def examples(*lines: str) -> str:
    """The --help epilog: command lines to copy, under an "example:" heading; a line starting with # is a comment.

    Pass it with the formatter: `sub.add_parser(name, epilog=examples(...), formatter_class=HelpFormatter)`,
    or use `command_parser`, which does both."""
    if not lines:
        raise ValueError("examples() needs at least one command line")
    commands = sum(1 for line in lines if not line.lstrip().startswith("#"))
    heading = EXAMPLE_HEADING if commands == 1 else EXAMPLES_HEADING
    return "\n".join([heading, *(f"  {line}" for line in lines)])


_examples_epilog = examples  # command_parser's keyword of the same name hides the function


def command_parser(sub, name: str, *, help: str, description: str, examples: Sequence[str] | str,
                   **kwargs) -> argparse.ArgumentParser:
    """`sub.add_parser(name, ...)` with the shared help conventions: an example epilog (a string from
    `examples()`, or the command lines themselves) kept as written."""
    epilog = examples if isinstance(examples, str) else _examples_epilog(*examples)
    return sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=HelpFormatter,
                          **kwargs)


def add_quiet_arg(p, help: str = "no progress bars or progress messages") -> None:
    """-q/--quiet, the one flag every command uses to silence progress output (dest `quiet`).

    `--no-progress`, the old spelling of train, eval, score and testbed, still works but is not shown."""
    p.add_argument("-q", "--quiet", action="store_true", help=help)
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)


def add_out_file_arg(p, metavar: str, help: str) -> None:
    """--out-file FILE (dest `out`), for the commands whose output is one file (grid, train): `--out` is a folder
    in every command, so here the old spelling is kept only to be refused with a hint (`check_out_file`)."""
    p.add_argument("--out-file", dest="out", default=None, metavar=metavar, help=help)
    # Defined (hidden) so that argparse does not take --out as an abbreviation of --out-file.
    p.add_argument("--out", dest="out_as_file", default=None, help=argparse.SUPPRESS)


def check_out_file(args, command: str) -> None:
    """Refuse `--out` where the output is a file: one line that names --out-file (exit 2)."""
    if getattr(args, "out_as_file", None) is not None:
        raise bad_arg("--out", f"is a folder in vqclip; {command} writes one file, given with --out-file",
                      args.out_as_file, f"Use --out-file {args.out_as_file}.")


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
                   help="CLIP precision: auto = bf16/fp16 autocast on CUDA, fp32 elsewhere (default auto)")


def add_compare_spaces_args(p: argparse.ArgumentParser) -> None:
    """Which spaces an evaluation puts side by side."""
    p.add_argument("--spaces", default=None, metavar="LIST",
                   help="comma-separated spaces to compare (default: clip plus every cached learn/forget projection)")
    p.add_argument("--projection", action="append", default=[], metavar="[LABEL=]FILE",
                   help="a projection file to compare as its own column (repeatable); a torch file holding only W "
                        "may state its CLIP and orientation as FILE@NAME/TAG@dxD (see docs/models.md)")


def add_cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="where weights, projections and features are kept (default $VQCLIP_CACHE or ~/.cache/vqclip)")


def plan_from_args(args, spaces=(), *, vqgan: bool = False, paper_dataset: bool = False, imagenetv2: bool = False,
                   extras=()):
    """The files a command with these flags needs (see vqclip.preflight): CLIP weights, the VQGAN when `vqgan`,
    a projection for each (space, file given, ...) in `spaces` without a file, the paper's photos."""
    from ..models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED, check_schema_pretrained
    from ..preflight import plan_assets

    clip = getattr(args, "clip", None) or DEFAULT_CLIP
    pretrained = args.pretrained if getattr(args, "pretrained", None) is not None else DEFAULT_PRETRAINED
    check_schema_pretrained(clip, pretrained)  # before the preflight looks for a file that would be ignored
    return plan_assets(clip=clip, pretrained=pretrained, cache=getattr(args, "cache_dir", None),
                       vqgan=getattr(args, "vqgan", None), vqgan_checkpoint=getattr(args, "vqgan_checkpoint", None),
                       with_vqgan=vqgan, spaces=[(s[0], s[1]) for s in spaces],
                       auto_train=bool(getattr(args, "auto_train", False)), paper_dataset=paper_dataset,
                       imagenetv2=imagenetv2, data_root=getattr(args, "data_root", None), extras=extras)


def preflight_from_args(args, spaces=(), *, vqgan: bool = False, paper_dataset: bool = False,
                        imagenetv2: bool = False, extras=()) -> None:
    """Before any model loads: every missing file the command needs in one message when it cannot be fetched
    (offline: in seconds, not after a minute of hub retries), and the hubs offline when nothing must be fetched."""
    from ..preflight import preflight

    check_projection_files(args, spaces)
    preflight(plan_from_args(args, spaces, vqgan=vqgan, paper_dataset=paper_dataset, imagenetv2=imagenetv2,
                             extras=extras))


def check_projection_files(args, spaces) -> None:
    """The projection files given on the command line, checked before any model loads with the rules the loader
    applies (shape against the CLIP's D when its config tells it, finite, orthonormal, the space it is)."""
    from ..projections import clip_with_file_error, load_projection

    given = [(space, file, flag) for space, file, flag in spaces if file]
    if not given:
        return
    embed_dim = None
    clip = getattr(args, "clip", None) or DEFAULT_CLIP
    if not clip.startswith(("hf-hub:", "local-dir:")):
        try:
            import open_clip

            embed_dim = (open_clip.get_model_config(clip.replace("/", "-")) or {}).get("embed_dim")
        except Exception:  # noqa: BLE001 - an unknown name is refused by the loader with close matches
            embed_dim = None
    for space, file, flag in given:
        if space == "clip":
            raise clip_with_file_error(file, flag)
        load_projection(file, space, embed_dim, flag)


def load_clip_from_args(args):
    from ..models.clip import load_clip

    preflight_from_args(args)
    return load_clip(args.clip, args.pretrained, device=args.device, precision=args.precision,
                     cache_dir=getattr(args, "cache_dir", None))


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (sent by `timeout`, schedulers and container stops) stops a run like Ctrl-C does: the current image
    and run.json are written with status interrupted. A second SIGTERM gets the previous handler (usually: exit)."""
    from . import _on_term

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is _on_term:
        yield  # `vqclip.cli.main` already turns the first SIGTERM into KeyboardInterrupt, from its first line on
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
        signal.signal(signal.SIGTERM, previous)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def estimate_run_bytes(size: Sequence[int], cutn: int) -> tuple[int, int]:
    """(bytes for the image, decoder and attention; bytes for the cutouts) with the default VQGAN's layout; see
    vqclip.generation.memory, where the estimate lives."""
    from ..generation.memory import estimate_run_memory

    est = estimate_run_memory(size, cutn)
    return est.total - est.cutouts, est.cutouts


def check_memory(sizes_cutns: Iterable[tuple[Sequence[int], int, str]], device: str, args=None) -> None:
    """vqclip.generation.memory.check_memory for the VQGAN the command's flags name (--vqgan-config, --vqgan),
    before any model is loaded."""
    from ..generation.memory import check_memory as check, vqgan_ddconfig

    ddconfig = vqgan_ddconfig(getattr(args, "vqgan", None), getattr(args, "vqgan_config", None)) if args else None
    check(sizes_cutns, device, ddconfig)


@contextlib.contextmanager
def output_errors(out, kept: str) -> Iterator[None]:
    """A full disk, a quota or a read-only folder while writing under `out` becomes one OutputError line that says
    what is kept; other errors pass unchanged."""
    from ..errors import DISK_ERRNOS, OutputError, is_disk_error

    try:
        yield
    except OSError as e:
        if not is_disk_error(e):
            raise
        error = OutputError(f"--out {out}: could not write {e.filename or 'a file'}: {DISK_ERRNOS[e.errno]}; "
                            f"{kept}. Free some space (or choose another --out) and run again.")
        error.arg = "--out"
        raise error from e


def set_default(p, dest: str, value, help: str) -> None:
    """Change a shared flag's default to the paper's setting, and its help to say so."""
    for action in p._actions:
        if action.dest == dest:
            action.default, action.help = value, help
    p.set_defaults(**{dest: value})


def command_line(parser: argparse.ArgumentParser, args, words: Sequence[str]) -> str:
    """The command as typed (`words`, then the flags of `parser` that differ from their defaults), for reports."""
    words = list(words)
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
