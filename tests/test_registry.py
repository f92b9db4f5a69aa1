"""Registry, cache and downloads: verified before use, resumable, never a half-written file under its final name."""

from __future__ import annotations

import io
import re
import urllib.error
from dataclasses import replace
from types import MappingProxyType

import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.models import registry
from vqclip.downloads import download_file, NO_HASH, RemoteFile, verify_file
from vqclip.models.registry import (asset_dir, cache_status, converted_path, DEFAULT_VQGAN, ensure_converted,
                                    fetch_asset, get_asset, resolve_vqgan, VQGAN_ASSETS)
from vqclip.models.tiny import make_file_asset


@pytest.fixture()
def fake_registry(tmp_path, monkeypatch):
    """Replace the registry table by tiny models served from file:// URLs."""
    vq, vq_model = make_file_asset(tmp_path / "server", "tiny_vq", "vq")
    gumbel, gumbel_model = make_file_asset(tmp_path / "server", "tiny_gumbel", "gumbel", with_hash=False, seed=1)
    monkeypatch.setattr(registry, "VQGAN_ASSETS", MappingProxyType({"tiny_vq": vq, "tiny_gumbel": gumbel}))
    return {"tiny_vq": (vq, vq_model), "tiny_gumbel": (gumbel, gumbel_model)}


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name != ".lock") if folder.exists() else []


def test_the_real_table_has_the_published_models():
    assert {"vqgan_imagenet_f16_1024", "vqgan_imagenet_f16_16384", "vqgan_gumbel_f8_8192", "wikiart_16384"} \
        <= set(VQGAN_ASSETS)
    assert DEFAULT_VQGAN == "vqgan_imagenet_f16_16384"
    assert VQGAN_ASSETS["vqgan_gumbel_f8_8192"].kind == "gumbel" and VQGAN_ASSETS["vqgan_gumbel_f8_8192"].factor == 8
    for asset in VQGAN_ASSETS.values():
        for remote in (asset.config, asset.checkpoint):
            assert remote.urls and all(re.match(r"https?://", u) for u in remote.urls)
            assert remote.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", remote.sha256)
        assert asset.checkpoint.approx_size and asset.checkpoint.approx_size > 100_000_000
        if asset.checkpoint.sha256 is None:
            assert asset.checkpoint.verification() == NO_HASH


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(VqclipError) as e:
        get_asset("vqgan_imagenet_f16_16385")
    msg = str(e.value)
    assert msg.startswith("--vqgan:") and "vqgan_imagenet_f16_16385" in msg
    assert all(name in msg for name in VQGAN_ASSETS) and "Did you mean vqgan_imagenet_f16_16384" in msg


def test_download_from_file_url_verifies_and_renames(fake_registry, tmp_path):
    asset, _ = fake_registry["tiny_vq"]
    dest = tmp_path / "dl" / "x.ckpt"
    assert download_file(asset.checkpoint, dest, progress=False) == dest
    assert dest.read_bytes() == (tmp_path / "server" / "tiny_vq.ckpt").read_bytes()
    assert _files(dest.parent) == ["x.ckpt"]


