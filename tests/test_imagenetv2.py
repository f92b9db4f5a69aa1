"""The default training set: ImageNetV2 matched-frequency fetched, verified and extracted safely (local fakes only)."""

from __future__ import annotations

import io
import json
import random
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from vqclip.errors import VqclipError
from vqclip.io import sha256_file
from vqclip.spelling import sources
from vqclip.spelling.images import IMAGENET_ALTERNATIVES, imagenet_class_names, readable_class_name, unique_class_names
from vqclip.spelling.sources import EXTRACTED, fetch_imagenetv2, member_problem, open_images

TOP = "imagenetv2-matched-frequency-format-val"


def jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), tuple(rng.randrange(256) for _ in range(3))).save(buf, "JPEG")
    return buf.getvalue()


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_tarball(path: Path, classes=(0, 1, 2), per_class: int = 4, extra=None) -> Path:
    """A small ImageNetV2-shaped tar.gz: TOP/<class index>/<hash>.jpeg; `extra(tar)` adds odd members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for c in classes:
            for i in range(per_class):
                add_file(tar, f"{TOP}/{c}/{c:03d}{i:02d}.jpeg", jpeg(c * 100 + i))
        if extra:
            extra(tar)
    return path


@pytest.fixture()
def served(tmp_path, monkeypatch):
    """Point the registry entry at a local file:// tarball; returns its path (rewrite it to change what is served)."""
    path = make_tarball(tmp_path / "server" / "imagenetv2-matched-frequency.tar.gz")
    monkeypatch.setattr(sources, "IMAGENETV2", replace(sources.IMAGENETV2, urls=(path.as_uri(),), approx_size=None))
    return path


def folder_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) \
        if folder.exists() else []


def test_class_names_are_open_clips_made_unique():
    import open_clip

    names = imagenet_class_names()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert len({readable_class_name(n) for n in names}) == 1000  # still unique as prompts are written
    changed = {i for i, (a, b) in enumerate(zip(open_clip.IMAGENET_CLASSNAMES, names)) if a != b}
    assert changed == set(IMAGENET_ALTERNATIVES) == {744, 836}
    assert names[657] == "missile" and names[744] == "projectile"
    assert names[837] == "sunglasses" and names[836] == "sunglass"
    assert names[:2] == ["tench", "goldfish"]


def test_unique_names_number_repeats_without_an_alternative():
    assert unique_class_names(["cat", "dog", "cat", "cat"]) == ["cat", "dog", "cat (2)", "cat (3)"]


def test_download_records_the_hash_extracts_and_removes_the_tarball(served, tmp_path):
    root = tmp_path / "data"
    extracted = fetch_imagenetv2(root, progress=False)
    assert extracted == root / "imagenetv2" / EXTRACTED
    record = json.loads((extracted / "source.json").read_text())
    assert record["sha256"] == sha256_file(served) and record["size"] == served.stat().st_size
    assert record["downloaded_by_vqclip"] is True and record["root"] == TOP
    assert not (root / "imagenetv2" / "imagenetv2-matched-frequency.tar.gz").exists()
    assert len(folder_files(extracted / TOP)) == 12
    source = open_images("imagenetv2", data_root=root)
    assert sorted(source.classes) == ["goldfish", "great white shark", "tench"]
    assert len(source) == 12 and source.description["sha256"] == record["sha256"]
    served.unlink()  # a second call uses the extracted folder, fetching nothing
    assert fetch_imagenetv2(root, progress=False) == extracted


def test_a_tarball_put_there_by_hand_is_used_and_kept(served, tmp_path):
    folder = tmp_path / "data" / "imagenetv2"
    folder.mkdir(parents=True)
    mine = folder / "imagenetv2-matched-frequency.tar.gz"
    mine.write_bytes(served.read_bytes())
    served.unlink()  # nothing to download from
    extracted = fetch_imagenetv2(tmp_path / "data", progress=False, download=False)
    assert mine.is_file()  # not written by vqclip: never deleted
    assert json.loads((extracted / "source.json").read_text())["downloaded_by_vqclip"] is False


def traversal(tar):
    add_file(tar, f"{TOP}/../../evil.txt", b"escaped")


def symlink(tar):
    info = tarfile.TarInfo(f"{TOP}/0/link.jpeg")
    info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
    tar.addfile(info)


def hardlink(tar):
    info = tarfile.TarInfo(f"{TOP}/1/hard.jpeg")
    info.type, info.linkname = tarfile.LNKTYPE, f"{TOP}/0/00000.jpeg"
    tar.addfile(info)


def absolute(tar):
    add_file(tar, "/tmp/vqclip-absolute-member.txt", b"escaped")


@pytest.mark.parametrize("extra,why", [(traversal, "climbs out"), (symlink, "symbolic link"),
                                       (hardlink, "hard link"), (absolute, "absolute path")])
def test_unsafe_members_refuse_the_whole_archive(served, tmp_path, extra, why):
    make_tarball(served, extra=extra)
    root = tmp_path / "data"
    with pytest.raises(VqclipError) as e:
        fetch_imagenetv2(root, progress=False)
    msg = str(e.value)
    assert why in msg and "nothing was extracted" in msg and "Delete" in msg and "\n" not in msg
    folder = root / "imagenetv2"
    assert not (folder / EXTRACTED).exists() and not list(folder.glob(".extract-*"))
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()
    assert not Path("/tmp/vqclip-absolute-member.txt").exists()
    assert (folder / "imagenetv2-matched-frequency.tar.gz").is_file()  # kept for the user to inspect or delete


