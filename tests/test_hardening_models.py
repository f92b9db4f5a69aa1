"""Untrusted model files: damaged checkpoints, bad VQGAN configs, NaN weights, degenerate projections, and errors
about cached files that name the file instead of a flag the user never passed."""

from __future__ import annotations


import pytest
import torch
import yaml

from vqclip.errors import VqclipError
from vqclip.errors import quote_error
from vqclip.models.checkpoints import read_checkpoint
from vqclip.models.tiny import make_clip_dir, make_vqgan, write_taming_files
from vqclip.models.vqgan import load_vqgan, save_converted
from vqclip.projections import load_projection, projection_path, resolve_space, save_projection


def _orthonormal(d, D, seed=0):
    q, _ = torch.linalg.qr(torch.randn(D, d, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()


def _one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and "\x1b" not in text
    return text


# ------------------------------------------------------------------------------------------------ checkpoints

def test_zero_byte_checkpoint_is_a_clear_error(tmp_path):
    config, _ = write_taming_files(tmp_path)
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(VqclipError) as e:
        load_vqgan(config, empty)
    assert "--vqgan-checkpoint" in _one_line_error(e) and "empty file" in str(e.value)


def test_truncated_safetensors_with_a_config_is_a_clear_error(tmp_path):
    config, _ = write_taming_files(tmp_path)
    whole = save_converted(make_vqgan(), tmp_path / "tiny.safetensors")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:3000])
    with pytest.raises(VqclipError) as e:
        load_vqgan(config, cut)
    assert "could not read the checkpoint" in _one_line_error(e) and str(cut) in str(e.value)
    with pytest.raises(VqclipError):
        read_checkpoint(cut)


def test_quoted_errors_are_one_line_without_colour_codes():
    assert quote_error(RuntimeError("")) == "RuntimeError: no message"
    assert quote_error(RuntimeError("\n\x1b[31mbad\x1b[0m thing\nmore")) == "RuntimeError: bad thing"


@pytest.mark.parametrize("key,value", [("ch_mult", []), ("ch", "abc"), ("ch", 0), ("z_channels", -4),
                                       ("resolution", 0), ("num_res_blocks", -1), ("ch_mult", [1, 0]),
                                       ("attn_resolutions", "16"), ("dropout", 2.0), ("ch", 10 ** 9),
                                       ("ch_mult", [1] * 40)])
