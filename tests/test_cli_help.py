"""Help texts and the CLI's one-line errors for missing optional extras."""

import sys

import pytest

from vqclip.cli import build_parser, main
from vqclip.errors import MissingExtraError, missing_extra_hint

COMMANDS = [["generate"], ["batch"], ["grid"], ["train"], ["eval", "retrieval"], ["eval", "typographic"],
            ["eval", "ocr"], ["score"], ["models", "convert"], ["models", "download"], ["models", "list"], ["testbed"]]


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
    import vqclip.spelling.images as images

    monkeypatch.setattr(images, "open_images", lambda *a, **k: pytest.fail("images read before the check"))
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
    assert err == 'vqclip score: error: scipy is not installed (optional): pip install "vqclip[ocr]"'
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
    assert err.startswith("vqclip train: error:") and 'pip install "vqclip[train]"' in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
