"""Reference-format projection files (a torch file holding only W): the CLIP they are for, their orientation, and
files that are not torch files at all (issue 15, fix 3 and the --projection leak)."""

import logging
import pickle

import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.projections import (load_projection, parse_projection_arg, projection_arg_identity, resolve_space,
                                save_projection)

CLIP = "ViT-B-32/openai"


def _orthonormal(d, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=g))
    return q.T.contiguous()  # (d, D) with orthonormal rows


@pytest.fixture()
def reference_file(tmp_path):
    path = tmp_path / "forget.pt"
    torch.save({"W": _orthonormal(4, 16)}, path)
    return path


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_a_reference_file_of_unknown_clip_warns_in_one_line_and_says_so_in_its_description(reference_file, caplog):
    with caplog.at_level(logging.WARNING):
        sp = resolve_space("forget", CLIP, 16, projection=reference_file)
    lines = _warnings(caplog)
    assert len(lines) == 1 and "\n" not in lines[0]
    assert str(reference_file) in lines[0] and "does not say which CLIP" in lines[0]
    assert f"{reference_file}@{CLIP}" in lines[0]  # how to state it, ready to paste
    described = sp.describe()  # what run.json records
    assert described["clip_model"] is None and described["clip_model_from"].startswith("unknown")
    assert described["orientation"].startswith("d×D")


def test_a_stated_clip_is_recorded_and_checked_by_a_later_run(reference_file, caplog):
    with caplog.at_level(logging.WARNING):
        sp = resolve_space("forget", CLIP, 16, projection=f"{reference_file}@{CLIP}")
    assert _warnings(caplog) == []
    assert sp.describe()["clip_model"] == CLIP and sp.describe()["clip_model_from"].startswith("stated")
    assert sp.describe()["path"] == str(reference_file)
    with pytest.raises(VqclipError, match="RN50/openai") as e:
        resolve_space("forget", "RN50/openai", 16, projection=f"{reference_file}@{CLIP}")
    assert "stated" in str(e.value)


def test_the_identity_the_warning_prints_can_be_stated_as_is(reference_file):
    local = "local-dir:clip#d362bd5ed4fd2f45"  # a model folder's identity, as the warning shows it
    assert resolve_space("forget", local, 16, projection=f"{reference_file}@{local}").metadata["clip_model"] == local
    hub = "hf-hub:org/repo"
    assert load_projection(f"{reference_file}@{hub}@dxD", "forget", 16).metadata["clip_model"] == hub


def test_a_stated_clip_must_agree_with_a_file_that_says_its_own(tmp_path):
    path = save_projection(tmp_path / "p.safetensors", _orthonormal(4, 16), "learn", CLIP)
    with pytest.raises(VqclipError, match="RN50/openai"):
        load_projection(f"{path}@RN50/openai", embed_dim=16)
    assert load_projection(f"{path}@{CLIP}", embed_dim=16).metadata["clip_model"] == CLIP


def test_a_square_reference_w_is_refused_unless_its_orientation_is_stated(tmp_path):
    W = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))[0]  # orthonormal
    path = tmp_path / "learn.pt"
    torch.save({"W": W}, path)
    with pytest.raises(VqclipError, match="square") as e:
        load_projection(path, "learn", 16)
    assert f"{path}@dxD" in str(e.value) and f"{path}@Dxd" in str(e.value)
    assert torch.equal(load_projection(f"{path}@dxD", "learn", 16).W, W)
    assert torch.equal(load_projection(f"{path}@Dxd", "learn", 16).W, W.T)
    both = load_projection(f"{path}@{CLIP}@Dxd", "learn", 16)
    assert both.metadata["clip_model"] == CLIP and torch.equal(both.W, W.T)


def test_a_stated_orientation_that_contradicts_the_shape_is_refused(reference_file):
    with pytest.raises(VqclipError, match="stated orientation Dxd") as e:
        load_projection(f"{reference_file}@Dxd", "forget", 16)  # W is 4x16: stored d×D
    assert "(4, 16)" in str(e.value)


def test_a_file_name_with_an_at_sign_still_loads(tmp_path):
    path = tmp_path / "w@2.pt"
    torch.save({"W": _orthonormal(4, 16)}, path)
    assert parse_projection_arg(str(path)).path == path
    assert load_projection(f"{path}@{CLIP}", "learn", 16).metadata["clip_model"] == CLIP


def test_a_batch_records_the_absolute_file_with_what_was_stated(reference_file, monkeypatch):
    monkeypatch.chdir(reference_file.parent)
    assert projection_arg_identity("forget.pt") == str(reference_file.resolve())
    assert projection_arg_identity(f"forget.pt@{CLIP}@D×d") == f"{reference_file.resolve()}@{CLIP}@Dxd"


def test_an_unknown_statement_names_the_form(reference_file):
    with pytest.raises(VqclipError, match="FILE@") as e:
        load_projection(f"{reference_file}@sideways", "forget", 16)
    assert "sideways" in str(e.value)


class Payload:  # refused by torch's weights-only reader
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize("kind", ["text", "pickle with code", "truncated"])
def test_a_file_that_is_not_a_torch_file_is_one_line_without_torchs_unsafe_advice(tmp_path, kind, capsys):
    path = tmp_path / "proj.pt"
    if kind == "text":
        path.write_text("hello world\n")
    elif kind == "pickle with code":
        with open(path, "wb") as f:
            pickle.dump({"W": Payload()}, f)
    else:
        torch.save({"W": _orthonormal(4, 16)}, path)
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(VqclipError) as e:
        load_projection(path, "forget", 16)
    message = str(e.value)
    assert str(path) in message and "\n" not in message
    for leak in ("weights_only", "Re-running", "torch.load", "\x1b["):
        assert leak not in message
    captured = capsys.readouterr()
    assert "this must never run" not in captured.out and "weights_only" not in captured.err
