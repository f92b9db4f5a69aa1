"""`vqclip models list|download|convert` through `main(argv)`."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest
import torch

from vqclip.cli import main
from vqclip.models import registry
from vqclip.models.registry import VQGAN_ASSETS, converted_path, resolve_vqgan
from vqclip.models.tiny import make_file_asset, make_vqgan, write_taming_files


@pytest.fixture()
def fake_registry(tmp_path, monkeypatch):
    asset, model = make_file_asset(tmp_path / "server", "tiny_vq", "vq")
    monkeypatch.setattr(registry, "VQGAN_ASSETS", MappingProxyType({"tiny_vq": asset}))
    return asset, model


def test_list_shows_every_model_size_hash_and_cache_state(capsys, tmp_path):
    assert main(["models", "list", "--cache-dir", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, asset in VQGAN_ASSETS.items():
        (line,) = [x for x in lines if f" {name} " in x]
        assert "not cached" in line and "unverified (no published hash)" in line
        assert f" {asset.factor} " in line and f" {asset.n_embed} " in line and "~" in line
    assert any(x.startswith("* vqgan_imagenet_f16_16384") for x in lines)
    assert str(tmp_path / "c" / "vqgan") in out


def test_list_reflects_the_cache(capsys, fake_registry):
    assert main(["models", "list", "--json"]) == 0
    (row,) = [r for r in map(json.loads, capsys.readouterr().out.splitlines()) if r["type"] == "vqgan"]
    assert row["name"] == "tiny_vq" and row["status"] == "not cached" and row["verification"] == "sha256"
    assert main(["models", "download", "tiny_vq", "--quiet", "--remove-original"]) == 0
    out = capsys.readouterr().out
    assert str(converted_path("tiny_vq")) in out
    assert not (converted_path("tiny_vq").parent / "tiny_vq.ckpt").exists()
    assert main(["models", "list"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "tiny_vq" in x]
    assert line.rstrip().endswith("converted")


def test_download_unknown_name_lists_valid_ones_and_fetches_nothing(capsys, fake_registry):
    assert main(["models", "download", "tiny_vq", "tiny_vk", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "NAME: not a known VQGAN or projection name; got 'tiny_vk'" in err and "tiny_vq" in err
    assert not converted_path("tiny_vq").exists()


def test_download_without_conversion(capsys, fake_registry):
    assert main(["models", "download", "tiny_vq", "--no-convert", "--quiet"]) == 0
    assert not converted_path("tiny_vq").exists()
    assert (converted_path("tiny_vq").parent / "tiny_vq.ckpt").is_file()


def test_convert_into_the_cache_under_a_name(capsys, tmp_path):
    original = make_vqgan(kind="gumbel", seed=4)
    config, ckpt = write_taming_files(tmp_path / "files", original, kind="gumbel", name="mine")
    assert main(["models", "convert", "--config", str(config), "--checkpoint", str(ckpt), "--name", "my-art"]) == 0
    out = capsys.readouterr().out
    assert str(converted_path("my-art")) in out and "--vqgan my-art" in out
    z = torch.randn(1, 8, 2, 2)
    assert torch.equal(resolve_vqgan("my-art").decode(z), original.decode(z))
    assert main(["models", "list"]) == 0
    assert any(x.strip().startswith("my-art") for x in capsys.readouterr().out.splitlines())


def test_convert_to_an_output_path_and_its_errors(capsys, tmp_path):
    config, ckpt = write_taming_files(tmp_path / "files", make_vqgan())
    out = tmp_path / "out" / "tiny.safetensors"
    args = ["models", "convert", "--config", str(config), "--checkpoint", str(ckpt)]
    assert main(args + ["--output", str(out)]) == 0
    assert out.is_file() and f"--vqgan-checkpoint {out}" in capsys.readouterr().out
    assert main(args + ["--output", str(tmp_path / "x.ckpt")]) == 2
    assert "--output: must end in .safetensors" in capsys.readouterr().err
    assert main(args + ["--name", "bad name!"]) == 2
    assert "--name:" in capsys.readouterr().err
    (tmp_path / "blocker").write_text("")
    assert main(args + ["--cache-dir", str(tmp_path / "blocker" / "c")]) == 2
    assert "--cache-dir: must be a folder vqclip can write to" in capsys.readouterr().err
    assert main(["models", "convert", "--config", str(tmp_path / "none.yaml"), "--checkpoint", str(ckpt)]) == 2
    assert "--config: config file not found" in capsys.readouterr().err


def test_convert_refuses_a_malicious_checkpoint(capsys, tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {tmp_path / 'pwned'}",)

    config, _ = write_taming_files(tmp_path / "files", make_vqgan())
    torch.save({"state_dict": {}, "x": Evil()}, tmp_path / "evil.ckpt")
    assert main(["models", "convert", "--config", str(config), "--checkpoint", str(tmp_path / "evil.ckpt"),
                 "--name", "evil"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vqclip models: error: --checkpoint:") and "system" in err and "not executed" in err
    assert not (tmp_path / "pwned").exists() and not converted_path("evil").exists()


def test_convert_never_replaces_an_existing_file_silently(capsys, tmp_path):
    config, ckpt = write_taming_files(tmp_path / "files", make_vqgan())
    out = tmp_path / "tiny.safetensors"
    out.write_bytes(b"precious")
    args = ["models", "convert", "--config", str(config), "--checkpoint", str(ckpt), "--output", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--output: a file already exists there" in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    assert main(args + ["--overwrite"]) == 0
    assert out.read_bytes() != b"precious"
    cache_args = ["models", "convert", "--config", str(config), "--checkpoint", str(ckpt), "--name", "mine"]
    assert main(cache_args) == 0
    assert main(cache_args) == 2 and "--name: a file already exists" in capsys.readouterr().err


def test_convert_without_a_config_says_which_checkpoint_needs_one(capsys, tmp_path):
    _, ckpt = write_taming_files(tmp_path / "files", make_vqgan())
    assert main(["models", "convert", "--checkpoint", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "got None" not in err
    assert "--config: is needed: this checkpoint carries no config of its own" in err and str(ckpt) in err
    assert "--config FILE.yaml" in err
