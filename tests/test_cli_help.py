"""Help texts and the CLI's one-line errors for missing optional extras."""

import argparse
import sys

import pytest

from vqclip.cli import build_parser, main
from vqclip.errors import MissingExtraError, missing_extra_hint

COMMANDS = [["generate"], ["batch"], ["grid"], ["train"], ["eval", "retrieval"], ["eval", "typographic"],
            ["eval", "ocr"], ["score"], ["models", "convert"], ["models", "download"], ["models", "list"], ["testbed"]]


def _leaf_commands(parser=None, prefix=()) -> list[tuple[str, ...]]:
    """Every runnable subcommand, found by walking the parser (so a new command is checked without editing this)."""
    parser = parser or build_parser()
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _leaf_commands(sub, prefix + (name,)) or [prefix + (name,)]
    return out


def _command_groups(parser=None, prefix=()) -> list[tuple[str, ...]]:
    """Every subcommand, runnable or a group such as `eval` and `models`."""
    parser = parser or build_parser()
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += [prefix + (name,)] + _command_groups(sub, prefix + (name,))
    return out


def _subparser(argv):
    parser = build_parser()
    for name in argv:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return parser


def test_the_walk_finds_every_command():
    leaves = {" ".join(c) for c in _leaf_commands()}
    assert {"train", "score", "testbed", "eval retrieval", "eval ocr", "models list", "models convert"} <= leaves
    assert "eval" not in leaves and "models" not in leaves


