"""Registered projections (the paper's released matrices): fetched folder -> identified -> checked -> converted.

Google Drive is never reached: a fake fetcher writes a folder of torch files the way gdown would.
"""

from __future__ import annotations

import json
import shlex

import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.io import sha256_file
from vqclip import downloads
from vqclip.projections.authors import identify, orient, scan_folder
from vqclip.projections.files import space_from_name
from vqclip.projections import ensure_projection, PROJECTION_ASSETS
from vqclip.projections.published import PAPER_DRIVE_FOLDER, projection_file, projection_status, published_dir
from vqclip.projections import load_projection, MissingProjection, projection_path, resolve_space, save_projection

CLIP = "ViT-B-32/openai"
REAL_GDOWN_FOLDER = downloads.gdown_folder  # before the conftest replaces it with an offline stand-in


def orthonormal(d: int, D: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.init.orthogonal_(torch.empty(d, D), generator=g)  # (d, D), orthonormal rows


def folder_fetcher(files: dict, calls: list | None = None, fail_after: int | None = None):
    """A stand-in for gdown's folder download: writes `files` {name: object or bytes} into the output folder."""

    def fetch(url, output, progress):
        if calls is not None:
            calls.append(url)
        for i, (name, obj) in enumerate(files.items()):
            if fail_after is not None and i == fail_after:
                raise RuntimeError("Failed to download the following files: quota exceeded")
            path = output / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(obj, bytes):
                path.write_bytes(obj)
            else:
                torch.save(obj, path)

    return fetch


@pytest.fixture()
def paper_matrices():
    learn, forget = orthonormal(64, 512, 1), orthonormal(256, 512, 2)
    # learn as the authors' README uses it (x @ W, stored D×d); forget as their F.linear weight (d×D)
    return {"learn_to_spell.pt": {"W": learn.T.contiguous()}, "forget_to_spell.pt": {"W": forget}}, learn, forget


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".download-")) if folder.is_dir() else []


def test_the_registry_holds_the_papers_two_matrices_for_vit_b_32():
    assert set(PROJECTION_ASSETS) == {"ViT-B-32/openai:learn", "ViT-B-32/openai:forget"}
    for asset in PROJECTION_ASSETS.values():
        assert asset.folders == (PAPER_DRIVE_FOLDER,) and asset.embed_dim == 512
        assert projection_file(asset) == projection_path(asset.space, CLIP)  # where --space learn|forget looks
    assert PROJECTION_ASSETS["ViT-B-32/openai:learn"].dim == 64 and PROJECTION_ASSETS["ViT-B-32/openai:forget"].dim == 256


def test_fetch_identifies_orients_checks_and_converts_both(paper_matrices):
    files, learn, forget = paper_matrices
    calls = []
    out = ensure_projection("ViT-B-32/openai:forget", fetcher=folder_fetcher(files, calls))
    assert calls == [PAPER_DRIVE_FOLDER]
    assert out == projection_path("forget", CLIP)
    space = resolve_space("forget", CLIP, 512)  # what `vqclip generate --space forget` now finds
    assert space.W.shape == (256, 512) and torch.equal(space.W, forget)
    meta = space.metadata
    source = published_dir(PROJECTION_ASSETS["ViT-B-32/openai:forget"]) / "forget_to_spell.pt"
    assert meta["clip_model"] == CLIP and meta["space"] == "forget" and meta["source_url"] == PAPER_DRIVE_FOLDER
    assert meta["source_file"] == "forget_to_spell.pt" and meta["source_sha256"] == sha256_file(source)
    assert meta["orientation"].startswith("d×D") and meta["identified_by"] == "file name"
    assert float(meta["orthogonality_error"]) < 1e-4
    assert "Materzynska" in meta["source"]

    learned = resolve_space("learn", CLIP, 512)  # converted from the same download; nothing fetched again
    assert calls == [PAPER_DRIVE_FOLDER]
    assert learned.W.shape == (64, 512) and torch.allclose(learned.W, learn)
    assert learned.metadata["orientation"].startswith("D×d") and "transposed" in learned.metadata["orientation"]
    x = torch.randn(3, 512)  # the README's use of the stored file: normalize(x @ W)
    stored = files["learn_to_spell.pt"]["W"]
    assert torch.allclose(learned.project(x), torch.nn.functional.normalize(x @ stored, dim=-1), atol=1e-6)
    for asset in PROJECTION_ASSETS.values():
        assert projection_status(asset) == "converted"
    assert leftovers(out.parent) == []


