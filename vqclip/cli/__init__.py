"""The `vqclip` command: argparse subcommands over the library. `main(argv) -> exit code`."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import signal
import sys
import threading

from .. import __version__
from ..errors import DISK_ERRNOS, VqclipError, describe_exception, missing_extra_hint, one_line

# Exit codes: 0 ok, 1 some work failed, 2 a usage error (VqclipError), 74 an output could not be written (EX_IOERR),
# 70 an unexpected error (EX_SOFTWARE: a bug, or an input vqclip does not check yet), 130 interrupted.
EXIT_UNEXPECTED = 70
EXIT_OS = 74
DEBUG_ENV = "VQCLIP_DEBUG"

# OSErrors that say a path is of the wrong kind, not that the disk failed: (rule, fix); exit 2 like any broken rule.
PATH_ERRNOS = {
    errno.EISDIR: ("a folder is where vqclip needs a file", "Move the folder away or name a file."),
    errno.ENOTDIR: ("a file is where vqclip needs a folder", "Move the file away or name a folder."),
    errno.ENAMETOOLONG: ("a file name is longer than the file system allows (255 bytes a name)",
                         "Use a shorter name."),
    errno.ENOENT: ("no such file or folder", "Check the path."),
    errno.ELOOP: ("too many levels of symbolic links", "Point the path at a real file or folder."),
}

# One module per subcommand, each with `register(subparsers)` that sets `func(args) -> int`.
COMMANDS = ("generate", "animate", "batch", "grid", "train", "eval", "score", "models", "testbed", "reproduce", "ui")


# The flags every command takes before or after its name: (option strings, dest, help).
GLOBAL_FLAGS = ((("-q", "--quiet"), "quiet", "no progress bars or progress messages"),
                (("-v", "--verbose"), "verbose", "log details (model loading, downloads)"),
                (("--debug",), "debug", f"show the full traceback of an unexpected error (or set {DEBUG_ENV}=1)"))


class _Parser(argparse.ArgumentParser):
    """The top-level parser: a global flag given before the command name (`vqclip -q generate ...`) is merged
    into the command's own flag of the same name, which argparse would otherwise reset to its default."""

    def parse_known_args(self, args=None, namespace=None):
        ns, rest = super().parse_known_args(args, namespace)
        for _, dest, _ in GLOBAL_FLAGS:
            before = getattr(ns, f"_global_{dest}", False)
            if hasattr(ns, f"_global_{dest}"):
                delattr(ns, f"_global_{dest}")
            setattr(ns, dest, bool(getattr(ns, dest, False)) or bool(before))
        return ns, rest


