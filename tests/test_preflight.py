"""Issue 25 item 1 and 6: before a command loads anything, every missing file in one message (offline: in seconds),
`vqclip models check` as a table, `reproduce all --dry-run` offline. The network probe is replaced in every test:
nothing here connects anywhere."""

import os
import time

import pytest

from vqclip import preflight
from vqclip.cli import main


@pytest.fixture()
def fresh(tmp_path, monkeypatch):
    """A new user's machine: empty vqclip cache, empty hub cache, HF_HUB_OFFLINE unset."""
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    return tmp_path


def _probe(monkeypatch, online: bool) -> list:
    calls = []

    def probe(*args, **kwargs):
        calls.append(1)
        return online

    monkeypatch.setattr(preflight, "probe_network", probe)
    monkeypatch.setattr(preflight, "_network", None)
    return calls


def test_offline_first_generate_lists_clip_vqgan_and_projection_at_once_and_fast(fresh, monkeypatch, capsys):
    calls = _probe(monkeypatch, online=False)
    start = time.perf_counter()
    rc = main(["generate", "--space", "forget", "a photo of an apple"])
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    assert rc == 2 and seconds < 10, (rc, seconds)
    assert err.count("vqclip generate: error:") == 1
    assert "cannot reach huggingface.co or drive.google.com" in err
    assert "CLIP weights ViT-B-32/openai" in err and str(fresh / "hub" / "models--timm--vit_base_patch32_clip_224.openai") in err
    assert "projection forget (ViT-B-32/openai)" in err
    assert str(fresh / "cache" / "projections" / "ViT-B-32_openai" / "published") in err
    assert "drive.google.com/drive/folders/" in err
    assert "vqgan_imagenet_f16_16384.ckpt" in err and "heibox" in err
    assert str(fresh / "cache" / "vqgan" / "vqgan_imagenet_f16_16384") in err
    assert calls == [1]  # probed once
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # the hubs stay offline for the rest of the run
    assert not (fresh / "cache").exists()  # nothing created: no empty folder, no lock file


