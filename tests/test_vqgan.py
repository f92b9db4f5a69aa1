"""The VQGAN adapter loads taming-format files (YAML + Lightning .ckpt / state dict / safetensors) strictly."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

from vqclip.errors import VqclipError
from vqclip.models.checkpoints import read_checkpoint, safetensors_metadata
from vqclip.models.tiny import TINY_VQGAN_DDCONFIG, make_vqgan, taming_config, write_taming_files
from vqclip.models.vqgan import (VQGANConfig, convert_checkpoint, load_vqgan, parse_taming_config,
                                 read_taming_config)


@pytest.mark.parametrize("kind", ["vq", "gumbel"])
def test_lightning_checkpoint_loads_with_the_published_weights(tmp_path, kind):
    original = make_vqgan(kind=kind, seed=3)
    config, ckpt = write_taming_files(tmp_path, original, kind=kind)
    model = load_vqgan(config, ckpt)
    assert model.kind == kind and model.factor == 2 and model.n_embed == 64
    assert model.codebook.shape == (64, 8)
    assert torch.equal(model.codebook, original.codebook)
    x = torch.rand(2, 3, 32, 48)
    z = model.encode(x)
    assert z.shape == (2, 8, 16, 24)
    y = model.decode(z)
    assert y.shape == (2, 3, 32, 48)
    assert torch.equal(y, original.decode(z))
    assert not any(p.requires_grad for p in model.parameters())
    assert "taming.models" not in sys.modules and "pytorch_lightning" not in sys.modules
    assert "lpips" not in sys.modules


def test_gumbel_encode_returns_codebook_vectors(tmp_path):
    config, ckpt = write_taming_files(tmp_path, make_vqgan(kind="gumbel"), kind="gumbel")
    model = load_vqgan(config, ckpt)
    z = model.encode(torch.rand(1, 3, 32, 32))  # (1, 8, 16, 16)
    vectors = z.permute(0, 2, 3, 1).reshape(-1, 8)
    assert (vectors[:, None, :] == model.codebook[None]).all(-1).any(-1).all()  # each one is a code, exactly


def test_plain_state_dict_and_safetensors_without_metadata(tmp_path):
    from safetensors.torch import save_file

    original = make_vqgan(seed=5)
    config, _ = write_taming_files(tmp_path, original)
    torch.save(original.state_dict(), tmp_path / "plain.pt")
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(tmp_path / "plain.safetensors"))
    z = torch.randn(1, 8, 4, 4)
    for name in ("plain.pt", "plain.safetensors"):
        assert torch.equal(load_vqgan(config, tmp_path / name).decode(z), original.decode(z))
    with pytest.raises(VqclipError, match="--vqgan-config"):
        load_vqgan(None, tmp_path / "plain.safetensors")


def test_wrong_keys_are_listed(tmp_path):
    original = make_vqgan()
    config, _ = write_taming_files(tmp_path, original)
    state = dict(original.state_dict())
    del state["post_quant_conv.weight"]
    state["decoder.extra_head.weight"] = torch.zeros(1)
    state["loss.discriminator.w"] = torch.zeros(1)  # training-only: dropped, not reported
    torch.save({"state_dict": state}, tmp_path / "bad.ckpt")
    with pytest.raises(VqclipError) as e:
        load_vqgan(config, tmp_path / "bad.ckpt")
    msg = str(e.value)
    assert "post_quant_conv.weight" in msg and "decoder.extra_head.weight" in msg
    assert "missing 1" in msg and "unexpected 1" in msg and "loss." not in msg
    assert "--vqgan-checkpoint" in msg and "bad.ckpt" in msg


def test_config_that_does_not_match_the_checkpoint(tmp_path):
    config, ckpt = write_taming_files(tmp_path, make_vqgan(n_embed=64))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(taming_config(TINY_VQGAN_DDCONFIG, 32, 8)))
    with pytest.raises(VqclipError, match=r"quantize.embedding.weight \(64, 8\) vs \(32, 8\)"):
        load_vqgan(other, ckpt)
    gumbel_cfg = tmp_path / "gumbel.yaml"
    gumbel_cfg.write_text(yaml.safe_dump(taming_config(TINY_VQGAN_DDCONFIG, 64, 8, kind="gumbel")))
    with pytest.raises(VqclipError, match="quantize.embed.weight"):  # VQ checkpoint, Gumbel config
        load_vqgan(gumbel_cfg, ckpt)


def test_config_reading_and_its_errors(tmp_path):
    good = taming_config(TINY_VQGAN_DDCONFIG, 64, 8, kind="gumbel")
    cfg = parse_taming_config(good)
    assert cfg == VQGANConfig(dict(TINY_VQGAN_DDCONFIG), 64, 8, "gumbel")
    path = tmp_path / "c.yaml"
    cases = [
        ({"nothing": 1}, "no `model` section"),
        ({"model": {"target": "taming.models.vqgan.VQModel"}}, "no `model.params`"),
        ({"model": {"target": "x.VQModel", "params": {"ddconfig": {}, "n_embed": 4}}}, "lacks embed_dim"),
        ({"model": {"target": "x.VQModel", "params": {"ddconfig": {"ch": 1}, "n_embed": 4, "embed_dim": 2}}},
         "ddconfig` lacks z_channels"),
        ({"model": dict(good["model"], target="taming.models.vqgan.EMAVQ")}, "VQModel, GumbelVQ"),
    ]
    for cfg, message in cases:
        path.write_text(yaml.safe_dump(cfg))
        with pytest.raises(VqclipError, match=message) as e:
            read_taming_config(path)
        assert str(e.value).startswith("--vqgan-config:") and str(path) in str(e.value)
    path.write_text("model: [unclosed")
    with pytest.raises(VqclipError, match="YAML"):
        read_taming_config(path)
    with pytest.raises(VqclipError, match="not found"):
        read_taming_config(tmp_path / "absent.yaml")


def test_conversion_round_trip_is_exact_and_compact(tmp_path):
    original = make_vqgan(kind="gumbel", seed=7)
    config, ckpt = write_taming_files(tmp_path, original, kind="gumbel")
    out = convert_checkpoint(config, ckpt, tmp_path / "out" / "tiny.safetensors", name="tiny")
    converted = load_vqgan(None, out)  # no config: it travels inside the file
    from_ckpt = load_vqgan(config, ckpt)
    z = from_ckpt.encode(torch.rand(2, 3, 32, 32))
    assert torch.equal(converted.decode(z), from_ckpt.decode(z))
    assert torch.equal(converted.encode(torch.ones(1, 3, 32, 32)), from_ckpt.encode(torch.ones(1, 3, 32, 32)))
    keys = set(read_checkpoint(out))
    assert keys == set(original.state_dict()) and not any(k.startswith("loss.") for k in keys)
    meta = safetensors_metadata(out)
    assert meta["format"] == "vqclip.vqgan" and meta["name"] == "tiny" and len(meta["source_sha256"]) == 64
    assert converted.origin["name"] == "tiny" and converted.origin["source_sha256"] == meta["source_sha256"]
    assert [p.name for p in out.parent.iterdir()] == ["tiny.safetensors"]  # no temporary left behind


def test_failed_conversion_leaves_nothing(tmp_path):
    config, ckpt = write_taming_files(tmp_path, make_vqgan())
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(VqclipError):
        convert_checkpoint(config, ckpt, tmp_path / "out" / "x.safetensors")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_a_registered_name_holds_only_the_registered_model(tmp_path):
    """`models convert --name vqgan_imagenet_f16_16384` with another model is refused before anything is written."""
    from vqclip.models.registry import convert_named

    config, ckpt = write_taming_files(tmp_path, make_vqgan())
    out = tmp_path / "out" / "x.safetensors"
    with pytest.raises(VqclipError, match="a registered name holds only the registered model") as e:
        convert_named(config, ckpt, out, "vqgan_imagenet_f16_16384")
    assert str(e.value).startswith("--name:") and not out.exists()
    assert convert_named(config, ckpt, out, "my_vqgan") == out and load_vqgan(None, out).origin["name"] == "my_vqgan"


@pytest.mark.parametrize("name", ["vqgan_imagenet_f16_16384", "vqgan_imagenet_f16_1024", "vqgan_gumbel_f8_8192",
                                  "wikiart_16384"])
def test_real_checkpoint_reconstructs_an_image(name):
    """Real weights from $VQCLIP_WEIGHTS_CACHE (default ~/.cache/vqclip); skipped when they are not there."""
    import os
    from pathlib import Path

    from vqclip.models.registry import VQGAN_ASSETS, cache_status, resolve_vqgan

    cache = Path(os.environ.get("VQCLIP_WEIGHTS_CACHE", "~/.cache/vqclip")).expanduser()
    asset = VQGAN_ASSETS[name]
    if cache_status(asset, cache) not in ("converted", "downloaded (not converted)"):
        pytest.skip(f"{name} is not in {cache} (vqclip models download {name})")
    model = resolve_vqgan(name, cache_dir=cache, download=False)
    assert (model.kind, model.factor, model.n_embed) == (asset.kind, asset.factor, asset.n_embed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 128), indexing="ij")
    image = torch.stack([xx, yy, (xx + yy) / 2])[None]  # (1, 3, 128, 128) smooth gradient
    with torch.no_grad():
        out = model.decode(model.encode(image))
    assert out.shape == image.shape
    assert (out.clamp(0, 1) - image).abs().mean() < 0.1
