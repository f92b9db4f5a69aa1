import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.models.clip import load_clip
from vqclip.models.tiny import TINY_PREPROCESS


def test_local_dir_model_reports_its_preprocessing(tiny_clip):
    assert tiny_clip.embed_dim == 32
    assert tiny_clip.input_size == (32, 32)
    assert tiny_clip.mean == pytest.approx(tuple(TINY_PREPROCESS["mean"]))
    assert tiny_clip.std == pytest.approx(tuple(TINY_PREPROCESS["std"]))
    assert tiny_clip.identity.startswith("local-dir:")


def test_encode_image_is_differentiable_and_normalised(tiny_clip):
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    e = tiny_clip.encode_image(x)
    assert e.shape == (3, 32)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    e[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_encode_image_uses_the_models_normalisation(tiny_clip):
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor(tiny_clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(tiny_clip.std).view(1, 3, 1, 1)
    expected = torch.nn.functional.normalize(tiny_clip.model.encode_image((x - mean) / std), dim=-1)
    assert torch.allclose(tiny_clip.encode_image(x), expected, atol=1e-6)


def test_encode_text_distinguishes_strings(tiny_clip):
    e = tiny_clip.encode_text(["apple", "banana", "apple"])
    assert e.shape == (3, 32)
    assert torch.allclose(e[0], e[2])
    assert not torch.allclose(e[0], e[1])


def test_wrong_image_size_is_a_clear_error(tiny_clip):
    with pytest.raises(VqclipError, match="resize"):
        tiny_clip.encode_image(torch.rand(1, 3, 40, 40))


def test_identity_is_stable_across_copies(tmp_path):
    from vqclip.models.clip import clip_identity
    from vqclip.models.tiny import make_clip_dir

    a = make_clip_dir(tmp_path / "a" / "m", seed=1)
    b = make_clip_dir(tmp_path / "b" / "m", seed=1)
    c = make_clip_dir(tmp_path / "c" / "m", seed=2)
    assert clip_identity(a, None) == clip_identity(b, None)
    assert clip_identity(a, None) != clip_identity(c, None)
    assert clip_identity("ViT-B-32", "openai") == "ViT-B-32/openai"


def test_unknown_model_name_suggests_close_ones():
    with pytest.raises(VqclipError, match="ViT-B-32") as e:
        load_clip("ViT-B-33", "openai", device="cpu")
    assert "--clip" in str(e.value)


def test_unknown_pretrained_tag_lists_valid_tags():
    with pytest.raises(VqclipError, match="openai") as e:
        load_clip("ViT-B-32", "not-a-tag", device="cpu")
    assert "--pretrained" in str(e.value)


def test_local_dir_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(VqclipError, match="open_clip_config.json"):
        load_clip(f"local-dir:{tmp_path}", device="cpu")
