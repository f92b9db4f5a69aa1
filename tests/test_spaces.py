import pytest
import torch

from vqclip.errors import VqclipError
from vqclip.projections import load_projection, projection_path, resolve_space, save_projection
from vqclip.spaces import orthogonality_error, Space


def _orthonormal(d, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=g))
    return q.T.contiguous()  # (d, D) with orthonormal rows


def test_identity_space_only_normalises():
    e = torch.randn(4, 8)
    assert torch.allclose(Space("clip").project(e), e / e.norm(dim=-1, keepdim=True))


def test_projection_is_normalised_and_lower_dimensional():
    W = _orthonormal(3, 8)
    e = torch.randn(5, 8)
    p = Space("forget", W).project(e)
    assert p.shape == (5, 3)
    assert torch.allclose(p, torch.nn.functional.normalize(e @ W.T, dim=-1))


def test_full_rank_rotation_preserves_cosines():
    W = _orthonormal(8, 8)
    e = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    p = Space("learn", W).project(e)
    assert torch.allclose(p @ p.T, e @ e.T, atol=1e-5)
    assert orthogonality_error(W) < 1e-5


def test_save_and_load_round_trip_keeps_metadata(tmp_path):
    W = _orthonormal(4, 8)
    path = save_projection(tmp_path / "p.safetensors", W, "learn", "ViT-B-32/openai", {"recipe": {"gamma": 0.1}})
    sp = load_projection(path, embed_dim=8)
    assert sp.name == "learn" and sp.dim == 4 and sp.embed_dim == 8
    assert torch.equal(sp.W, W)
    assert sp.metadata["clip_model"] == "ViT-B-32/openai"
    assert '"gamma": 0.1' in sp.metadata["recipe"]


def test_reference_format_is_oriented_by_shape(tmp_path):
    W = _orthonormal(4, 8)
    torch.save({"W": W.T.clone()}, tmp_path / "ref.pt")  # (D, d) as some reference files store it
    sp = load_projection(tmp_path / "ref.pt", space="forget", embed_dim=8)
    assert sp.W.shape == (4, 8) and torch.equal(sp.W, W)


def test_reference_format_needs_a_space(tmp_path):
    torch.save({"W": _orthonormal(4, 8)}, tmp_path / "ref.pt")
    with pytest.raises(VqclipError, match="--space learn or --space forget"):
        load_projection(tmp_path / "ref.pt", embed_dim=8)


def test_wrong_clip_model_is_refused(tmp_path):
    save_projection(tmp_path / "p.safetensors", _orthonormal(4, 8), "forget", "RN50/openai")
    with pytest.raises(VqclipError, match="trained for CLIP 'RN50/openai'"):
        resolve_space("forget", "ViT-B-32/openai", 8, tmp_path / "p.safetensors")


def test_wrong_embedding_size_is_refused(tmp_path):
    save_projection(tmp_path / "p.safetensors", _orthonormal(4, 8), "forget", "X/y")
    with pytest.raises(VqclipError, match="CLIP embedding size 16"):
        resolve_space("forget", "X/y", 16, tmp_path / "p.safetensors")


def test_non_finite_projection_is_refused(tmp_path):
    W = _orthonormal(4, 8)
    W[0, 0] = float("nan")
    save_projection(tmp_path / "p.safetensors", W, "forget", "X/y")
    with pytest.raises(VqclipError, match="NaN"):
        load_projection(tmp_path / "p.safetensors", embed_dim=8)


def test_corrupt_file_is_a_clear_error(tmp_path):
    (tmp_path / "p.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(VqclipError, match="could not read"):
        load_projection(tmp_path / "p.safetensors")


def test_missing_cached_projection_gives_the_training_command():
    with pytest.raises(VqclipError, match="vqclip train --space learn --clip ViT-B-32 --pretrained openai"):
        resolve_space("learn", "ViT-B-32/openai", 512)


def test_cached_projection_is_found(tmp_path):
    path = projection_path("forget", "X/y")
    save_projection(path, _orthonormal(4, 8), "forget", "X/y")
    assert resolve_space("forget", "X/y", 8).dim == 4


def test_unknown_space_lists_choices():
    with pytest.raises(VqclipError, match="clip, forget, learn"):
        resolve_space("spell", "X/y", 8)


def test_training_hint_uses_the_flags_the_user_gave(tmp_path):
    import shlex

    identity = "ViT-B-32/file#0123456789abcdef"
    with pytest.raises(VqclipError) as info:
        resolve_space("learn", identity, 8, clip_flags="--clip ViT-B-32 --pretrained '/w/my weights.pt'")
    command = str(info.value).split("Train one with: ")[1].split("  — ")[0]
    assert shlex.split(command)[4:8] == ["--clip", "ViT-B-32", "--pretrained", "/w/my weights.pt"]
    assert "file#" not in command


def test_training_hint_without_flags_never_prints_a_hash_as_a_path():
    with pytest.raises(VqclipError) as info:
        resolve_space("learn", "local-dir:clip#0123456789abcdef", 8)
    assert "--clip local-dir:clip " not in str(info.value)
    assert "local-dir:PATH_OF_THE_MODEL_FOLDER" in str(info.value)


def test_projection_flag_of_the_command_is_named(tmp_path):
    with pytest.raises(VqclipError, match="--projection-forget PATH") as info:
        resolve_space("forget", "X/y", 8, projection_arg="--projection-forget")
    assert "--projection PATH" not in str(info.value)


def test_clip_space_with_a_projection_file_is_refused(tmp_path):
    save_projection(tmp_path / "p.safetensors", _orthonormal(4, 8), "learn", "X/y")
    with pytest.raises(VqclipError, match="takes no projection"):
        resolve_space("clip", "X/y", 8, tmp_path / "p.safetensors")
    assert resolve_space(None, "X/y", 8, tmp_path / "p.safetensors").name == "learn"
    with pytest.raises(VqclipError, match="'learn' projection"):
        load_projection(tmp_path / "p.safetensors", "clip", 8)
