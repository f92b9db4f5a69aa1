"""Natural-image sources, the tuple plan, and the feature cache (round trip, resume, wrong CLIP)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from vqclip.errors import VqclipError
from vqclip.spelling.dataset import DataConfig, build_dataset, class_prompt
from vqclip.spelling.features import extract_features, load_features
from vqclip.spelling.images import image_folder, load_class_map, torchvision_dataset
from vqclip.spelling.sources import open_images

COLORS = {"apple": (200, 30, 30), "banana": (230, 220, 40), "grape": (100, 30, 140), "orange": (240, 140, 20)}


def make_image_folder(root: Path, per_class: int = 6, classes=("apple", "banana", "grape"), seed: int = 0) -> Path:
    """Coloured shapes on random backgrounds, one sub-folder per class."""
    rng = random.Random(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            im = Image.new("RGB", (48, 40), tuple(rng.randrange(256) for _ in range(3)))
            x = rng.randrange(20)
            ImageDraw.Draw(im).ellipse((x, 5, x + 25, 30), fill=COLORS[c])
            im.save(root / c / f"{i}.jpg")
    return root


def test_image_folder_classes_and_bad_files(tmp_path):
    root = make_image_folder(tmp_path / "imgs")
    (root / "apple" / "broken.jpg").write_bytes(b"not an image")
    (root / "empty_class").mkdir()
    src = image_folder(root)
    assert src.classes == ["apple", "banana", "grape"]  # empty folders are not classes
    assert len(src) == 19 and src.class_ids.count(0) == 7
    loaded = [src.load(i) for i in range(len(src))]
    assert sum(im is None for im in loaded) == 1  # the broken file is skipped, not fatal
    assert all(im.mode == "RGB" for im in loaded if im is not None)
    assert src.name.startswith("folder:imgs#")


def test_class_map_and_underscores(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=1)
    (root / "apple").rename(root / "n07742313")
    (root / "banana").rename(root / "golden_banana")
    (tmp_path / "map.txt").write_text("n07742313 Granny Smith, apple\n")
    src = image_folder(root, tmp_path / "map.txt")
    assert src.classes == ["golden banana", "grape", "granny smith"]
    (tmp_path / "map.json").write_text(json.dumps({"n07742313": "green apple"}))
    assert "green apple" in image_folder(root, tmp_path / "map.json").classes
    assert load_class_map(tmp_path / "map.txt") == {"n07742313": "Granny Smith"}
    assert class_prompt("apple") == "an image of an apple" and class_prompt("grape") == "an image of a grape"


def test_bad_image_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VqclipError, match="--images"):
        image_folder(tmp_path / "empty")
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "loose.jpg")
    with pytest.raises(VqclipError, match="sub-folder per class"):
        image_folder(tmp_path / "empty")
    with pytest.raises(VqclipError, match="--images"):
        open_images(str(tmp_path / "missing_folder"))
    with pytest.raises(VqclipError, match="cifar100"):
        open_images("not_a_dataset")
    with pytest.raises(VqclipError, match="image-net.org"):
        open_images("imagenet")
    one = make_image_folder(tmp_path / "one", classes=("apple",))
    with pytest.raises(VqclipError, match="at least 2 classes"):
        build_dataset(image_folder(one), 32)


def test_torchvision_offline_error_is_clear(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class Offline:
        def __init__(self, root, download=False, **kw):
            raise RuntimeError("Dataset not found") if not download else OSError("[Errno -3] name resolution")

    monkeypatch.setattr(tvd, "CIFAR100", Offline)
    with pytest.raises(VqclipError, match="connected machine") as e:
        torchvision_dataset("cifar100", tmp_path)
    assert "cifar100" in str(e.value)
    with pytest.raises(VqclipError, match="no split"):
        torchvision_dataset("cifar100:bogus", tmp_path)


def test_dataset_plan_is_deterministic_with_disjoint_splits(tmp_path):
    src = image_folder(make_image_folder(tmp_path / "imgs", per_class=10))
    config = DataConfig(words=30, val_fraction=0.2, test_fraction=0.2, seed=3)
    a, b = build_dataset(src, 32, config=config), build_dataset(src, 32, config=config)
    assert a.key() == b.key() and a.word_ids == b.word_ids and a.split == b.split
    assert build_dataset(src, 32, config=DataConfig(words=30, seed=4)).key() != a.key()
    assert a.split_sizes() == {"train": 18, "val": 6, "test": 6}
    words_by_split = [{a.word_ids[i] for i in range(len(a)) if a.split[i] == s} for s in range(3)]
    assert not words_by_split[0] & words_by_split[1] and not words_by_split[0] & words_by_split[2]
    assert not set(a.words.words) & {"apple", "banana", "grape"}  # class names are not used as words
    x_i, x_t, x_it = a.render(0)
    assert x_i.size == x_t.size == x_it.size == (32, 32)
    again = b.render(0)
    assert all(p.tobytes() == q.tobytes() for p, q in zip((x_i, x_t, x_it), again))
    assert a.recipe()["style"]["font_files"] and "fonts" not in a.recipe()["style"]


def test_feature_cache_round_trip_resume_and_wrong_clip(tmp_path, tiny_clip, tiny_clip_id):
    root = make_image_folder(tmp_path / "imgs", per_class=5)
    (root / "banana" / "zz_broken.jpg").write_bytes(b"\x00" * 10)
    ds = build_dataset(image_folder(root), tiny_clip.input_size, config=DataConfig(words=12, class_renders=2))
    n = len(ds)  # 16 tuples -> 4 shards of 4

    # an interruption after the first shard leaves a valid, resumable cache
    def stop(event):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(tiny_clip, ds, batch_size=2, shard_size=4, progress=False, callback=stop)
    folder = next((Path(tmp_path) / "cache" / "features").glob("*/*"))
    assert sorted(p.name for p in folder.glob("shard-*")) == ["shard-00000.safetensors"]
    assert not list(folder.glob(".*part"))  # nothing half-written
    with pytest.raises(VqclipError, match="incomplete.*resume"):
        load_features(folder)

    events = []
    assert extract_features(tiny_clip, ds, batch_size=2, shard_size=4, progress=False,
                            callback=events.append) == folder
    assert [e["shard"] for e in events] == [1, 2, 3]  # only the missing shards were computed
    f = load_features(folder, tiny_clip.identity)
    assert len(f) == n - 1 and f.metadata["skipped_images"] == 1
    assert f.x_i.shape == (n - 1, tiny_clip.embed_dim)
    assert torch.allclose(f.x_i.norm(dim=-1), torch.ones(n - 1), atol=2e-3)
    assert f.words == ds.words.words and f.classes == ds.classes

    # the same features as an uninterrupted run, and as CLIP computes them directly
    whole = load_features(extract_features(tiny_clip, ds, out=tmp_path / "whole", batch_size=5, shard_size=7,
                                           progress=False))
    for k in ("x_i", "x_t", "x_it", "y_t"):
        assert torch.allclose(getattr(f, k), getattr(whole, k), atol=1e-6)
    from vqclip.spelling.dataset import to_uint8_tensor
    from vqclip.spelling.features import encode_images_uint8

    first = 1 if ds.source.load(ds.image_index[0]) is None else 0
    direct = encode_images_uint8(tiny_clip, to_uint8_tensor(ds.render(first)[1])[None])
    assert torch.allclose(f.x_t[0], direct[0], atol=2e-3)  # float16 storage
    assert torch.allclose(f.y_t[0], tiny_clip.encode_text([ds.words.words[ds.word_ids[first]]])[0], atol=2e-3)

    # re-running reuses everything
    events.clear()
    extract_features(tiny_clip, ds, batch_size=2, shard_size=4, progress=False, callback=events.append)
    assert events == []
    assert json.loads((folder / "words.json").read_text())["words"][0]["word"] == ds.words.words[0]

    # a cache written by another CLIP model
    with pytest.raises(VqclipError, match="extracted with CLIP"):
        load_features(folder, "ViT-B-32/openai")

    class Other:
        identity, embed_dim = "other-clip/x", tiny_clip.embed_dim

    with pytest.raises(VqclipError, match="features of CLIP"):
        extract_features(Other(), ds, out=folder, progress=False)
    assert len(load_features(folder)) == n - 1  # still valid