def test_unnamed_files_are_told_apart_by_shape():
    files = {"a.pt": orthonormal(512, 512)[:, :64].contiguous(), "b.pt": {"W": orthonormal(256, 512)}}
    ensure_projection("ViT-B-32/openai:learn", fetcher=folder_fetcher(files))
    meta = load_projection(projection_path("learn", CLIP)).metadata
    assert meta["source_file"] == "a.pt" and meta["identified_by"] == "shape (d = 64)"
    assert load_projection(projection_path("forget", CLIP)).metadata["source_file"] == "b.pt"


def test_an_unexpected_folder_lists_what_it_found_and_caches_no_projection():
    files = {"notes.txt": b"see the paper", "model.pt": {"W": orthonormal(100, 512)},
             "cube.pt": {"W": torch.zeros(2, 3, 4)}}
    asset = PROJECTION_ASSETS["ViT-B-32/openai:forget"]
    with pytest.raises(VqclipError) as e:
        ensure_projection(asset, fetcher=folder_fetcher(files))
    msg = str(e.value)
    assert "\n" not in msg
    assert "model.pt (100×512 tensor 'W')" in msg and "notes.txt (not a readable torch file)" in msg
    assert "cube.pt (a 3-D tensor (2, 3, 4), not a matrix)" in msg
    folder = published_dir(asset)
    assert f"--projection {folder}/FILE" in msg and f"delete {folder}" in msg
    assert not projection_path("forget", CLIP).exists() and not projection_path("learn", CLIP).exists()
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["cube.pt", "model.pt",
                                                                                        "notes.txt"]


def test_two_files_claiming_the_same_space_are_ambiguous():
    found_files = {"forget_a.pt": {"W": orthonormal(256, 512)}, "forget_b.pt": {"W": orthonormal(256, 512, 3)},
                   "model.pt": {"W": orthonormal(256, 512, 4)}}  # a shape match does not settle what names dispute
    with pytest.raises(VqclipError, match="forget_a.pt.*forget_b.pt"):
        ensure_projection("ViT-B-32/openai:forget", fetcher=folder_fetcher(found_files))
    assert not projection_path("forget", CLIP).exists()


def test_a_failed_download_leaves_nothing_and_says_where_to_put_the_files():
    asset = PROJECTION_ASSETS["ViT-B-32/openai:learn"]
    files = {"learn.pt": {"W": orthonormal(64, 512)}, "forget.pt": {"W": orthonormal(256, 512)}}
    with pytest.raises(VqclipError) as e:
        ensure_projection(asset, fetcher=folder_fetcher(files, fail_after=1))
    msg = str(e.value)
    assert PAPER_DRIVE_FOLDER in msg and f"{published_dir(asset)}/" in msg and "quota exceeded" in msg
    assert not published_dir(asset).exists()  # the partial folder is gone
    assert not projection_path("learn", CLIP).exists() and leftovers(projection_path("learn", CLIP).parent) == []


def test_offline_the_generation_error_names_the_folder_the_path_and_the_training_command():
    with pytest.raises(MissingProjection) as e:
        resolve_space("forget", CLIP, 512)  # the default fetcher: offline in the tests
    msg = str(e.value)
    folder = published_dir(PROJECTION_ASSETS["ViT-B-32/openai:forget"])
    assert msg.startswith("--space forget: no forget projection for CLIP 'ViT-B-32/openai'")
    assert PAPER_DRIVE_FOLDER in msg and f"put the files of that folder in {folder}/" in msg
    assert "cannot be reached" in msg
    command = msg.split("Train one with: ")[1].split("  — ")[0]
    assert shlex.split(command) == ["vqclip", "train", "--space", "forget", "--clip", "ViT-B-32", "--pretrained",
                                    "openai"]
    assert "1.26 GB" in msg and "--projection PATH" in msg
    with pytest.raises(VqclipError, match="downloads are off") as off:
        ensure_projection("ViT-B-32/openai:forget", download=False)
    assert f"put them in {folder}/" in str(off.value) and PAPER_DRIVE_FOLDER in str(off.value)


