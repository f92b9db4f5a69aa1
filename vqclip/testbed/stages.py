"""The testbed's stages: the small CLIP trained on the world, the five-tuples' features, the learn / forget
projections, the attack set on disk, and the measurements per space.

Every stage goes through the code a user runs on real CLIP models: `load_clip("local-dir:...")`, the spelling
trainer and presets (`vqclip.spelling.train`), the retrieval metrics and the typographic-attack evaluator.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

import torch

from .config import TYPO_TEMPLATE, TestbedConfig
from .progress import bar as _bar
from .world import World


def train_clip_stage(world: World, config: TestbedConfig, out: Path, progress: bool = True,
                     reuse: bool = False) -> dict:
    """Generate the contrastive pairs, train the small CLIP, save it as `out/clip` (open_clip local-dir).

    With `reuse`, a CLIP already in `out/clip` whose recorded recipe matches this configuration is kept as is.
    """
    from ..io import write_json
    from .small_clip import ClipTrainConfig, save_small_clip, small_clip_config
    from .world import training_set

    record_path = out / "clip" / "testbed_clip.json"
    if reuse and record_path.is_file() and (out / "clip" / "open_clip_model.safetensors").is_file():
        record = _read_record(record_path)
        if isinstance(record, dict) and record.get("recipe") == config.clip_recipe():
            # the folder it was found in, not the path recorded at training: --out may have been moved or copied
            return {**record, "clip": f"local-dir:{out / 'clip'}", "reused": True}
    start = time.perf_counter()
    with _bar(config.n_pairs, "world: training pairs", progress) as bar:
        images, captions, kinds = training_set(world, config.n_pairs, progress=bar.update)
    gen_seconds = time.perf_counter() - start
    model_cfg = small_clip_config(image_size=config.image_size, embed_dim=config.embed_dim, width=config.clip_width,
                                  text_width=config.clip_text_width)
    train_cfg = ClipTrainConfig(steps=config.clip_steps, batch_size=config.clip_batch, lr=config.clip_lr,
                                warmup=config.clip_warmup, seed=config.seed, crop_scale=config.clip_crop)
    model, history = _train(model_cfg, images, captions, train_cfg, "small CLIP: contrastive training", progress)
    robust = None
    if config.robust_steps:
        robust = ClipTrainConfig(steps=config.robust_steps, batch_size=config.clip_batch, lr=config.robust_lr,
                                 warmup=min(100, config.robust_steps), seed=config.seed, crop_scale=config.clip_crop,
                                 adv_eps=config.robust_eps, adv_ramp=0.5)
        model, more = _train(model_cfg, images, captions, robust, "small CLIP: adversarial fine-tune", progress,
                             init=model.state_dict())
        history += [{**r, "seconds": r["seconds"] + history[-1]["seconds"]} for r in more]
    clip_id = save_small_clip(model, model_cfg, out / "clip")
    record = {"clip": clip_id, "recipe": config.clip_recipe(), "model_cfg": model_cfg, "train": train_cfg.to_dict(),
              **({"robust": robust.to_dict()} if robust else {}),
              "pairs": {k: kinds.count(k) for k in sorted(set(kinds))},
              "final_loss": round(sum(r["loss"] for r in history[-20:]) / min(20, len(history)), 4),
              "seconds": {"world": round(gen_seconds, 1), "train": round(history[-1]["seconds"], 1)}}
    write_json(record_path, record)
    return {**record, "reused": False}


def _train(model_cfg, images, captions, train_cfg, label: str, progress: bool, init=None):
    from .small_clip import train_small_clip

    with _bar(train_cfg.steps, label, progress) as bar:
        def on_step(rec):
            bar.update(1)
            if rec["step"] % 25 == 0:
                bar.set_postfix(loss=f"{rec['loss']:.3f}")

        return train_small_clip(model_cfg, images, captions, train_cfg, on_step, init=init)


@torch.no_grad()
def encode_uint8(clip, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N, 3, H, W) uint8 images -> (N, D) CLIP features through `ClipModel.encode_image`."""
    out = [clip.encode_image(images[i:i + batch_size].float().div(255).to(clip.device)).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def tuple_features(clip, world: World, tuples):
    """CLIP features of the five-tuples, in the trainer's format (y_i = one class prompt per class)."""
    from ..spelling.train import SpellingFeatures
    from .world import class_prompt, word_image

    vocab = sorted(set(tuples.words))
    word_id = {w: i for i, w in enumerate(vocab)}
    word_feats = clip.encode_text(vocab).cpu()  # (V, D)
    ids = torch.tensor([word_id[w] for w in tuples.words])
    from ..spelling.render import item_rng

    class_images = torch.stack([_image_tensor(word_image(world, c, item_rng(world.seed, "class-name", c)))
                                for c in world.classes])
    return SpellingFeatures(
        x_i=encode_uint8(clip, tuples.x_i), x_t=encode_uint8(clip, tuples.x_t), x_it=encode_uint8(clip, tuples.x_it),
        y_t=word_feats[ids], class_ids=tuples.class_ids,
        class_features=clip.encode_text([class_prompt(c) for c in world.classes]).cpu(),
        word_ids=ids, is_real=torch.tensor([world.is_real(w) for w in tuples.words]), split=tuples.split,
        class_image_features=encode_uint8(clip, class_images), words=vocab, classes=list(world.classes),
        metadata={"source": "vqclip testbed", "world": world.to_dict()})


def _image_tensor(image) -> torch.Tensor:
    from .world import to_tensor

    return to_tensor([image])[0]


def train_projections(features, config: TestbedConfig, clip_identity: str, out: Path, progress: bool = True) -> dict:
    """learn and forget projections with the standard trainer and presets, written next to the CLIP."""
    from ..spelling.train import TrainConfig, train_projection, write_projection

    train, val = features.part("train"), features.part("val")
    info = {}
    for space, dim, weights in (("learn", config.learn_dim, config.learn_weights),
                                ("forget", config.forget_dim, config.forget_weights)):
        # drop_last: the margins in the README and the suite were measured with each epoch's partial batch dropped
        # (the trainer's old default); keeping it moves the numbers a little on some seeds and kernels.
        cfg = TrainConfig(space=space, dim=dim, weights=weights, gamma=config.gamma, epochs=config.proj_epochs,
                          lr=config.proj_lr, seed=config.seed, drop_last=True)
        with _bar(config.proj_epochs, f"projection: {space}", progress) as bar:
            result = train_projection(train, val, cfg, callback=lambda rec: bar.update(1))
        path = write_projection(result, clip_identity, out / f"{space}.safetensors",
                                recipe={"source": "vqclip testbed", "world_seed": config.seed},
                                split_sizes=features.split_sizes())
        info[space] = {"path": str(path), "dim": result.dim, "weights": result.weights, "gamma": result.gamma,
                       "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1)}
    return info


def write_text_direction(features, clip_identity: str, out: Path, seed: int) -> dict:
    """The text direction of the testbed's CLIP from the same five-tuples (`vqclip train --direction textoff`),
    written next to the projections for the generation's textoff methods."""
    from ..spelling.direction import direction_agreement, text_direction, write_direction

    vector = text_direction(features)
    held_out = direction_agreement(features, vector)
    path = write_direction(vector, clip_identity, out / "textoff.safetensors",
                           record={"source": "vqclip testbed", "world_seed": seed, "held_out": held_out})
    return {"path": str(path), "held_out": held_out}


def write_attack_dataset(world: World, attacks, folder: Path) -> Path:
    """Save the synthetic attacks in the paper's format (annotation.json), so `vqclip eval typographic` reads them."""
    from PIL import Image

    from ..io import save_png, write_json

    annotation = {}
    for k in range(len(attacks.true_ids)):
        label = world.classes[int(attacks.true_ids[k])]
        attack = world.classes[int(attacks.attack_ids[k])]
        for kind, images, word in (("clean", attacks.clean, ""), ("attack", attacks.attacked, attack)):
            name = f"images/{k:05d}_{kind}.png"
            save_png(Image.fromarray(images[k].permute(1, 2, 0).numpy()), folder / name)
            annotation[name] = {"true object": label, "typographic attack label": word}
    write_json(folder / "annotation.json", annotation)
    return folder


def load_spaces(out: Path, clip) -> dict:
    """clip (identity) and the two trained projections, checked against the CLIP they were trained for."""
    from ..projections import load_projection
    from ..spaces import identity_space

    spaces = {"clip": identity_space()}
    for name in ("learn", "forget"):
        sp = load_projection(out / f"{name}.safetensors", name, clip.embed_dim)
        sp.check_clip(clip.identity, clip.embed_dim)
        spaces[name] = sp
    return spaces


def measure(clip, spaces: Mapping[str, Any], features, attack_folder: Path, progress: bool = True) -> dict:
    """The table's numbers per space: typographic evaluator on the attack set, retrieval on the test tuples."""
    from ..evaluate.typographic import evaluate_typographic, open_typographic_dataset
    from ..spelling.retrieval import retrieval_metrics

    report = evaluate_typographic(open_typographic_dataset(attack_folder, "annotation"), clip, spaces,
                                  template=TYPO_TEMPLATE, batch_size=256, progress=progress)
    test = features.part("test")
    rows = {}
    for name, space in spaces.items():
        typo = report["results"][name]["objects"]
        ret = retrieval_metrics(test, space)
        rows[name] = {
            "clean_accuracy": _value(typo["clean"]),
            "attacked_accuracy": _value(typo["attacked"]),
            "attack_win_rate": _value(typo["attack_wins"]),
            "word_retrieval": ret["x_t->y_t"]["all"],
            "word_retrieval_real": ret["x_t->y_t"]["real"],
            "word_retrieval_nonsense": ret["x_t->y_t"]["nonsense"],
            "string_to_image": ret["y_t->x_t"]["all"],
            "word_on_object": ret["x_it->y_t"]["all"],
            "tuple_class_accuracy": ret["class(x_i)"]["all"],
            "visual_comprehension": ret.get("visual_comprehension", {}).get("image_only"),
        }
    return {"rows": rows, "typographic": {k: report[k] for k in ("dataset", "template", "results")}}


@torch.no_grad()
def object_probe(features: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-2) -> float:
    """How many attacked objects a linear read-out of CLIP's features still recognises: the ceiling of any projection.

    A ridge classifier (closed form, float64, so it does not depend on kernel paths) fit on every other item of
    each class and scored on the rest. A CLIP that overwrote the object with the written word scores low here, and
    then no linear projection, forget included, can bring the object back.
    """
    x = torch.cat([features.double(), torch.ones(len(features), 1, dtype=torch.float64)], dim=1)  # (N, D+1)
    y = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).double()  # (N, C)
    rank = (y.cumsum(dim=0) * y).sum(dim=1).long()  # 1, 2, 3, ... within each class
    fit = rank % 2 == 1
    a = x[fit]
    w = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=torch.float64), a.T @ y[fit])  # (D+1, C)
    return float(((x[~fit] @ w).argmax(dim=1) == labels[~fit]).double().mean())


def _value(x) -> float | None:
    """A rate from the evaluator's {k, n, rate, ci95} record."""
    return x["rate"] if isinstance(x, Mapping) else x


def _read_record(path):
    """A record this testbed wrote earlier, or None when it is unreadable (then the step runs again)."""
    from ..untrusted import read_json

    try:
        return read_json(path)
    except (OSError, ValueError):
        return None
