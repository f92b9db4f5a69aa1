"""End-to-end generation with the paper's real models; skipped unless --run-slow and the weights are present."""

import os
from pathlib import Path

import pytest


@pytest.mark.slow
@pytest.mark.parametrize("space", ["clip", "learn", "forget"])
def test_real_models_generate_in_each_space(space, tmp_path):
    from vqclip.generation import generate, load_models
    from vqclip.models.registry import DEFAULT_VQGAN, VQGAN_ASSETS, cache_status
    from vqclip.projections import projection_path

    cache = Path(os.environ.get("VQCLIP_WEIGHTS_CACHE", "~/.cache/vqclip")).expanduser()
    if cache_status(VQGAN_ASSETS[DEFAULT_VQGAN], cache) != "converted":
        pytest.skip(f"{DEFAULT_VQGAN} is not converted in {cache}: run `vqclip models download {DEFAULT_VQGAN}`")
    try:
        models = load_models("ViT-B-32", "openai", DEFAULT_VQGAN, device="auto", cache_dir=str(cache))
    except Exception as e:  # no network and no hub cache
        pytest.skip(f"ViT-B-32/openai weights unavailable: {e}")
    if space != "clip" and not projection_path(space, models.clip.identity, cache).is_file():
        pytest.skip(f"no cached {space} projection for ViT-B-32/openai: train one with `vqclip train`")
    result = generate("a photo of an apple", space=space, models=models, size=(224, 224), steps=20, cutn=16, seed=0)
    assert result.status == "finished"
    assert result.history[-1] < result.history[0]  # real CLIP: 20 steps measurably approach the prompt