def test_files_copied_in_by_hand_are_converted_offline(paper_matrices):
    files, _, forget = paper_matrices
    asset = PROJECTION_ASSETS["ViT-B-32/openai:forget"]
    folder = published_dir(asset)
    folder.mkdir(parents=True)
    torch.save(files["forget_to_spell.pt"], folder / "forget_to_spell.pt")
    out = ensure_projection(asset, download=False)
    assert torch.equal(load_projection(out).W, forget)
    assert (folder / "forget_to_spell.pt").is_file()  # the user's file stays
    with pytest.raises(VqclipError, match="no file in the published folder is recognisably the learn"):
        ensure_projection("ViT-B-32/openai:learn", download=False)


def test_a_file_vqclip_did_not_convert_is_used_and_never_replaced():
    trained = projection_path("forget", CLIP)
    save_projection(trained, orthonormal(128, 512), "forget", CLIP, {"training": {"epochs": 3}})
    before = trained.read_bytes()
    calls = []
    assert ensure_projection("ViT-B-32/openai:forget", fetcher=folder_fetcher({}, calls)) == trained
    assert calls == [] and trained.read_bytes() == before
    assert projection_status(PROJECTION_ASSETS["ViT-B-32/openai:forget"]).startswith("another file")


def test_a_matrix_far_from_orthonormal_is_refused_with_its_measured_error():
    bad = orthonormal(256, 512) * 3  # rows of norm 3
    files = {"forget.pt": {"W": bad}, "learn.pt": {"W": orthonormal(64, 512)}}
    with pytest.raises(VqclipError) as e:
        ensure_projection("ViT-B-32/openai:forget", fetcher=folder_fetcher(files))
    msg = str(e.value)
    assert "far from orthonormal (‖WWᵀ − I‖_F = 128" in msg
    assert "--projection" not in msg and "vqclip train --space forget" in msg  # advice that works (issue 25)
    assert not projection_path("forget", CLIP).exists()
    assert projection_path("learn", CLIP).is_file()  # the good sibling was still converted


def test_non_finite_values_are_refused():
    W = orthonormal(256, 512)
    W[0, 0] = float("nan")
    with pytest.raises(VqclipError, match="NaN"):
        ensure_projection("ViT-B-32/openai:forget", fetcher=folder_fetcher({"forget.pt": {"W": W}}))
    assert not projection_path("forget", CLIP).exists()


class Payload:  # a class torch's weights-only reader refuses; unpickling it would run this module's code
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickle_with_code_is_refused_not_run(capsys):
    files = {"forget.pt": {"W": orthonormal(256, 512), "extra": Payload()}}
    with pytest.raises(VqclipError, match=r"forget.pt: it cannot be read as a matrix \(refused: holds more than tensors\)"):
        ensure_projection("ViT-B-32/openai:forget", fetcher=folder_fetcher(files))
    assert "this must never run" not in capsys.readouterr().out


def test_stale_temporary_downloads_are_cleaned_and_parallel_calls_fetch_once(paper_matrices):
    files, _, _ = paper_matrices
    stale = projection_path("forget", CLIP).parent / ".download-old"
    stale.mkdir(parents=True)
    (stale / "half.pt").write_bytes(b"x")
    calls = []
    ensure_projection("ViT-B-32/openai:forget", fetcher=folder_fetcher(files, calls))
    ensure_projection("ViT-B-32/openai:learn", fetcher=folder_fetcher(files, calls))
    assert calls == [PAPER_DRIVE_FOLDER] and not stale.exists()


@pytest.mark.parametrize("name,space", [("learn_to_spell.pt", "learn"), ("forget_to_spell.pt", "forget"),
                                        ("W_nospell_256.pt", "forget"), ("spelling_d64.pth", "learn"),
                                        ("learn_to_forget.pt", None), ("model.pt", None),
                                        ("forget/W.pt", "forget"), ("learn_to_spell/model.pt", "learn"),
                                        ("forget/learn.pt", "learn")])