def test_corrupt_payload_fails_the_hash_and_leaves_nothing(fake_registry, tmp_path):
    asset, _ = fake_registry["tiny_vq"]
    served = tmp_path / "server" / "tiny_vq.ckpt"
    data = bytearray(served.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    served.write_bytes(bytes(data))
    dest = tmp_path / "dl" / "x.ckpt"
    with pytest.raises(VqclipError, match="fails the sha256 check") as e:
        download_file(asset.checkpoint, dest, progress=False)
    assert str(dest) in str(e.value)  # says where a good copy should go
    assert _files(dest.parent) == []  # neither the file nor a .part


def test_first_mirror_down_second_used(fake_registry, tmp_path):
    asset, _ = fake_registry["tiny_vq"]
    remote = replace(asset.checkpoint, urls=("file:///nonexistent/tiny_vq.ckpt",) + asset.checkpoint.urls)
    dest = download_file(remote, tmp_path / "dl" / "x.ckpt", progress=False)
    assert dest.stat().st_size == asset.checkpoint.size


def test_file_far_below_the_approximate_size_is_rejected(tmp_path):
    page = tmp_path / "page.html"
    page.write_text("<html>quota exceeded</html>")
    remote = RemoteFile("big.ckpt", (page.as_uri(),), approx_size=10_000)
    with pytest.raises(VqclipError, match="far smaller"):
        download_file(remote, tmp_path / "dl" / "big.ckpt", progress=False)
    assert _files(tmp_path / "dl") == []


class _RangeServer:
    """A stub transport that honours Range requests and can cut the connection after `cut` bytes."""

    def __init__(self, payload: bytes, cut: int | None = None):
        self.payload, self.cut, self.ranges = payload, cut, []

    def __call__(self, request, timeout=None):
        header = request.get_header("Range")
        self.ranges.append(header)
        start = int(header.split("=")[1].rstrip("-")) if header else 0
        body = self.payload[start:]
        announced = len(body)
        if self.cut is not None:
            body, self.cut = body[: self.cut], None
        response = io.BytesIO(body)
        response.status = 206 if header else 200
        response.headers = {"Content-Length": str(announced)}
        return response


def test_interrupted_download_is_kept_as_part_and_resumed(tmp_path):
    payload = bytes(range(256)) * 40
    import hashlib

    remote = RemoteFile("w.ckpt", ("http://mirror.invalid/w.ckpt",), sha256=hashlib.sha256(payload).hexdigest(),
                        size=len(payload))
    server = _RangeServer(payload, cut=3000)
    dest = tmp_path / "dl" / "w.ckpt"
    with pytest.raises(VqclipError, match="partial download") as e:
        download_file(remote, dest, progress=False, opener=server)
    assert "resumed" in str(e.value) and not dest.exists()
    assert (tmp_path / "dl" / "w.ckpt.part").stat().st_size == 3000
    download_file(remote, dest, progress=False, opener=server)
    assert server.ranges == [None, "bytes=3000-"]
    assert dest.read_bytes() == payload and _files(dest.parent) == ["w.ckpt"]


def test_offline_error_names_the_files_urls_and_paths(fake_registry, tmp_path):
    def offline(request, timeout=None):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(VqclipError) as e:
        fetch_asset("tiny_vq", tmp_path / "c", opener=offline, progress=False)
    msg = str(e.value)
    asset, _ = fake_registry["tiny_vq"]
    folder = asset_dir("tiny_vq", tmp_path / "c")
    assert "name resolution" in msg and asset.config.urls[0] in msg and asset.checkpoint.urls[0] in msg
    assert str(folder / "tiny_vq.yaml") in msg and str(folder / "tiny_vq.ckpt") in msg
    with pytest.raises(VqclipError, match="downloads are off") as e:
        fetch_asset("tiny_vq", tmp_path / "c", download=False)
    assert str(folder / "tiny_vq.yaml") in str(e.value)


@pytest.mark.parametrize("name", ["tiny_vq", "tiny_gumbel"])
def test_resolve_by_name_downloads_converts_then_uses_the_conversion(fake_registry, tmp_path, name):
    asset, original = fake_registry[name]
    model = resolve_vqgan(name, progress=False)  # cache from $VQCLIP_CACHE (conftest)
    z = torch.randn(1, 8, 3, 5)
    assert model.kind == asset.kind and torch.equal(model.decode(z), original.decode(z))
    assert model.origin["name"] == name
    assert cache_status(asset) == "converted"
    for p in asset_dir(name).iterdir():  # the converted file alone is enough from now on
        if p != converted_path(name):
            p.unlink()
    for remote in (asset.config, asset.checkpoint):
        (tmp_path / "server" / remote.filename).unlink()
    again = resolve_vqgan(name, download=False)
    assert torch.equal(again.decode(z), original.decode(z))


def test_cache_dir_argument_overrides_the_environment(fake_registry, tmp_path):
    ensure_converted("tiny_vq", tmp_path / "elsewhere", progress=False)
    assert converted_path("tiny_vq", tmp_path / "elsewhere").is_file()
    assert cache_status(fake_registry["tiny_vq"][0]) == "not cached"  # $VQCLIP_CACHE untouched


def test_files_copied_in_by_hand_are_verified_and_used_offline(fake_registry, tmp_path):
    asset, original = fake_registry["tiny_vq"]
    folder = asset_dir("tiny_vq")
    folder.mkdir(parents=True)
    (folder / "tiny_vq.yaml").write_bytes((tmp_path / "server" / "tiny_vq.yaml").read_bytes())
    (folder / "tiny_vq.ckpt").write_bytes((tmp_path / "server" / "tiny_vq.ckpt").read_bytes()[:-10])
    assert cache_status(asset) == "downloaded (not converted)"
    with pytest.raises(VqclipError, match="wrong size") as e:
        resolve_vqgan("tiny_vq", download=False)
    assert "Delete" in str(e.value) and not converted_path("tiny_vq").exists()
    (folder / "tiny_vq.ckpt").write_bytes((tmp_path / "server" / "tiny_vq.ckpt").read_bytes())
    model = resolve_vqgan("tiny_vq", download=False)
    assert torch.equal(model.codebook, original.codebook)


def test_a_config_for_another_model_is_refused(fake_registry, tmp_path):
    vq, _ = fake_registry["tiny_vq"]
    gumbel, _ = fake_registry["tiny_gumbel"]
    swapped = replace(vq, config=replace(gumbel.config, filename=vq.config.filename))
    registry_table = dict(registry.VQGAN_ASSETS, tiny_vq=swapped)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(registry, "VQGAN_ASSETS", MappingProxyType(registry_table))
        with pytest.raises(VqclipError, match="does not describe tiny_vq"):
            fetch_asset("tiny_vq", progress=False)


def test_explicit_files_load_offline_and_beat_the_name(fake_registry, tmp_path):
    _, original = fake_registry["tiny_vq"]
    model = resolve_vqgan("no_such_name", config=tmp_path / "server" / "tiny_vq.yaml",
                          checkpoint=tmp_path / "server" / "tiny_vq.ckpt", download=False)
    assert torch.equal(model.codebook, original.codebook)
    with pytest.raises(VqclipError, match="--vqgan-config"):
        resolve_vqgan(config=tmp_path / "server" / "tiny_vq.yaml")


def test_unwritable_cache_is_a_clear_error(fake_registry, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(VqclipError, match="--cache-dir") as e:
        resolve_vqgan("tiny_vq", cache_dir=blocker / "cache", progress=False)
    assert str(blocker / "cache") in str(e.value)


def test_verify_file_checks_exact_size(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"12345")
    verify_file(f, RemoteFile("f.bin", ("x",), size=5))
    with pytest.raises(VqclipError, match="wrong size"):
        verify_file(f, RemoteFile("f.bin", ("x",), size=6))


def test_damaged_conversion_in_the_cache_says_how_to_rebuild(fake_registry):
    path = ensure_converted("tiny_vq", progress=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(VqclipError, match="Delete that file and run again") as e:
        resolve_vqgan("tiny_vq", download=False)
    # the user may never have passed --vqgan (it has a default): the message names the cached file instead
    assert not str(e.value).startswith("--vqgan") and str(path) in str(e.value)
    path.unlink()
    assert resolve_vqgan("tiny_vq", download=False).n_embed == 64  # rebuilt from the kept original
