"""The feature cache is keyed by everything that changes the numbers, the CLIP's precision included (issue 15,
fix 4): bf16 GPU features and fp32 CPU features are never reused for each other."""

import copy
import json

import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.spelling.dataset import DataConfig, build_dataset
from vqclip.spelling.features import extract_features, load_features
from vqclip.spelling.images import image_folder

from test_spelling_data import make_image_folder


@pytest.fixture()
def dataset(tmp_path, tiny_clip):
    root = make_image_folder(tmp_path / "imgs", per_class=2)
    return build_dataset(image_folder(root), tiny_clip.input_size, config=DataConfig(words=6, class_renders=1))


def test_features_of_another_precision_are_extracted_anew_not_reused(dataset, tiny_clip, one_thread):
    half = copy.copy(tiny_clip)
    half.precision = "bf16"  # autocast runs on the CPU too, so the numbers really differ
    events = []
    fp32 = extract_features(tiny_clip, dataset, batch_size=4, shard_size=4, progress=False)
    bf16 = extract_features(half, dataset, batch_size=4, shard_size=4, progress=False, callback=events.append)
    assert bf16 != fp32 and events, "bf16 features were taken from the fp32 cache"
    a, b = load_features(fp32), load_features(bf16)
    assert a.metadata["clip_precision"] == "fp32" and b.metadata["clip_precision"] == "bf16"
    assert not torch.equal(a.x_i, b.x_i)  # they are not the same numbers, so they must not share a key
    events.clear()
    assert extract_features(tiny_clip, dataset, batch_size=4, shard_size=4, progress=False,
                            callback=events.append) == fp32 and events == []  # each precision reuses its own


def test_a_feature_folder_of_another_precision_is_refused_when_writing_into_it(dataset, tiny_clip, tmp_path,
                                                                              one_thread):
    folder = extract_features(tiny_clip, dataset, out=tmp_path / "feats", batch_size=4, shard_size=4,
                              progress=False)
    half = copy.copy(tiny_clip)
    half.precision = "bf16"
    with pytest.raises(VqclipError, match="fp32") as e:
        extract_features(half, dataset, out=folder, progress=False)
    assert "bf16" in str(e.value) and str(folder) in str(e.value)
    assert json.loads((folder / "meta.json").read_text())["clip_precision"] == "fp32"  # left as it was
