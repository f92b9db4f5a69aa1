"""Issue 25 item 4: one rule for projection files, whichever way they come in (--projection, the published
folder, `models convert`), checked before any model loads, with messages that name the real problem and advice
that works. The network probe answers "offline", so a file that passes every check ends at the preflight's list
of missing models - proof that it was accepted without loading anything."""

import time

import pytest
import torch

from vqclip import preflight
from vqclip.cli import main


def _orthonormal(d, D, seed=0):
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()  # d x D


def _nan():
    W = _orthonormal(256, 512)
    W[0, 0] = float("nan")
    return W


@pytest.fixture()
def offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(preflight, "probe_network", lambda *a, **k: False)
    monkeypatch.setattr(preflight, "_network", None)


CASES = [  # (file name, what it holds, command after `vqclip`, must be in stderr, must not be in stderr)
    ("forget.pt", lambda: {"W": _orthonormal(256, 512) * 5}, ["generate", "x", "--projection", "{f}"],
     "far from orthonormal", "Traceback"),
    ("forget.pt", lambda: {"W": _nan()}, ["generate", "x", "--projection", "{f}"],
     "NaN or infinite", "pass it with --projection"),
    ("forget.pt", lambda: {"W": torch.randn(500, 256)}, ["generate", "x", "--projection", "{f}"],
     "neither side of W matches the CLIP embedding size 512", "not recognisably"),
    ("forget.pt", lambda: {"W": _orthonormal(256, 512)}, ["generate", "x", "--projection", "{f}"],
     "CLIP weights ViT-B-32/openai", "needs --space"),  # space told by the file name; then the missing models
    ("forget.pt", lambda: {"W": _orthonormal(256, 512).T.contiguous()}, ["generate", "x", "--projection", "{f}"],
     "file(s) this command needs", "--space"),  # D x d as the authors' README stores it
    ("forget.pt", lambda: {"W": torch.nn.Parameter(_orthonormal(256, 512))},
     ["generate", "x", "--projection", "{f}"], "file(s) this command needs", "requires_grad"),
    ("forget.pt", lambda: {"W": _orthonormal(256, 512)}, ["generate", "x", "--space", "clip", "--projection", "{f}"],
     "Leave --space out (the file is a forget projection)", "Traceback"),
    ("p.pt", lambda: {"W": _orthonormal(256, 512)}, ["generate", "x", "--space", "clip", "--projection", "{f}"],
     "Use --space learn or --space forget with the file", "Leave --space out"),
    ("p.pt", lambda: {"W": _orthonormal(256, 512)}, ["generate", "x", "--projection", "{f}"],
     "does not say whether it is a learn or a forget projection", "Traceback"),
    ("forget.pt", lambda: {"W": _orthonormal(256, 512)}, ["models", "convert", "--checkpoint", "{f}"],
     "this is a forget projection (256×512), not a VQGAN checkpoint", "config"),
]


@pytest.mark.parametrize("name,content,argv,wanted,unwanted", CASES,
                         ids=[f"{i}-{c[0]}-{c[3][:30]}" for i, c in enumerate(CASES)])
def test_projection_file_cases_through_the_cli(offline, tmp_path, capsys, recwarn, name, content, argv, wanted,
                                               unwanted):
    path = tmp_path / name
    torch.save(content(), path)
    start = time.perf_counter()
    rc = main([a.replace("{f}", str(path)) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and time.perf_counter() - start < 10
    assert wanted in err, err
    assert unwanted not in err, err
    assert not [w for w in recwarn if "requires_grad" in str(w.message)]
    assert not (tmp_path / "cache").exists() and not any(tmp_path.glob("outputs"))


def _published(tmp_path, files):
    from vqclip.projections import published

    asset = published.get_projection_asset("ViT-B-32/openai:forget")
    folder = published.published_dir(asset, tmp_path / "cache")
    folder.mkdir(parents=True)
    for name, obj in files.items():
        torch.save(obj, folder / name)
    return asset


def test_published_forget_pt_of_the_wrong_shape_says_the_shape_is_wrong(tmp_path):
    from vqclip.errors import VqclipError
    from vqclip.projections import published

    asset = _published(tmp_path, {"forget.pt": {"W": torch.randn(500, 256)}, "learn.pt": {"W": _orthonormal(64, 512)}})
    with pytest.raises(VqclipError) as e:
        published.ensure_projection(asset, tmp_path / "cache")
    assert "shape 500×256 is wrong" in str(e.value) and "not recognisably" not in str(e.value)


def test_published_nan_file_gets_advice_that_works(tmp_path):
    from vqclip.errors import VqclipError
    from vqclip.projections import published

    asset = _published(tmp_path, {"forget.pt": {"W": _nan()}, "learn.pt": {"W": _orthonormal(64, 512)}})
    with pytest.raises(VqclipError) as e:
        published.ensure_projection(asset, tmp_path / "cache")
    msg = str(e.value)
    assert "NaN" in msg and "--projection" not in msg and "vqclip train --space forget" in msg


def test_files_copied_by_hand_are_recorded_as_copied_by_hand(tmp_path):
    from vqclip.projections import published

    asset = _published(tmp_path, {"forget.pt": {"W": _orthonormal(256, 512)}, "learn.pt": {"W": _orthonormal(64, 512)}})
    out = published.ensure_projection(asset, tmp_path / "cache")
    meta = published.read_metadata(out)
    assert meta["obtained"] == "copied by hand into the published folder" and "source_url" not in meta
    assert published.projection_status(asset, tmp_path / "cache") == "converted (copied by hand)"
