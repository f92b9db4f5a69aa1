"""The text direction ("textoff", issue 27): computed from five-tuple features, written, read back, refused for
another CLIP, and read from pixray's published vector tables."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from vqclip.errors import VqclipError
from vqclip.projections.direction import PIXRAY_NAMES, direction_path, load_direction, resolve_direction
from vqclip.spelling.direction import direction_agreement, text_direction, write_direction
from vqclip.spelling.featureset import SpellingFeatures

D = 32


def features_with_writing(text: torch.Tensor, n: int = 64, strength: float = 0.6, seed: int = 0) -> SpellingFeatures:
    """Tuples whose x_it is x_i moved along `text` (plus noise): the direction to recover is `text`."""
    g = torch.Generator().manual_seed(seed)
    x_i = F.normalize(torch.randn(n, D, generator=g), dim=-1)
    noise = 0.3 * torch.randn(n, D, generator=g)
    x_it = F.normalize(x_i + strength * text + noise / D ** 0.5, dim=-1)
    words = F.normalize(torch.randn(n, D, generator=g), dim=-1)
    split = torch.tensor([0] * (n // 2) + [1] * (n // 4) + [2] * (n - n // 2 - n // 4))
    return SpellingFeatures(x_i=x_i, x_t=words, x_it=x_it, y_t=words, class_ids=torch.zeros(n, dtype=torch.long),
                            class_features=x_i[:1], word_ids=torch.arange(n), is_real=torch.ones(n, dtype=torch.bool),
                            split=split)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_direction_recovers_where_writing_moves_an_image(seed):
    text = F.normalize(torch.randn(D, generator=torch.Generator().manual_seed(100 + seed)), dim=0)
    features = features_with_writing(text, seed=seed)
    d = text_direction(features)
    assert d.shape == (D,) and abs(float(d.norm()) - 1) < 1e-5
    assert float(d @ text) > 0.95  # and not toward natural images: the sign matters
    held_out = direction_agreement(features, d)
    assert held_out["split"] == "test" and held_out["share_written_further"] == 1.0 and held_out["mean_shift"] > 0.2


def test_a_written_direction_loads_for_its_clip_and_is_refused_for_another(tmp_path):
    d = F.normalize(torch.randn(D), dim=0)
    path = write_direction(d, "tiny/one", cache=tmp_path, record={"n_tuples": 12})
    assert path == direction_path("tiny/one", tmp_path) and path.name == "textoff.safetensors"
    loaded = load_direction(path, "tiny/one", D)
    assert torch.allclose(loaded.vector, d, atol=1e-6) and loaded.describe()["n_tuples"] == "12"
    with pytest.raises(VqclipError, match="computed for CLIP 'tiny/one', not for the CLIP in use") as e:
        load_direction(path, "ViT-B-32/openai", D)
    assert str(e.value).startswith("--textoff:") and "vqclip train --direction textoff" in str(e.value)
    with pytest.raises(VqclipError, match="32 values, the CLIP embedding size is 64"):
        load_direction(path, "tiny/one", 64)


def test_a_projection_or_a_broken_file_is_not_taken_for_a_direction(tmp_path):
    from vqclip.projections import save_projection

    proj = save_projection(tmp_path / "forget.safetensors", torch.linalg.qr(torch.randn(D, 4))[0].T, "forget",
                           "tiny/one")
    with pytest.raises(VqclipError, match="not a vqclip text direction"):
        load_direction(proj, "tiny/one", D)
    (tmp_path / "cut.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(VqclipError, match="not a readable text-direction file"):
        load_direction(tmp_path / "cut.safetensors", "tiny/one", D)
    from safetensors.torch import save_file

    zero = tmp_path / "z.safetensors"
    save_file({"d": torch.zeros(D)}, str(zero), metadata={"format": "vqclip.direction/1", "clip_model": "tiny/one"})
    with pytest.raises(VqclipError, match="finite and non-zero"):
        load_direction(zero, "tiny/one", D)


def test_pixrays_table_is_read_for_the_clip_it_names_and_negated(tmp_path):
    away = F.normalize(torch.randn(512), dim=0)  # pixray's vector points away from text: it pulls toward it
    table = tmp_path / "textoff.json"
    table.write_text(json.dumps({"RN50": [[0.0] * 1024], "ViT-B/32": [away.tolist()]}))
    assert PIXRAY_NAMES["ViT-B-32/openai"] == "ViT-B/32"
    loaded = load_direction(table, "ViT-B-32/openai", 512)
    assert torch.allclose(loaded.vector, -away, atol=1e-6) and loaded.describe()["pixray_key"] == "ViT-B/32"
    with pytest.raises(VqclipError, match="no vector for CLIP 'ViT-B-16/openai'"):
        load_direction(table, "ViT-B-16/openai", 512)
    with pytest.raises(VqclipError, match="OpenAI's CLIPs only"):
        load_direction(table, "tiny/one", 512)


def test_without_a_file_the_cached_one_is_used_or_the_error_says_how_to_make_it(tmp_path):
    with pytest.raises(VqclipError, match="no text direction for CLIP 'tiny/one' in the cache") as e:
        resolve_direction(None, "tiny/one", D, cache=tmp_path)
    assert "vqclip train --direction textoff --clip tiny --pretrained one" in str(e.value)
    d = F.normalize(torch.randn(D), dim=0)
    write_direction(d, "tiny/one", cache=tmp_path)
    assert torch.allclose(resolve_direction(None, "tiny/one", D, cache=tmp_path).vector, d, atol=1e-6)