@pytest.mark.parametrize("argv", _command_groups(), ids=" ".join)
def test_every_command_help_has_an_example_and_no_empty_default(capsys, argv):
    with pytest.raises(SystemExit):
        main(list(argv) + ["--help"])
    raw = capsys.readouterr().out
    text = " ".join(raw.split())
    assert "(default: None)" not in text and "default None" not in text
    heading = next((line for line in raw.splitlines() if line.startswith(("example:", "examples:"))), None)
    assert heading is not None, f"vqclip {' '.join(argv)} --help has no example"
    after = raw.split(heading, 1)[1]
    commands = [line.strip() for line in after.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert commands and all(f"vqclip {' '.join(argv)}" in c for c in commands), commands  # torchrun -m vqclip too


@pytest.mark.parametrize("argv", _leaf_commands(), ids=" ".join)
def test_every_command_takes_quiet_and_verbose_after_its_name(argv):
    parser = _subparser(argv)
    options = parser._option_string_actions
    for flag in ("-q", "--quiet", "-v", "--verbose", "--debug"):
        assert flag in options, f"vqclip {' '.join(argv)} has no {flag}"
    assert options["-q"].dest == "quiet" and options["-v"].dest == "verbose"
    if "--no-progress" in options:  # the old spelling: a hidden alias of --quiet
        assert options["--no-progress"].dest == "quiet" and options["--no-progress"].help == argparse.SUPPRESS


def test_quiet_and_verbose_parse_before_and_after_the_subcommand():
    parser = build_parser()
    for argv in (["-v", "score", "x", "-q"], ["score", "x", "-v", "--quiet"], ["score", "x", "-v", "--no-progress"]):
        args = parser.parse_args(argv)
        assert args.verbose is True and args.quiet is True, argv
    args = parser.parse_args(["score", "x"])
    assert args.verbose is False and args.quiet is False


def test_verbose_after_the_subcommand_turns_on_info_logging(monkeypatch):
    import logging

    import vqclip.cli.models as models

    seen = {}
    monkeypatch.setattr(models, "cmd_list", lambda args: seen.setdefault("level", logging.getLogger().level) and 0)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # let basicConfig configure the root logger again
    assert main(["models", "list", "-v"]) == 0
    assert seen["level"] == logging.INFO


def _help(capsys, argv) -> str:
    with pytest.raises(SystemExit):
        main(argv + ["--help"])
    return " ".join(capsys.readouterr().out.split())  # unwrap argparse's line breaks


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_help_has_no_doubled_or_empty_defaults(capsys, argv):
    text = _help(capsys, argv)
    assert "(default: None)" not in text and "%%" not in text
    assert ") (default:" not in text  # a default given by hand and again by a formatter


def test_every_train_flag_has_help(capsys):
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    missing = [a.option_strings[0] for a in train._actions if a.option_strings and not a.help]
    assert missing == []
    text = _help(capsys, ["train"])
    assert "(default 30)" in text and "(default 128)" in text and "(default 1e-4)" in text
    images = next(a for a in train._actions if "--images" in a.option_strings)
    assert "imagenet" in images.help.lower()


def test_score_help_prints_a_plain_percent_sign(capsys):
    assert "95 % Wilson" in _help(capsys, ["score"])


def test_epochs_are_checked_before_any_image_is_read(tmp_path, capsys, monkeypatch):
    import vqclip.spelling.sources as sources

    monkeypatch.setattr(sources, "open_images", lambda *a, **k: pytest.fail("images read before the check"))
    for flag, value in (("--epochs", "0"), ("--batch-size", "1"), ("--seed", "-1")):
        assert main(["train", "--space", "learn", "--images", str(tmp_path), flag, value]) == 2
        err = capsys.readouterr().err
        assert flag in err and "Traceback" not in err


def test_missing_optional_module_is_one_line_with_the_install_command(tmp_path, capsys, monkeypatch):
    import vqclip.cli.score as score

    def needs_scipy(args):  # an optional import deep in the library that no command wrapped
        import scipy.io  # noqa: F401

    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setattr(score, "run", needs_scipy)
    assert main(["score", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'vqclip score: error: scipy is not installed (optional): pip install -e ".[ocr]" in the vqclip clone'
    assert missing_extra_hint(MissingExtraError('x needs y: pip install "vqclip[ocr]"')).endswith('"vqclip[ocr]"')
    assert missing_extra_hint(ImportError("No module named 'torch'", name="torch")) is None


def test_other_import_errors_are_one_line_and_keep_their_traceback_under_debug(monkeypatch, capsys):
    def broken(args):
        raise ImportError("cannot import name 'x' from 'torch'", name="torch")

    import vqclip.cli.models as models

    monkeypatch.setattr(models, "cmd_list", broken)
    assert main(["models", "list"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and "--debug" in err
    with pytest.raises(ImportError):
        main(["--debug", "models", "list"])


def test_missing_wordfreq_is_a_one_line_error(tmp_path, capsys, monkeypatch, tiny_clip_id):
    from PIL import Image

    for c in ("apple", "pear"):
        (tmp_path / "photos" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (16, 16), (i * 90, 20, 30)).save(tmp_path / "photos" / c / f"{i}.png")
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # as if the train extra were not installed
    rc = main(["train", "--space", "learn", "--images", str(tmp_path / "photos"), "--clip", tiny_clip_id,
               "--workers", "0", "--no-progress", "--device", "cpu"])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vqclip train: error:") and 'pip install -e ".[train]" in the vqclip clone' in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_building_the_parser_imports_no_torch():
    """`vqclip --help` and `vqclip COMMAND --help` stay fast: no torch (or numpy, PIL, open_clip) until a command
    runs (issue 25)."""
    import subprocess

    code = ("import sys, vqclip.cli as c; c.build_parser(); "
            "heavy = [m for m in ('torch', 'numpy', 'PIL', 'open_clip', 'omegaconf', 'huggingface_hub') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_parser_s_literal_choices_equal_the_library_s():
    from vqclip.cli import choices
    from vqclip.devices import DEVICES, PRECISIONS
    from vqclip.generation import antitext
    from vqclip.generation.animate import EDGES, VIDEO_FORMATS
    from vqclip.generation.cutouts import AUGMENTATIONS
    from vqclip.generation.ops import LOSSES
    from vqclip.generation.recipes import RECIPES
    from vqclip.models.clip import DEFAULT_CLIP, DEFAULT_PRETRAINED
    from vqclip.reproduce.paper import PAPER_GENERATION
    from vqclip.spelling.dataset import DEFAULT_TEMPLATE
    from vqclip.spelling.images import TORCHVISION_DATASETS
    from vqclip.spelling.losses import DEFAULT_GAMMA, PRESETS
    from vqclip.spelling.words import DEFAULT_VOCAB
    from vqclip.testbed.run import TestbedConfig
    try:
        from vqclip.generation.settings import METHODS, OPTIMIZERS
    except ImportError:  # before the generation settings moved out of loop.py
        from vqclip.generation.loop import METHODS, OPTIMIZERS

    assert (choices.DEVICES, choices.PRECISIONS) == (DEVICES, PRECISIONS)
    assert (choices.DEFAULT_CLIP, choices.DEFAULT_PRETRAINED) == (DEFAULT_CLIP, DEFAULT_PRETRAINED)
    assert choices.AUGMENTATIONS == tuple(AUGMENTATIONS) and choices.METHODS == tuple(METHODS)
    assert choices.OPTIMIZERS == tuple(sorted(OPTIMIZERS)) and choices.LOSSES == tuple(sorted(LOSSES))
    assert choices.RECIPES == tuple(sorted(RECIPES))
    assert (choices.EDGES, choices.VIDEO_FORMATS) == (tuple(EDGES), tuple(VIDEO_FORMATS))
    assert choices.SPELLING_TEMPLATE == DEFAULT_TEMPLATE and choices.DEFAULT_VOCAB == DEFAULT_VOCAB
    assert choices.TORCHVISION_DATASETS == tuple(sorted(TORCHVISION_DATASETS))
    assert choices.DEFAULT_GAMMA == DEFAULT_GAMMA and choices.SPACE_PRESETS == tuple(PRESETS)
    assert choices.PAPER_GENERATION == dict(PAPER_GENERATION)
    assert choices.ANTI_TEXT == antitext.ANTI_TEXT and choices.TEXT_MODES == antitext.TEXT_MODES
    assert choices.ANTI_TEXT_DEFAULTS == {"negative_text": antitext.DEFAULT_NEGATIVE_TEXT,
                                          "negative_weight": antitext.DEFAULT_NEGATIVE_WEIGHT,
                                          "textoff_mode": antitext.DEFAULT_TEXTOFF_MODE,
                                          "textoff_weight": antitext.DEFAULT_TEXTOFF_WEIGHT}
    full, quick = TestbedConfig(), TestbedConfig.quick()
    assert choices.TESTBED_DEFAULTS == {f: (getattr(full, f), getattr(quick, f)) for f in choices.TESTBED_DEFAULTS}


@pytest.mark.parametrize("argv", [["-q", "models", "list"], ["--quiet", "models", "list"], ["models", "list", "-q"],
                                  ["-q", "generate", "x"], ["generate", "-q", "x"], ["-q", "-v", "--debug", "score", "x"]],
                         ids=" ".join)
def test_global_flags_before_or_after_the_command_name(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet is True
    assert args.verbose is ("-v" in argv) and args.debug is ("--debug" in argv)


def test_the_top_level_help_lists_the_global_flags(capsys):
    text = _help(capsys, [])
    for flag in ("-q, --quiet", "-v, --verbose", "--debug"):
        assert flag in text
    assert "before or after the command name" in text