def build_parser() -> argparse.ArgumentParser:
    from .common import HelpFormatter, examples

    parser = _Parser(
        prog="vqclip",
        description="VQGAN+CLIP image generation in the original CLIP space or in learn-to-spell / "
                    "forget-to-spell subspaces (Materzynska, Torralba, Bau, CVPR 2022). "
                    "`vqclip COMMAND --help` describes each command.",
        epilog=examples('vqclip generate --space forget "a photo of an apple"',
                        "vqclip batch prompts.txt --spaces clip,learn,forget --seeds 0-2",
                        "vqclip testbed --quick"),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vqclip {__version__}")
    for flags, dest, text in GLOBAL_FLAGS:
        parser.add_argument(*flags, dest=f"_global_{dest}", action="store_true", help=text + " (before or after "
                            "the command name)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"{__name__}.{name}":  # subcommand not built yet
                continue
            raise
        module.register(sub)
    _add_debug_flag(sub)  # `vqclip generate ... --debug -v` works as well as `vqclip --debug -v generate ...`
    return parser


def _add_debug_flag(sub) -> None:
    for subparser in sub.choices.values():
        for flags, dest, text in GLOBAL_FLAGS:
            if flags[-1] not in subparser._option_string_actions:
                subparser.add_argument(*flags, dest=dest, action="store_true", default=argparse.SUPPRESS,
                                       help=text.split(" (or set")[0])
        for action in subparser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _add_debug_flag(action)


def unexpected_error_line(e: BaseException) -> tuple[str, int]:
    """The one line (and exit code) for an exception no precise check caught: what failed, the file when known."""
    if isinstance(e, OSError):
        target = " ".join(f"{f}" for f in (e.filename, e.filename2) if f)
        if e.errno in PATH_ERRNOS:  # a path the user gave (or a file in it) is of the wrong kind: a rule, not the OS
            rule, fix = PATH_ERRNOS[e.errno]
            return f"{target + ': ' if target else ''}{rule} ({type(e).__name__}). {fix}", 2
        reason = DISK_ERRNOS.get(e.errno) or one_line(e.strerror or e) or type(e).__name__
        fix = {"the disk is full": "Free some space (finished outputs are kept) and run the same command again.",
               "the disk quota is exceeded": "Free some space and run the same command again.",
               "the file system is read-only": "Choose an output folder on a writable disk (--out).",
               "permission denied": "Choose a file or folder you can access (--out), or fix its permissions."
               }.get(reason, "Check the path and the disk.")
        return f"{target + ': ' if target else ''}{reason} ({type(e).__name__}). {fix}", EXIT_OS
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return (f"out of memory ({describe_exception(e, 200)}). Lower --size or --cutn, or use a device with more "
                "memory; run with --debug for the traceback."), EXIT_UNEXPECTED
    return (f"unexpected error: {describe_exception(e)}. This is a bug in vqclip or an input it does not check yet; "
            "run with --debug for the traceback."), EXIT_UNEXPECTED


def _option_dests(parser: argparse.ArgumentParser) -> dict[str, str]:
    """{"--steps": "steps", ...}: which option string sets which attribute."""
    return {opt: a.dest for a in parser._actions for opt in a.option_strings}


EXIT_PIPE = 128 + 13  # what a shell reports for a program ended by SIGPIPE (`vqclip models list | head -1`)


def _on_term(signum, frame):
    """SIGTERM (sent by `timeout`, schedulers and container stops) stops vqclip like Ctrl-C does, from the first
    line of `main` on; a second SIGTERM gets the handler that was there before (usually: exit)."""
    signal.signal(signal.SIGTERM, _previous_term[0])
    raise KeyboardInterrupt


_previous_term: list = [signal.SIG_DFL]


@contextlib.contextmanager
def _interrupt_handlers():
    """SIGTERM as KeyboardInterrupt while `main` runs (before any heavy import or work), the previous handler back
    after it (for callers in the same process, such as tests); only the main thread can set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    _previous_term[0] = previous if previous is not None else signal.SIG_DFL
    signal.signal(signal.SIGTERM, _on_term)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is _on_term:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (`| head -1`): poll reports POLLERR on its write end."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def _quiet_closed_stdout() -> int:
    """After a closed stdout: point it at /dev/null so that the interpreter's final flush does not complain, and
    return the shell's usual status for a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass
    return EXIT_PIPE


def _flush_stdout() -> None:
    """Flush here, not at exit, so that a closed pipe (`| head -1`) is handled by `main`."""
    if sys.stdout is not None:
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    with _interrupt_handlers():
        try:
            try:
                code = _main(argv)
            except SystemExit:  # --help, --version and argparse's usage errors print, then exit
                _flush_stdout()
                raise
            _flush_stdout()
            return code
        except KeyboardInterrupt:  # before the command was known (during the imports that build the parser)
            print("vqclip: interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            if _stdout_closed():
                return _quiet_closed_stdout()
            raise


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False)) or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from_config: dict[str, str] = {}  # dest -> key in the --config file, for values the command line did not set
    try:
        if getattr(args, "config", None) and getattr(args, "_parser", None):
            from .generate import apply_config_file

            sub = args._parser
            before = {dest: getattr(args, dest, None) for dest in vars(args)}
            keys = apply_config_file(sub, args.config)  # file values become defaults; flags still win
            config_path = args.config
            args = parser.parse_args(argv)
            from_config = {d: k for d, k in keys.items() if getattr(args, d, None) != before.get(d)}
            dests = _option_dests(sub)
        if hasattr(args, "recipe") and hasattr(args, "cutn"):  # the commands that generate
            from .generate import fill_recipe_defaults

            fill_recipe_defaults(args)
        return int(args.func(args) or 0)
    except VqclipError as e:
        message = str(e)
        dest = dests.get(e.arg or "") if from_config else None
        if dest in from_config:  # the value that broke the rule came from the file, not the command line
            message += f" (The value comes from --config {config_path}, key {from_config[dest]!r}.)"
        print(f"vqclip {args.command}: error: {message}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"vqclip {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        if _stdout_closed():
            return _quiet_closed_stdout()
        return _unexpected(args, debug, e)
    except Exception as e:  # the last line of defence: one clear line, the traceback only with --debug
        return _unexpected(args, debug, e)


def _unexpected(args, debug: bool, e: BaseException) -> int:
    hint = missing_extra_hint(e) if isinstance(e, ImportError) else None
    if hint is not None:
        print(f"vqclip {args.command}: error: {hint}", file=sys.stderr)
        return 2
    if debug:
        raise e
    line, code = unexpected_error_line(e)
    print(f"vqclip {args.command}: error: {line}", file=sys.stderr)
    return code
