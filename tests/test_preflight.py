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
    assert 'extra wordfreq: install it with pip install "vqclip[train]"' in err
    assert calls == [1] and not (fresh / "cache").exists()


def test_a_missing_extra_alone_is_said_without_probing_the_network(monkeypatch):
    import importlib.util

    calls = _probe(monkeypatch, online=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    need = preflight.extra_need("easyocr")
    assert not need.present and 'pip install "vqclip[ocr]"' in need.line()
    with pytest.raises(preflight.MissingAssets, match="not installed: easyocr: install it with pip install"):
        preflight.preflight([need])
    assert calls == []
