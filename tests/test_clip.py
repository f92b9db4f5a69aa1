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


@pytest.mark.parametrize("content", [b"", b"garbage, not a checkpoint" * 10])
def test_unreadable_pretrained_file_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "weights.bin"
    bad.write_bytes(content)
    with pytest.raises(VqclipError, match="--pretrained: could not load .*weights.bin.*truncated, corrupt"):
        load_clip("ViT-B-32", str(bad), device="cpu")


def test_truncated_safetensors_is_a_clear_error(tiny_clip_id, tmp_path):
    weights = (tiny_clip_id.split(":", 1)[1]) + "/open_clip_model.safetensors"
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(open(weights, "rb").read()[:5000])
    with pytest.raises(VqclipError, match="cut.safetensors.*SafetensorError"):
        load_clip("ViT-B-32", str(cut), device="cpu")


def test_weights_of_another_architecture_name_the_likely_cause(tiny_clip_id):
    weights = (tiny_clip_id.split(":", 1)[1]) + "/open_clip_model.safetensors"
    with pytest.raises(VqclipError, match="another architecture than ViT-B-32"):
        load_clip("ViT-B-32", weights, device="cpu")


def test_cli_flags_load_the_same_model_again(tiny_clip, tiny_clip_id, tmp_path, monkeypatch):
    import shlex

    monkeypatch.chdir(tmp_path)  # the flags must not depend on the working folder
    argv = shlex.split(tiny_clip.cli_flags())
    assert argv == ["--clip", tiny_clip_id]
    again = load_clip(argv[1], device="cpu")
    assert again.identity == tiny_clip.identity
