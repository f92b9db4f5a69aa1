"""Each open_clip model is built with the activation its pretrained tag was trained with (no weights needed)."""

from __future__ import annotations

import copy
import warnings

import open_clip
import pytest
from open_clip.factory import get_model_config

from vqclip.models.clip import canonical_name, clip_identity, create_open_clip, tag_build_kwargs, uses_quick_gelu


def built_quick_gelu(name: str, tag: str) -> bool:
    """The quick_gelu of the config open_clip builds from `name` with vqclip's kwargs, merged as create_model does."""
    cfg = copy.deepcopy(get_model_config(name))
    kwargs = tag_build_kwargs(name, tag)
    if kwargs.pop("force_quick_gelu", False):
        cfg["quick_gelu"] = True
    cfg.update(kwargs)  # the remaining kwargs are model kwargs, applied last
    return bool(cfg.get("quick_gelu", False))


PAIRS = [(m, t) for m, t in open_clip.list_pretrained() if get_model_config(m) is not None]


def test_every_pretrained_tag_vqclip_can_be_asked_for_is_covered():
    assert len(PAIRS) == len(open_clip.list_pretrained())  # every listed tag has a built-in config
    assert ("ViT-B-32", "openai") in PAIRS and ("ViT-B-32-quickgelu", "openai") in PAIRS


def test_built_config_matches_the_tags_quick_gelu_for_every_tag():
    wrong = [f"{m}:{t}" for m, t in PAIRS
             if built_quick_gelu(m, t) != bool(open_clip.get_pretrained_cfg(m, t).get("quick_gelu", False))]
    assert wrong == []


def test_the_mismatches_this_fixes_exist_in_open_clip():
    """Without vqclip's kwargs open_clip's plain configs disagree with their tags (e.g. ViT-B-32 + openai)."""
    plain = {(m, t) for m, t in PAIRS if bool(get_model_config(m).get("quick_gelu", False))
             != bool(open_clip.get_pretrained_cfg(m, t).get("quick_gelu", False))}
    assert ("ViT-B-32", "openai") in plain
    assert tag_build_kwargs("ViT-B-32", "openai") == {"force_quick_gelu": True}
    assert tag_build_kwargs("ViT-B-32-quickgelu", "openai") == {}
    assert tag_build_kwargs("ViT-B-32", "laion2b_s34b_b79k") == {}  # trained with GELU
    for model, tag in plain:
        assert tag_build_kwargs(model, tag)


def test_files_and_schema_models_keep_their_own_config(tmp_path):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert tag_build_kwargs("ViT-B-32", str(weights)) == {}
    assert tag_build_kwargs("hf-hub:org/repo", None) == {}
    assert tag_build_kwargs("ViT-B-32", None) == {}


def test_identity_stays_the_same_for_both_spellings_of_a_quickgelu_model():
    assert clip_identity("ViT-B-32", "openai") == "ViT-B-32/openai"
    assert clip_identity("ViT-B-32-quickgelu", "openai") == "ViT-B-32/openai"
    assert clip_identity("ViT-L-14-quickgelu", "dfn2b") == "ViT-L-14/dfn2b"
    assert canonical_name("ViT-B-32-quickgelu", "laion400m_e32") == "ViT-B-32"
    assert canonical_name("ViT-B-32", "laion2b_s34b_b79k") == "ViT-B-32"  # nothing to strip


def test_vit_b_32_openai_is_built_with_quick_gelu_and_no_warning(monkeypatch):
    """The real factory, without weights: the tag's checkpoint download is replaced by a dummy path."""
    import open_clip.factory as factory

    monkeypatch.setattr(factory, "download_pretrained", lambda *a, **k: "unused-checkpoint.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create_open_clip("ViT-B-32", "openai", load_weights=False)
    assert uses_quick_gelu(model)
    assert not [w for w in caught if "QuickGELU" in str(w.message)]
    plain = open_clip.create_model("ViT-B-32")  # no tag: open_clip's GELU config, as before
    assert not uses_quick_gelu(plain)


def test_features_extracted_with_the_old_gelu_build_are_not_reused(tmp_path):
    import json

    from vqclip.errors import VqclipError
    from vqclip.spelling.features import _check_meta

    (tmp_path / "meta.json").write_text(json.dumps({"clip_model": "ViT-B-32/openai", "embed_dim": 512,
                                                    "recipe_key": "k"}))  # written before the field existed
    meta = {"clip_model": "ViT-B-32/openai", "embed_dim": 512, "recipe_key": "k", "clip_quick_gelu": True}
    with pytest.raises(VqclipError, match=f"without QuickGELU.*Remove {tmp_path}"):
        _check_meta(tmp_path, meta)
    _check_meta(tmp_path, dict(meta, clip_quick_gelu=False))  # a GELU model (e.g. a LAION tag) still matches


def test_the_matmul_patch_embedding_gives_the_convolutions_numbers_and_gradients():
    import copy

    import open_clip
    import torch

    from vqclip.models.clip import use_matmul_patch_embedding

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval().requires_grad_(False)
    x = torch.rand(2, 3, 224, 224, requires_grad=True)
    reference = model.encode_image(x)
    (grad_ref,) = torch.autograd.grad(reference.sum(), x)
    fast = copy.deepcopy(model)
    assert use_matmul_patch_embedding(fast)
    out = fast.encode_image(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.allclose(out, reference, atol=1e-4) and torch.allclose(grad, grad_ref, atol=1e-4)
    assert fast.state_dict().keys() == model.state_dict().keys()
    assert not use_matmul_patch_embedding(open_clip.create_model("RN50", pretrained=None))  # no patch convolution
