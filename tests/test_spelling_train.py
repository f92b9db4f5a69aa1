"""Training on planted structure: forget keeps the visual subspace, learn keeps the written one."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqclip.errors import VqclipError
from vqclip.spelling.retrieval import as_projector, retrieval_metrics
from vqclip.spelling.train import (SpellingFeatures, TrainConfig, init_projection, train_projection,
                                   write_projection)


def planted(n=512, n_classes=8, n_words=256, D=32, visual=12, written=12, seed=0) -> SpellingFeatures:
    """x_i visual only, x_t / y_t written only, x_it both, y_i visual; the last 8 dims are noise."""
    g = torch.Generator().manual_seed(seed)

    def sub(k, lo, hi):
        v = torch.zeros(k, D)
        v[:, lo:hi] = torch.randn(k, hi - lo, generator=g)
        return F.normalize(v, dim=-1)

    classes = sub(n_classes, 0, visual)
    words = sub(n_words, visual, visual + written)
    class_ids = torch.randint(n_classes, (n,), generator=g)
    word_ids = torch.randint(n_words, (n,), generator=g)
    instance = F.normalize(classes[class_ids] + 0.7 * sub(n, 0, visual), dim=-1)

    def noisy(v):
        return F.normalize(v + 0.05 * torch.randn(n, D, generator=g), dim=-1)

    split = torch.zeros(n, dtype=torch.long)
    split[int(0.8 * n):] = 1
    return SpellingFeatures(x_i=noisy(instance), x_t=noisy(words[word_ids]), y_t=noisy(words[word_ids]),
                            x_it=noisy(instance + words[word_ids]), class_ids=class_ids, class_features=classes,
                            word_ids=word_ids, is_real=word_ids % 2 == 0, split=split)


def _mean_cos(W, a, b):
    p = as_projector(W)
    return float((p(a) * p(b)).sum(-1).mean())


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data():
    return planted()


@pytest.fixture(scope="module")
def trained(data):
    torch.set_num_threads(1)
    train, val = data.part("train"), data.part("val")
    forget = train_projection(train, val, TrainConfig(space="forget", dim=16, lr=1e-2, epochs=8, batch_size=64))
    learn = train_projection(train, val, TrainConfig(space="learn", dim=12, lr=1e-2, epochs=8, batch_size=64))
    return forget, learn


def test_planted_structure_forget_and_learn(data, trained):
    forget, learn = trained
    val = data.part("val")
    # in CLIP space x_it sits halfway between the image and the word
    clip_i, clip_t = _mean_cos(None, val.x_it, val.x_i), _mean_cos(None, val.x_it, val.x_t)
    assert abs(clip_i - clip_t) < 0.1
    f_i, f_t = _mean_cos(forget.W, val.x_it, val.x_i), _mean_cos(forget.W, val.x_it, val.x_t)
    l_i, l_t = _mean_cos(learn.W, val.x_it, val.x_i), _mean_cos(learn.W, val.x_it, val.x_t)
    assert f_i - f_t > 0.3, (f_i, f_t)  # forget: x_it looks like the photo, not the word
    assert l_t - l_i > 0.5, (l_i, l_t)  # learn: x_it looks like the word, not the photo

    clip_m, forget_m, learn_m = (retrieval_metrics(val, W) for W in (None, forget.W, learn.W))
    for name in ("x_it->y_t", "y_t->x_it", "x_it->x_t", "x_t->x_it"):
        assert forget_m[name]["all"] < clip_m[name]["all"] - 0.4, name  # forget no longer reads x_it
        assert learn_m[name]["all"] > forget_m[name]["all"] + 0.4, name
    # x_t↔y_t is in no forget term: it only drops as a side effect of losing the written subspace
    assert forget_m["x_t->y_t"]["all"] < clip_m["x_t->y_t"]["all"] - 0.1
    assert forget_m["x_it->x_i"]["all"] >= clip_m["x_it->x_i"]["all"] - 0.1
    assert learn_m["x_it->x_i"]["all"] < clip_m["x_it->x_i"]["all"] - 0.5  # learn forgets the picture
    assert learn_m["class(x_it)"]["all"] < forget_m["class(x_it)"]["all"] - 0.5


def test_training_keeps_w_orthogonal_and_records_history(trained):
    forget, learn = trained
    for r in trained:
        assert r.W.shape[1] == 32 and len(r.history) == 8
        err = torch.linalg.matrix_norm(torch.eye(r.dim) - r.W @ r.W.T)
        assert float(err) < 0.1
        assert 1 <= r.best_epoch <= 8
        assert min(h["val_loss"] for h in r.history) == pytest.approx(r.metrics["val_loss"])
    assert forget.weights == {"L1": 1.0, "L2": 1.0, "L5": -1.0, "L6": 1.0}
    assert learn.weights == {"L1": -1.0, "L3": 1.0, "L4": 1.0, "L5": 1.0}


def test_best_epoch_is_kept_and_seeded(data):
    train, val = data.part("train"), data.part("val")
    cfg = TrainConfig(space="forget", dim=16, lr=5e-2, epochs=4, batch_size=64, seed=1)
    a, b = train_projection(train, val, cfg), train_projection(train, val, cfg)
    assert torch.equal(a.W, b.W)  # same seed, same projection
    # the kept W is the best epoch's: re-running for exactly best_epoch epochs reproduces it
    again = train_projection(train, val, TrainConfig(**{**cfg.__dict__, "epochs": a.best_epoch}))
    assert torch.allclose(again.W, a.W)


def test_mask_duplicates_changes_the_objective(data):
    train = data.part("train").subset(torch.arange(64))
    train.class_ids = torch.zeros_like(train.class_ids)  # all one class: only masking makes L2 informative
    train.class_ids[::2] = 1
    cfg = dict(space="forget", dim=8, lr=1e-2, epochs=1, batch_size=32)
    plain = train_projection(train, None, TrainConfig(**cfg))
    masked = train_projection(train, None, TrainConfig(**cfg, mask_duplicates=True))
    assert plain.history[0]["train_L2"] != pytest.approx(masked.history[0]["train_L2"])


def test_orthogonal_init():
    W = init_projection(8, 32, seed=0)
    assert torch.allclose(W @ W.T, torch.eye(8), atol=1e-5)
    assert not torch.equal(W, init_projection(8, 32, seed=1))


def test_bad_training_inputs(data):
    one_class = data.part("train").subset(torch.arange(10))
    one_class.class_ids = torch.zeros_like(one_class.class_ids)
    with pytest.raises(VqclipError, match="at least 2 classes"):
        train_projection(one_class, None, TrainConfig(space="forget", epochs=1))
    train_projection(one_class, None, TrainConfig(space="learn", epochs=1))  # learn has no class terms
    with pytest.raises(VqclipError, match="at least 2 five-tuples"):
        train_projection(data.subset(torch.arange(1)), None, TrainConfig(epochs=1))
    with pytest.raises(VqclipError, match="--dim"):
        train_projection(data, None, TrainConfig(space="learn", dim=33, epochs=1))
    with pytest.raises(VqclipError, match="unknown loss term"):
        train_projection(data, None, TrainConfig(weights="L9=1", epochs=1))


def test_written_projection_is_found_by_the_generator(tmp_path, data, trained):
    from vqclip.projections import projection_path, resolve_space

    forget, _ = trained
    path = write_projection(forget, "tiny/clip", recipe={"images": "planted"}, split_sizes=data.split_sizes())
    assert path == projection_path("forget", "tiny/clip")
    space = resolve_space("forget", "tiny/clip", 32)
    assert torch.allclose(space.W, forget.W)
    meta = space.metadata
    assert meta["clip_model"] == "tiny/clip" and meta["dim"] == "16"
    import json

    assert json.loads(meta["loss_weights"]) == forget.weights
    assert json.loads(meta["split_sizes"]) == {"train": 409, "val": 103, "test": 0}
    assert json.loads(meta["data_recipe"]) == {"images": "planted"}
    assert float(meta["gamma"]) == forget.gamma
    assert "val" in json.loads(meta["metrics"])
    with pytest.raises(VqclipError, match="--overwrite"):
        write_projection(forget, "tiny/clip", overwrite=False)
    with pytest.raises(VqclipError, match="trained for CLIP"):
        resolve_space("forget", "tiny/clip", 32, projection=path).check_clip("other/clip", 32)