def test_online_but_one_cannot_be_fetched_lists_all_missing_in_one_message(fresh, monkeypatch, capsys):
    _probe(monkeypatch, online=True)
    rc = main(["generate", "--space", "learn", "--clip", "ViT-B-16", "--pretrained", "openai", "apple"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "vqclip cannot download every one of them" in err
    assert "CLIP weights ViT-B-16/openai" in err and "projection learn (ViT-B-16/openai)" in err
    assert "vqclip train --space learn --clip ViT-B-16 --pretrained openai" in err
    assert "vqgan_imagenet_f16_16384.yaml" in err


def test_online_with_everything_fetchable_goes_on_to_download(fresh, monkeypatch):
    _probe(monkeypatch, online=True)
    needs = preflight.plan_assets(clip="ViT-B-32", pretrained="openai", spaces=[("forget", None)])
    said = []
    preflight.preflight(needs, say=said.append)  # no raise: the loaders download
    assert said and "CLIP weights ViT-B-32/openai" in said[0] and "projection forget" in said[0]


def test_everything_present_turns_the_hubs_offline_without_probing(fresh, monkeypatch):
    calls = _probe(monkeypatch, online=True)
    needs = [preflight.Need("CLIP weights", "x", True, "/p", "u")]
    preflight.preflight(needs)
    assert calls == [] and os.environ["HF_HUB_OFFLINE"] == "1"


def test_a_present_hub_snapshot_counts_as_present(fresh):
    snap = fresh / "hub" / "models--timm--vit_base_patch32_clip_224.openai" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "open_clip_model.safetensors").write_bytes(b"x")
    need = preflight.clip_need("ViT-B-32", "openai")
    assert need.present


def test_user_files_need_no_download(fresh, tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert preflight.clip_need("ViT-B-32", str(weights)) is None
    assert preflight.clip_need(f"local-dir:{tmp_path}", None) is None
    assert preflight.vqgan_needs(None, "some.ckpt") == []


def test_models_check_prints_the_same_as_a_table(fresh, monkeypatch, capsys):
    calls = _probe(monkeypatch, online=False)
    rc = main(["models", "check", "--space", "forget", "--recipe", "paper"])
    out = capsys.readouterr().out
    assert rc == 1
    assert out.splitlines()[0].split() == ["what", "name", "status", "path"]
    assert "MISSING" in out and "vqgan_imagenet_f16_1024" in out and "forget (ViT-B-32/openai)" in out
    assert "CLIP weights" in out and "put it at" in out
    assert calls == []  # a check runs nothing, not even the probe


def test_models_check_with_a_weights_file_lists_no_clip_weights(fresh, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert main(["models", "check", "--pretrained", str(weights), "--vqgan", "vqgan_imagenet_f16_1024"]) == 1
    rows = capsys.readouterr().out
    assert "CLIP" not in rows.split("\n\n")[0].split("\n", 1)[1]  # a weights file given: nothing to fetch for CLIP


def test_offline_env_means_no_probe(monkeypatch):
    calls = _probe(monkeypatch, online=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert preflight.network_available() is False and calls == []


def test_reproduce_all_dry_run_offline_prints_the_plan_and_everything_missing(fresh, monkeypatch, capsys, tmp_path):
    _probe(monkeypatch, online=False)
    words = tmp_path / "words.txt"
    words.write_text("apple,real\nhouse,real\nzezr,nonsense\nqwpx,nonsense\n")
    out = tmp_path / "r"
    rc = main(["reproduce", "all", "--dry-run", "--words", str(words), "--scale", "0.001", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "2 real + 2 nonsense words x 3 spaces = 12 images" in printed
    assert "no network" in printed
    for what in ("CLIP weights ViT-B-32/openai", "learn (ViT-B-32/openai)", "forget (ViT-B-32/openai)",
                 "vqgan_imagenet_f16_1024", "typographic-attack photos"):
        assert what in printed, what
    assert not out.exists() and not (fresh / "cache").exists()


def test_a_failed_fetch_leaves_no_lock_file_or_empty_folder(fresh):
    """Issue 25 item 5: an offline first fetch used to leave projections/ViT-B-32_openai/.lock behind."""
    from vqclip.errors import VqclipError
    from vqclip import downloads
    from vqclip.projections import ensure_projection

    with pytest.raises(VqclipError):
        ensure_projection("ViT-B-32/openai:forget", fresh / "cache")  # conftest: Drive unreachable
    assert not (fresh / "cache").exists()
    folder = fresh / "cache" / "vqgan" / "x"
    with pytest.raises(KeyboardInterrupt):
        with downloads.locked(folder):
            raise KeyboardInterrupt
    assert not (fresh / "cache").exists()
    with downloads.locked(folder):  # a success keeps its folder (and the lock, shared with parallel ranks)
        (folder / "done").write_text("x")
    assert (folder / "done").is_file()


def test_offline_first_train_lists_clip_imagenetv2_and_wordfreq_at_once(fresh, monkeypatch, capsys):
    """Issue 25: train without --images also needs ImageNetV2, and a missing extra is said in the same message."""
    import importlib.util

    calls = _probe(monkeypatch, online=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wordfreq" else real_find_spec(name, *a))
    rc = main(["train", "--space", "forget"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("vqclip train: error:") == 1, err
    assert "CLIP weights ViT-B-32/openai" in err
    assert "dataset ImageNetV2 matched-frequency" in err
    assert str(fresh / "cache" / "datasets" / "imagenetv2" / "imagenetv2-matched-frequency.tar.gz") in err
    assert 'extra wordfreq: install it with pip install -e ".[train]" in the vqclip clone' in err
    assert calls == [1] and not (fresh / "cache").exists()


def test_a_missing_extra_alone_is_said_without_probing_the_network(monkeypatch):
    import importlib.util

    calls = _probe(monkeypatch, online=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    need = preflight.extra_need("easyocr")
    assert not need.present and 'pip install -e ".[ocr]" in the vqclip clone' in need.line()
    with pytest.raises(preflight.MissingAssets, match="not installed: easyocr: install it with pip install"):
        preflight.preflight([need])
    assert calls == []


# Issue 36 item 12: each piece of offline advice is a command the installed tools run, putting files where the code
# that reads them looks.

def _hf_help() -> str:
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    hf = shutil.which("hf") or str(Path(sys.executable).parent / "hf")
    done = subprocess.run([hf, "download", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _commands(text: str, prefix: str) -> list[str]:
    import re

    return [c for c in re.findall(r"`([^`]+)`", text) if c.startswith(prefix)]


@pytest.mark.parametrize("clip, pretrained", [("ViT-B-32", "openai"), ("hf-hub:laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
                                                                        None)])
def test_the_clip_weights_advice_is_an_hf_download_the_installed_hub_ships(fresh, clip, pretrained):
    """huggingface_hub >= 1.0 ships only `hf` (no `huggingface-cli`): the advice names `hf download` with flags it
    has, writing into the very hub folder the preflight checks."""
    need = preflight.clip_need(clip, pretrained)
    line = need.line()
    assert "huggingface-cli" not in line
    commands = _commands(line, "hf ")
    assert len(commands) == 2, line  # into the cache layout; or into a folder passed to vqclip
    help_text = _hf_help()
    for command in commands:
        words = command.split()
        assert words[:2] == ["hf", "download"]
        for flag in (w for w in words if w.startswith("--")):
            assert f"{flag} " in help_text, (flag, help_text)
    assert f"--cache-dir {fresh / 'hub'}" in commands[0] and f"{need.path}/" in line


def _hub_layout(hub, repo: str, filename: str, refs: bool = True):
    """What `hf download REPO FILE --cache-dir HUB` writes (huggingface_hub's documented cache layout):
    models--ORG--NAME/blobs/ETAG, refs/main holding the commit, snapshots/COMMIT/FILE linking to the blob."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / "e7ag").write_bytes(b"weights")
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / filename).symlink_to("../../blobs/e7ag")
    if refs:
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text(commit)
    return folder / "snapshots" / commit / filename


@pytest.mark.parametrize("refs", [True, False])
def test_the_folder_the_advice_says_to_copy_is_what_open_clip_reads_offline(fresh, monkeypatch, refs):
    """The advice copies the whole models--ORG--NAME folder: open_clip reads the weights through hf_hub_download,
    which offline needs refs/main to find snapshots/REV/ (the file alone, or a snapshot without refs, is not found)."""
    import huggingface_hub
    from open_clip.pretrained import download_pretrained_from_hf

    need = preflight.clip_need("ViT-B-32", "openai")
    repo = "timm/vit_base_patch32_clip_224.openai"
    assert need.path == str(fresh / "hub" / f"models--{repo.replace('/', '--')}")
    weights = _hub_layout(fresh / "hub", repo, "open_clip_model.safetensors", refs=refs)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert preflight.clip_need("ViT-B-32", "openai").present  # the preflight looks under snapshots/
    if refs:
        found = download_pretrained_from_hf(repo, "open_clip_pytorch_model.bin", cache_dir=str(fresh / "hub"))
        assert os.path.samefile(found, weights)
    else:
        with pytest.raises(Exception):
            download_pretrained_from_hf(repo, "open_clip_pytorch_model.bin", cache_dir=str(fresh / "hub"))


def test_the_projection_advice_says_where_train_writes(fresh):
    """`vqclip train` writes <cache>/projections/<clip>/<space>.safetensors, not into published/ (the paper's
    folder): the advice names each path for what goes there."""
    from vqclip.projections import projection_path
    from vqclip.spelling.train import write_projection

    line = preflight.projection_need("forget", "ViT-B-32/openai").line()
    written = projection_path("forget", "ViT-B-32/openai")
    assert f"put them in {fresh / 'cache' / 'projections' / 'ViT-B-32_openai' / 'published'}/" in line
    assert f"`vqclip train --space forget`, which writes {written}" in line
    other = preflight.projection_need("learn", "ViT-B-16/openai", clip_flags="--clip ViT-B-16 --pretrained openai")
    assert other.line().endswith(f"which writes {projection_path('learn', 'ViT-B-16/openai')}")
    import torch
    from vqclip.spelling.train import TrainResult

    W = torch.linalg.qr(torch.randn(512, 8, generator=torch.Generator().manual_seed(0)))[0].T
    result = TrainResult(W, "forget", 8, {"L1": 1.0}, 1.0, 0, [], {}, {}, 0.0)
    assert write_projection(result, "ViT-B-32/openai") == written and written.is_file()  # what train writes