def test_bad_vqgan_config_values_are_refused(tmp_path, key, value):
    config, ckpt = write_taming_files(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["params"]["ddconfig"][key] = value
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(VqclipError) as e:
        load_vqgan(config, ckpt)
    assert _one_line_error(e).startswith("--vqgan-config:") and f"`{key.split()[0]}" in str(e.value)


@pytest.mark.parametrize("key,value", [("n_embed", 0), ("embed_dim", -8), ("n_embed", "many")])
def test_bad_codebook_sizes_are_refused(tmp_path, key, value):
    config, ckpt = write_taming_files(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["model"]["params"][key] = value
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(VqclipError, match=f"`{key}` must be a whole number"):
        load_vqgan(config, ckpt)


def test_nan_vqgan_weights_are_refused_at_load(tmp_path):
    model = make_vqgan()
    with torch.no_grad():
        model.quantize.embedding.weight[3, 0] = float("nan")
    config, ckpt = write_taming_files(tmp_path, model)
    with pytest.raises(VqclipError, match="NaN or infinite weights in quantize.embedding.weight"):
        load_vqgan(config, ckpt)


# ----------------------------------------------------------------------------------------------------- CLIP

def test_nan_clip_weights_are_refused_at_load(tmp_path):
    from safetensors.torch import load_file, save_file

    from vqclip.models.clip import load_clip

    ident = make_clip_dir(tmp_path / "clip")
    weights = tmp_path / "clip" / "open_clip_model.safetensors"
    state = load_file(str(weights))
    state["logit_scale"] = torch.tensor(float("inf"))
    save_file(state, str(weights))
    with pytest.raises(VqclipError, match="NaN or infinite values in logit_scale"):
        load_clip(ident, device="cpu")


def test_clip_std_of_zero_is_refused_at_load(tmp_path):
    from vqclip.models.clip import load_clip

    ident = make_clip_dir(tmp_path / "clip", preprocess_cfg={"size": 32, "mean": [0.5] * 3, "std": [0.3, 0.0, 0.3]})
    with pytest.raises(VqclipError, match="3 positive standard deviations"):
        load_clip(ident, device="cpu")


def test_damaged_file_in_the_hub_cache_names_it(tmp_path, monkeypatch):
    from vqclip.models.clip import load_clip

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "cache" / "clip" / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    (repo / "snapshots" / "abc" / "open_clip_model.safetensors").write_bytes(b"\x10\x00" * 50)
    with pytest.raises(VqclipError) as e:
        load_clip("ViT-B-32", "openai", device="cpu", cache_dir=str(tmp_path / "cache"))
    text = _one_line_error(e)
    assert f"Delete {repo}" in text and "--clip:" not in text


# ------------------------------------------------------------------------------------------------ projections

@pytest.mark.parametrize("name,make", [
    ("zero", lambda: torch.zeros(4, 8)),
    ("zero row", lambda: torch.cat([_orthonormal(3, 8), torch.zeros(1, 8)])),
    ("rank deficient", lambda: torch.cat([_orthonormal(3, 8), _orthonormal(3, 8)[:1] * 2])),
    ("empty", lambda: torch.zeros(0, 8)),
])
def test_degenerate_projections_are_refused_on_load(tmp_path, name, make):
    save_projection(tmp_path / "p.safetensors", make(), "learn", "X/y")
    with pytest.raises(VqclipError, match="--projection") as e:
        load_projection(tmp_path / "p.safetensors", embed_dim=8)
    _one_line_error(e)


def test_a_good_projection_still_loads(tmp_path):
    save_projection(tmp_path / "p.safetensors", _orthonormal(4, 8), "learn", "X/y")
    assert load_projection(tmp_path / "p.safetensors", embed_dim=8).dim == 4


def test_damaged_cached_projection_names_the_file_not_the_flag():
    path = projection_path("forget", "X/y")
    save_projection(path, torch.zeros(4, 8), "forget", "X/y")
    with pytest.raises(VqclipError) as e:
        resolve_space("forget", "X/y", 8)
    text = _one_line_error(e)
    assert str(path) in text and "Delete that file" in text and "--projection:" not in text
    path.write_bytes(b"garbage")
    with pytest.raises(VqclipError, match="could not read the file as a projection") as e:
        resolve_space("forget", "X/y", 8)
    assert "--projection:" not in str(e.value) and str(path) in str(e.value)


# ------------------------------------------------------------------------------------------------- training

def _features(n=16, D=8, nan=False):
    from vqclip.spelling.train import SpellingFeatures

    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(n, D, generator=g), dim=-1)
    if nan:
        x = x.clone()
        x[2, 1] = float("nan")
    return SpellingFeatures(x_i=x, x_t=x.flip(0), x_it=x.roll(1, 0), y_t=x.flip(0),
                            class_ids=torch.arange(n) % 4, class_features=x[:4], word_ids=torch.arange(n),
                            is_real=torch.arange(n) % 2 == 0)


def test_training_on_nan_features_is_refused():
    from vqclip.spelling.train import TrainConfig, train_projection

    with pytest.raises(VqclipError, match="NaN or infinite") as e:
        train_projection(_features(nan=True), None, TrainConfig(space="learn", dim=2, epochs=1, batch_size=8))
    _one_line_error(e)


def test_training_whose_loss_turns_non_finite_is_refused():
    from vqclip.spelling.train import TrainConfig, train_projection

    with pytest.raises(VqclipError, match="the loss became") as e:
        train_projection(_features(), None, TrainConfig(space="learn", dim=2, epochs=2, batch_size=8, lr=1e300,
                                                        gamma=1e300))
    _one_line_error(e)


# --------------------------------------------------------------------------------------------- the loop message

def test_first_step_non_finite_message_does_not_blame_the_learning_rate():
    from vqclip.generation.loop import nonfinite_message

    first = nonfinite_message(float("nan"), 0, 0.1)
    assert "step before" not in first and "Lower --lr" not in first and "unoptimised start" in first
    later = nonfinite_message(float("nan"), 4, 0.1)
    assert "step 5" in later and "image of step 4" in later and "--lr" in later


def test_nan_space_from_the_first_step_reports_the_truth(tiny_clip, tiny_vqgan):
    from vqclip.generation.loop import Settings, run
    from vqclip.generation.prompts import parse_prompts
    from vqclip.spaces import Space

    class NaNSpace(Space):
        def project(self, e):
            return super().project(e) * float("nan")

    r = run(Settings(prompts=parse_prompts("an apple"), size=(32, 32), steps=3, cutn=2, seed=0), tiny_clip,
            tiny_vqgan, NaNSpace("clip"))
    assert r.status == "nonfinite" and r.steps_done == 0 and "first step" in r.message


def test_damaged_cached_vqgan_conversion_names_the_file_not_the_flag(tmp_path):
    from vqclip.models.registry import converted_path, resolve_vqgan

    path = converted_path("mine", tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    with pytest.raises(VqclipError) as e:
        resolve_vqgan("mine", cache_dir=tmp_path)
    text = _one_line_error(e)
    assert str(path) in text and "Delete that file" in text and not text.startswith("--vqgan")


class _NotATensor:
    pass


def test_torch_errors_quoted_about_a_projection_are_one_line(tmp_path):
    # torch's weights-only refusal spans many lines; quoted whole it broke the one-line rule
    torch.save({"W": _NotATensor()}, tmp_path / "p.pt")
    with pytest.raises(VqclipError) as e:
        load_projection(tmp_path / "p.pt", "learn", 8)
    assert "could not read the file as a projection" in _one_line_error(e)


# ------------------------------------------------------------------------- issue 28: pickle bombs, bounded


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("bomb", [_Reduce(bytearray, (1 << 30,)), _Reduce(set, (range(2**27),)),
                                  _Reduce(list, (range(2**30),))], ids=["bytearray", "set-range", "list-range"])
@pytest.mark.parametrize("zipped", [False, True], ids=["pickle", "torch-zip"])
def test_pickle_bombs_are_refused_fast_before_they_are_built(tmp_path, bomb, zipped):
    import pickle
    import time

    from vqclip.models.checkpoints import CheckpointBombError

    path = tmp_path / "bomb.pt"
    if zipped:
        torch.save({"x": bomb}, path)
    else:
        path.write_bytes(pickle.dumps(bomb, protocol=2))
        assert len(path.read_bytes()) < 70
    start = time.perf_counter()
    with pytest.raises(CheckpointBombError) as e:
        read_checkpoint(path)
    assert time.perf_counter() - start < 2.0
    assert "pickle bomb" in _one_line_error(e)


def test_pickle_bomb_stays_under_500_mb_in_a_fresh_process(tmp_path):
    import pickle
    import subprocess
    import sys

    path = tmp_path / "bomb.pt"
    path.write_bytes(pickle.dumps(_Reduce(bytearray, (1 << 30,)), protocol=2))
    code = ("import resource, sys; from vqclip.models.checkpoints import read_checkpoint\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            f"try: read_checkpoint({str(path)!r})\nexcept Exception as e: print(type(e).__name__)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
    assert out[0] == "CheckpointBombError" and int(out[1]) < 500, out


def test_projection_loader_refuses_an_allocating_pickle(tmp_path):
    path = tmp_path / "W.pt"
    torch.save({"W": _orthonormal(4, 32), "x": _Reduce(bytearray, (1 << 30,))}, path)
    with pytest.raises(VqclipError) as e:
        load_projection(path, "learn", 32)
    assert "--projection" in _one_line_error(e)


@pytest.mark.parametrize("scale", [1e-30, 1e30])
def test_badly_scaled_projection_is_refused(tmp_path, scale):
    from safetensors.torch import save_file

    save_file({"W": _orthonormal(4, 32) * scale}, str(tmp_path / "W.safetensors"))
    with pytest.raises(VqclipError) as e:
        load_projection(tmp_path / "W.safetensors", "learn", 32)
    assert "singular values" in _one_line_error(e)