def test_space_from_file_name(name, space):
    assert space_from_name(name) == space


def test_two_unnamed_matrices_of_other_sizes_go_by_relative_size(tmp_path):
    torch.save({"W": orthonormal(128, 512)}, tmp_path / "p1.pt")
    torch.save({"W": orthonormal(384, 512).T.contiguous()}, tmp_path / "p2.pt")
    chosen = identify(scan_folder(tmp_path), 512, {"learn": 64, "forget": 256})
    assert chosen["learn"].file.name == "p1.pt" and chosen["forget"].file.name == "p2.pt"
    assert "relative shape" in chosen["learn"].how


def test_orientation_of_a_square_matrix_follows_the_authors_readme():
    W = orthonormal(512, 512)
    oriented, how = orient(W, 512)
    assert torch.equal(oriented, W.T) and "square" in how


def test_models_list_and_download_show_and_fetch_projections(capsys, paper_matrices, monkeypatch):
    from vqclip.cli import main

    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in PROJECTION_ASSETS:
        (line,) = [x for x in out.splitlines() if x.startswith(name)]
        assert "not cached" in line and "paper" in line
    assert PAPER_DRIVE_FOLDER in out
    files, _, _ = paper_matrices
    monkeypatch.setattr(downloads, "gdown_folder", folder_fetcher(files))
    assert main(["models", "download", "ViT-B-32/openai:forget", "--quiet"]) == 0
    assert str(projection_path("forget", CLIP)) in capsys.readouterr().out
    assert main(["models", "list", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    status = {r["name"]: r["status"] for r in rows if r["type"] == "projection"}
    assert status == {"ViT-B-32/openai:learn": "converted", "ViT-B-32/openai:forget": "converted"}


def test_models_list_shows_projections_trained_locally(capsys):
    from vqclip.cli import main

    save_projection(projection_path("learn", "ViT-L-14/openai"), orthonormal(96, 768), "learn", "ViT-L-14/openai",
                    {"training": {"epochs": 30}})
    assert main(["models", "list"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("ViT-L-14/openai:learn")]
    assert "trained with vqclip train" in line and " 96 " in line


def test_models_download_offline_names_the_folder_and_path(capsys):
    from vqclip.cli import main

    assert main(["models", "download", "ViT-B-32/openai:learn", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vqclip models: error: NAME: could not download")
    assert PAPER_DRIVE_FOLDER in err and str(published_dir(PROJECTION_ASSETS["ViT-B-32/openai:learn"])) in err


def test_gdown_adapter_downloads_the_folder_without_cookies(tmp_path, monkeypatch):
    import gdown

    seen = {}

    def fake_download_folder(url, output, quiet, use_cookies):
        seen.update(url=url, output=output, quiet=quiet, use_cookies=use_cookies)
        return None  # what old gdown versions return when the listing fails

    monkeypatch.setattr(gdown, "download_folder", fake_download_folder)
    with pytest.raises(OSError, match="downloaded nothing"):
        REAL_GDOWN_FOLDER(PAPER_DRIVE_FOLDER, tmp_path, False)
    assert seen == {"url": PAPER_DRIVE_FOLDER, "output": str(tmp_path), "quiet": True, "use_cookies": False}


@pytest.mark.slow
def test_real_fetch_of_the_papers_folder(tmp_path):
    """Downloads the authors' Drive folder; skips cleanly where Google Drive cannot be reached."""
    asset = PROJECTION_ASSETS["ViT-B-32/openai:forget"]
    try:
        out = ensure_projection(asset, tmp_path, progress=False)
    except VqclipError as e:
        if "could not download" in str(e):
            pytest.skip(f"Google Drive unreachable from here: {str(e)[:200]}")
        raise
    space = load_projection(out)
    assert space.W.shape[1] == 512 and space.metadata["source_url"] == PAPER_DRIVE_FOLDER
    assert float(space.metadata["orthogonality_error_per_sqrt_d"]) < 0.25
