"""Does a world CLIP's gradient draw? Train a quick-world CLIP (clean, then optionally PGD-L2 fine-tunes), steer the
world VQGAN with it through `vqclip.generation.generate_many`, and judge the images (issue 33; docs/testbed.md,
"A world CLIP whose gradients draw"). Run by hand: each step takes minutes on 2 cores.

    python benchmarks/world_clip_draws.py models --out runs/wm0                        # world VQGAN + judges (8 min)
    python benchmarks/world_clip_draws.py train --out runs/clean --steps 2000 --crop 0.6           # 13 min
    python benchmarks/world_clip_draws.py train --out runs/eps1 --init runs/clean --steps 1500 --eps 1 --crop 0.6
    python benchmarks/world_clip_draws.py draw --clip runs/eps1 --models runs/wm0/world-models --steps 300
    python benchmarks/world_clip_draws.py table docs/data/world_clip_draws.json     # the docs' tables, from the data

`draw` writes DIR/TAG/grid.png (rows the prompts, columns the seeds) and rows.json (one record per image: what the
world's text detector reads, what its object classifier sees, and the steered CLIP's own verdict).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def models(a) -> None:
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.generate import world_models_stage

    world_models_stage(TestbedConfig.quick(seed=a.seed).world(), Path(a.out), progress=True)


def train(a) -> None:
    from safetensors.torch import load_file

    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.small_clip import ClipTrainConfig, save_small_clip, small_clip_config, train_small_clip
    from vqclip.testbed.world import training_set

    cfg = TestbedConfig.quick(seed=a.seed)
    images, captions, _ = training_set(cfg.world(), a.pairs)
    model_cfg = small_clip_config(image_size=64, embed_dim=cfg.embed_dim, width=a.width, text_width=cfg.clip_text_width)
    train_cfg = ClipTrainConfig(steps=a.steps, batch_size=128, lr=a.lr, warmup=a.warmup, seed=a.seed,
                                crop_scale=a.crop, adv_eps=a.eps, adv_ramp=a.ramp)
    init = load_file(str(Path(a.init) / "clip" / "open_clip_model.safetensors")) if a.init else None
    start = time.perf_counter()
    model, history = train_small_clip(model_cfg, images, captions, train_cfg, init=init)
    save_small_clip(model, model_cfg, Path(a.out) / "clip")
    record = {"train": train_cfg.to_dict(), "init": a.init, "pairs": a.pairs, "width": a.width,
              "seconds": round(time.perf_counter() - start), "final_loss": sum(r["loss"] for r in history[-50:]) / 50,
              **accuracies(model, cfg)}
    (Path(a.out) / "train.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record))


def accuracies(model, cfg, n: int = 300) -> dict:
    """Zero-shot accuracy on held-out object pictures, clean and under a 5-step PGD-L2 attack of radius 0.5 and 1."""
    import open_clip

    from vqclip.spelling.render import item_rng
    from vqclip.testbed.small_clip import SMALL_PREPROCESS, pgd_l2
    from vqclip.testbed.world import class_prompt, draw_object, to_tensor

    world = cfg.world()
    pictures = [draw_object(world, world.classes[i % len(world.classes)], item_rng(cfg.seed, "eval-obj", "x", i))[0]
                for i in range(n)]
    x = to_tensor(pictures).float() / 255
    y = torch.tensor([i % len(world.classes) for i in range(n)])
    mean, std = (torch.tensor(SMALL_PREPROCESS[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        text = model.encode_text(open_clip.tokenize([class_prompt(c) for c in world.classes], context_length=16),
                                 normalize=True)

    def logits(v):
        return 100 * model.encode_image((v - mean) / std, normalize=True) @ text.T

    def acc(v):
        with torch.no_grad():
            return round(float((logits(v).argmax(1) == y).float().mean()), 4)

    def attacked(eps):
        return pgd_l2(lambda v: torch.nn.functional.cross_entropy(logits(v), y), x, eps, 5,
                      torch.Generator().manual_seed(0))

    return {"clean": acc(x), "robust_0.5": acc(attacked(0.5)), "robust_1": acc(attacked(1.0))}


def draw(a) -> None:
    import numpy as np
    from PIL import Image

    from vqclip.generation import generate_many, load_models
    from vqclip.testbed.config import QUICK_CLASSES
    from vqclip.testbed.detector_files import WorldTextReader, load_object_classifier
    from vqclip.testbed.generate import PAGE, TEMPLATES, _clip_zero_shot

    folder = Path(a.clip)
    models = load_models(clip=f"local-dir:{folder / 'clip'}", pretrained=None, device="cpu", precision="fp32",
                         vqgan_checkpoint=str(Path(a.models) / "vqgan.safetensors"))
    settings = dict(recipe=a.recipe, size=(a.size, a.size), steps=a.steps, lr=a.lr, cutn=a.cutn)
    if a.page:
        page = folder / "page.png"
        Image.new("RGB", (a.size, a.size), PAGE).save(page)
        settings["init_image"] = str(page)
    seeds = [int(s) for s in a.seeds.split(",")]
    prompts = [TEMPLATES[t].format(c) for t in ("word", "phrase") for c in QUICK_CLASSES]
    results = generate_many(prompts, spaces=["clip"], seeds=seeds, models=models, group_size=6, **settings)
    images = [np.asarray(r.image.convert("RGB")) for r in results]
    reads = WorldTextReader(Path(a.models) / "text_detector.safetensors").read(images)
    objects, _ = load_object_classifier(Path(a.models) / "object_classifier.safetensors").predict(images)
    sees = _clip_zero_shot(models.clip, images, QUICK_CLASSES)
    rows = []
    for k, (prompt, seed) in enumerate((p, s) for p in prompts for s in seeds):
        cls = prompt.split()[-1]
        rows.append({"prompt": prompt, "template": "word" if prompt == cls else "phrase", "class": cls, "seed": seed,
                     "text": bool(reads[k]), "read": reads[k][0].text if reads[k] else None,
                     "object": objects[k], "object_seen": objects[k] == cls, "clip_sees": sees[k] == cls})
    out = folder / a.tag
    out.mkdir(parents=True, exist_ok=True)
    side = 2 * a.size
    grid = Image.new("RGB", (len(seeds) * side, len(prompts) * side), "white")
    for k, r in enumerate(results):
        grid.paste(r.image.resize((side, side), Image.Resampling.NEAREST), ((k % len(seeds)) * side,
                                                                            (k // len(seeds)) * side))
    grid.save(out / "grid.png")
    (out / "rows.json").write_text(json.dumps({"settings": {**vars(a), "func": None}, "rows": rows}, indent=0))
    print(json.dumps(summary(rows)))


def summary(rows: list[dict]) -> dict:
    out = {}
    for t in ("word", "phrase"):
        mine = [r for r in rows if r["template"] == t]
        out[t] = {k: f"{sum(bool(r.get(k)) for r in mine)}/{len(mine)}"
                  for k in ("text", "object_seen", "clip_sees", "person_sees")}
    return out


def table(a) -> None:
    """The docs' tables from the shipped records: the CLIPs, then every generation setting tried."""
    data = json.loads(Path(a.data).read_text(encoding="utf-8"))
    print("| CLIP | training | clean | PGD-L2 0.5 | PGD-L2 1 |\n|---|---|---|---|---|")
    for name, c in data["clips"].items():
        print(f"| {name} | {c['training']} | " + " | ".join("–" if c[k] is None else f"{100 * c[k]:.1f} %"
                                                      for k in ("clean", "robust_0.5", "robust_1")) + " |")
    print("\n| CLIP | generator | bare word: text / object (judge) / CLIP sees | phrase: text / object (judge) / "
          "object (person) / CLIP sees |\n|---|---|---|---|")
    for run in data["runs"]:
        s = summary(run["rows"])
        w, p = s["word"], s["phrase"]
        person = p["person_sees"] if any("person_sees" in r for r in run["rows"]) else "–"
        print(f"| {run['clip']} | {run['generator']} | {w['text']} / {w['object_seen']} / {w['clip_sees']} | "
              f"{p['text']} / {p['object_seen']} / {person} / {p['clip_sees']} |")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(required=True)
    m = sub.add_parser("models")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=0)
    m.set_defaults(func=models)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--init", default=None, help="a folder written by train: fine-tune its CLIP")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--pairs", type=int, default=40000)
    t.add_argument("--width", type=int, default=8)
    t.add_argument("--lr", type=float, default=8e-3)
    t.add_argument("--warmup", type=int, default=300)
    t.add_argument("--crop", type=float, default=1.0)
    t.add_argument("--eps", type=float, default=0.0)
    t.add_argument("--ramp", type=float, default=0.3)
    t.set_defaults(func=train)
    d = sub.add_parser("draw")
    d.add_argument("--clip", required=True, help="a folder written by train")
    d.add_argument("--models", required=True, help="the world-models/ folder written by models")
    d.add_argument("--recipe", default="vqclip")
    d.add_argument("--steps", type=int, default=300)
    d.add_argument("--lr", type=float, default=0.1)
    d.add_argument("--size", type=int, default=64)
    d.add_argument("--cutn", type=int, default=8)
    d.add_argument("--seeds", default="0,1")
    d.add_argument("--page", action="store_true", help="start from the blank page instead of random codes")
    d.add_argument("--tag", default="draw")
    d.set_defaults(func=draw)
    b = sub.add_parser("table")
    b.add_argument("data", nargs="?", default="docs/data/world_clip_draws.json")
    b.set_defaults(func=table)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    a.func(a)


if __name__ == "__main__":
    sys.exit(main())