def test_member_rules_accept_plain_files_and_folders():
    folder, plain = tarfile.TarInfo("a/0"), tarfile.TarInfo("a/0/x.jpeg")
    folder.type = tarfile.DIRTYPE
    assert member_problem(folder) is None and member_problem(plain) is None
    fifo = tarfile.TarInfo("a/fifo")
    fifo.type = tarfile.FIFOTYPE
    assert "special" in member_problem(fifo)


class CutResponse:
    """An HTTP response that announces the whole file and closes the connection halfway."""

    def __init__(self, data: bytes):
        self.status, self.headers, self._body = 200, {"Content-Length": str(len(data))}, io.BytesIO(data[:len(data) // 2])

    def read(self, n=-1):
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_truncated_download_is_kept_as_part_and_nothing_is_extracted(served, tmp_path):
    data = served.read_bytes()
    root = tmp_path / "data"
    with pytest.raises(VqclipError) as e:
        fetch_imagenetv2(root, progress=False, opener=lambda request, timeout: CutResponse(data))
    assert "will be resumed" in str(e.value)
    folder = root / "imagenetv2"
    assert folder_files(folder) == [".lock", "imagenetv2-matched-frequency.tar.gz.part"]
    # the next run resumes with a Range request and completes
    extracted = fetch_imagenetv2(root, progress=False)
    assert json.loads((extracted / "source.json").read_text())["sha256"] == sha256_file(served)


def test_a_corrupt_archive_extracts_nothing(served, tmp_path):
    folder = tmp_path / "data" / "imagenetv2"
    folder.mkdir(parents=True)
    (folder / "imagenetv2-matched-frequency.tar.gz").write_bytes(served.read_bytes()[:len(served.read_bytes()) // 2])
    with pytest.raises(VqclipError, match="truncated or corrupt.*nothing was extracted"):
        fetch_imagenetv2(tmp_path / "data", progress=False, download=False)
    assert not (folder / EXTRACTED).exists() and not list(folder.glob(".extract-*"))


def test_an_archive_that_is_not_imagenetv2_is_not_kept_extracted(served, tmp_path):
    with tarfile.open(served, "w:gz") as tar:
        add_file(tar, "photos/cats/a.jpeg", jpeg(0))
        add_file(tar, "photos/dogs/b.jpeg", jpeg(1))
    with pytest.raises(VqclipError, match="numbered 0..999.*cats"):
        fetch_imagenetv2(tmp_path / "data", progress=False)
    assert not (tmp_path / "data" / "imagenetv2" / EXTRACTED).exists()


def test_a_half_extracted_folder_from_elsewhere_is_never_deleted(served, tmp_path):
    extracted = tmp_path / "data" / "imagenetv2" / EXTRACTED
    (extracted / "0").mkdir(parents=True)
    (extracted / "0" / "mine.jpeg").write_bytes(jpeg(0))
    with pytest.raises(VqclipError, match="without the source.json"):
        fetch_imagenetv2(tmp_path / "data", progress=False)
    assert (extracted / "0" / "mine.jpeg").is_file()


def test_class_map_with_imagenetv2_is_refused(tmp_path):
    with pytest.raises(VqclipError, match="--class-map: ImageNetV2 brings its own class names"):
        open_images("imagenetv2", class_map=str(tmp_path / "map.json"), data_root=tmp_path)


def test_an_uncompressed_archive_cut_between_members_is_detected(tmp_path):
    """tarfile itself stops quietly at a header cut short; the missing end-of-archive marker gives it away."""
    from vqclip.spelling.sources import extract_tarball

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(3):
            add_file(tar, f"{TOP}/0/{i}.jpeg", b"x" * 600)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(buf.getvalue()[:3 * 1024 + 100])  # two whole members, then part of the third header
    with pytest.raises(VqclipError, match="without its end-of-archive marker"):
        extract_tarball(cut, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".extract-*"))
    whole = tmp_path / "whole.tar"
    whole.write_bytes(buf.getvalue())
    assert len(folder_files(extract_tarball(whole, tmp_path / "out", progress=False))) == 3


def test_train_without_images_uses_imagenetv2(served, tiny_clip_id, capsys):
    import torch

    from vqclip.cli import main
    from vqclip.models.clip import clip_identity
    from vqclip.projections import load_projection, projection_path

    torch.set_num_threads(1)
    assert main(["train", "--space", "forget", "--clip", tiny_clip_id, "--words", "8", "--workers", "0",
                 "--epochs", "1", "--batch-size", "4", "--class-renders", "1"]) == 0
    assert "no --images, so the default training set: it first downloads ImageNetV2 matched-frequency" \
        in capsys.readouterr().err
    meta = load_projection(projection_path("forget", clip_identity(tiny_clip_id, None))).metadata
    recipe = json.loads(meta["data_recipe"])
    assert recipe["images"].startswith(f"folder:{TOP}#") and recipe["classes"] == 3


def test_train_refuses_a_mistyped_clip_before_downloading(served, tmp_path, capsys):
    from vqclip.cli import main

    assert main(["train", "--space", "forget", "--clip", "ViT-L-15", "--pretrained", "openai"]) == 2
    assert "--clip: not a model name open_clip knows; got 'ViT-L-15'" in capsys.readouterr().err
    assert not (tmp_path / "cache" / "datasets").exists()  # nothing fetched or extracted


@pytest.mark.parametrize("cache_there", [False, True])
def test_a_failed_fetch_leaves_no_empty_datasets_folder(tmp_path, cache_there):
    """Issue 25 item 5: offline, the first `vqclip train` without --images left an empty datasets/ in the cache."""
    cache = tmp_path / "cache"
    if cache_there:
        cache.mkdir()

    def offline(*a, **k):
        raise OSError(-2, "Name or service not known")

    with pytest.raises(VqclipError, match="could not download"):
        fetch_imagenetv2(cache=cache, opener=offline, progress=False)
    assert not (cache / "datasets").exists() and cache.exists() == cache_there
