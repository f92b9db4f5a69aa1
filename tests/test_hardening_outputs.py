"""Issue 13, part A: nothing of the user's is deleted, no traceback reaches a user, outputs fail cleanly."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vqclip.cli import main
from vqclip.errors import describe_exception, one_line


# ---------------------------------------------------------------------------------------------------------------
# Item 3 and 6: the entry point's last line of defence; foreign messages quoted on one line.

def test_an_unexpected_exception_is_one_line_with_a_distinct_exit_code(monkeypatch, capsys):
    import vqclip.cli.models as models

    def broken(args):
        raise KeyError("\x1b[31mboom\x1b[0m\nsecond line")

    monkeypatch.setattr(models, "cmd_list", broken)
    assert main(["models", "list"]) == 70
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "KeyError" in err and "boom" in err and "\x1b" not in err and "run with --debug for the traceback" in err
    with pytest.raises(KeyError):
        main(["models", "list", "--debug"])
    monkeypatch.setenv("VQCLIP_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["models", "list"])


def test_an_os_error_names_the_file_and_the_fix(monkeypatch, capsys):
    import vqclip.cli.models as models

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/image.png")

    monkeypatch.setattr(models, "cmd_list", full)
    assert main(["models", "list"]) == 74
    err = capsys.readouterr().err.strip()
    assert err.startswith("vqclip models: error: /data/out/image.png: the disk is full") and "Free some space" in err
    assert "\n" not in err


def test_foreign_messages_are_quoted_on_one_line_without_escapes():
    text = "\x1b[1;31mCUDA out of memory.\x1b[0m Tried to allocate 2.00 GiB\n\tGPU 0; \x1b]8;;http://x\x07link\x1b]8;;\x07"
    assert one_line(text) == "CUDA out of memory. Tried to allocate 2.00 GiB GPU 0; link"
    assert describe_exception(RuntimeError("")) == "RuntimeError"  # an empty message still says something
    assert len(one_line("x" * 5000, 100)) == 100
    from vqclip.batch.runner import _error_text

    assert _error_text(RuntimeError("a\n\x1b[31mb\x1b[0m")) == "RuntimeError: a b"
