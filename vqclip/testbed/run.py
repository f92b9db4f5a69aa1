"""The spelling testbed end to end: world -> small CLIP -> five-tuples -> learn / forget -> evaluations -> table.

Every stage goes through the code a user runs on real CLIP models: `load_clip("local-dir:...")`, the spelling
trainer and presets (`vqclip.spelling.train`), the retrieval metrics and the typographic-attack evaluator.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..errors import bad_arg
from .world import CAPTIONED_CLASS_WORDS, CLASSES, DEFAULT_MIX, EXTRA_WORDS, World

SPACE_ORDER = ("clip", "learn", "forget")
TYPO_TEMPLATE = "an image of a {}"  # the class prompt of the five-tuples; every class name starts with a consonant


@dataclass
class Margins:
    """How far apart numbers must be for a direction to count as reproduced (fractions, not points).

    Chosen after running the quick configuration on several seeds. The test suite holds the median over seeds
    0-2 to them; docs/testbed.md lists every run, including the single runs that miss one.
    """

    reads: float = 0.25  # clip: clean − attacked accuracy at least this
    forget_recovers: float = 0.5  # forget wins back at least this share ("most") of CLIP's attack loss
    forget_keeps_clean: float = 0.08  # forget's clean accuracy at most this below CLIP's
    learn_keeps_words: float = 0.1  # learn's word retrieval (x_t -> y_t) at most this below CLIP's
    learn_drops_objects: float = 0.15  # learn's clean object accuracy at least this below CLIP's


# The reduced world of the test suite: six shapes and fourteen short words, so that 1000 CLIP steps learn them all.
QUICK_CLASSES = ("star", "moon", "ring", "cross", "heart", "bolt")
QUICK_WORDS = ("apple", "house", "tiger", "cloud", "lemon", "horse", "bread", "train")
# Six shapes are learned sooner than twelve: the quick world can show more labelled objects without the model
# learning to read before it learns to see (then it trusts labels almost entirely; docs/testbed.md).
QUICK_MIX = {"object": 0.35, "word": 0.2, "labelled": 0.2, "captioned": 0.25}


@dataclass
class TestbedConfig:
    """The world, the small CLIP, the projections and the evaluation of one run; `quick()` is the test suite's."""

    seed: int = 0
    # world
    image_size: int = 64
    classes: tuple[str, ...] = CLASSES
    extra_words: tuple[str, ...] = EXTRA_WORDS
    n_nonsense: int = 12
    nonsense_length: tuple[int, int] = (3, 8)
    label_box: float = 0.5
    object_radius: tuple[float, float] = (0.2, 0.34)
    label_band: float = 0.35
    mix: dict = field(default_factory=lambda: dict(DEFAULT_MIX))  # shares of the kinds of training pairs
    captioned_class_words: float = CAPTIONED_CLASS_WORDS  # captioned objects that carry another class's name
    # small CLIP
    n_pairs: int = 24000
    clip_steps: int = 3000
    clip_batch: int = 128
    clip_lr: float = 8e-3
    clip_warmup: int = 300
    clip_width: int = 8
    clip_text_width: int = 32
    embed_dim: int = 128
    # projections (the standard trainer; None takes the preset, with d scaled to this CLIP's D)
    n_tuples: int = 6000
    include_class_words: bool = False  # let the five-tuples write class names (the attack words) too
    proj_epochs: int = 300
    proj_lr: float = 1e-3
    learn_dim: int | None = None
    forget_dim: int | None = None
    learn_weights: str | None = None
    forget_weights: str | None = None
    gamma: float | None = None
    # evaluation
    n_attacks: int = 600
    margins: Margins = field(default_factory=Margins)

    @classmethod
    def quick(cls, seed: int = 0, **overrides) -> "TestbedConfig":
        """The reduced configuration for the test suite: 6 classes, 20 words, 1000 CLIP steps (2.5 min on 2 cores)."""
        base = dict(seed=seed, classes=QUICK_CLASSES, extra_words=QUICK_WORDS, n_nonsense=6, nonsense_length=(3, 5),
                    label_box=0.0, mix=QUICK_MIX, n_pairs=8000, clip_steps=1000, n_tuples=3000, n_attacks=240)
        return cls(**{**base, **overrides})

    def __post_init__(self):
        self.classes, self.extra_words = tuple(self.classes), tuple(self.extra_words)
        self.nonsense_length, self.object_radius = tuple(self.nonsense_length), tuple(self.object_radius)
        if isinstance(self.margins, Mapping):
            self.margins = Margins(**self.margins)
        flags = {"n_pairs": "--pairs", "clip_steps": "--steps", "clip_batch": "clip_batch", "n_attacks": "--attacks"}
        for name, flag in flags.items():
            if int(getattr(self, name)) < 1:
                raise bad_arg(flag, "must be a positive integer", getattr(self, name), "Use the defaults or --quick.")
        if self.n_tuples < 60:
            raise bad_arg("--tuples", "needs at least 60 five-tuples for train / val / test splits", self.n_tuples,
                          "Use e.g. 3000.")
        self.check_projection_settings()

    def check_projection_settings(self) -> None:
        """The trainer's own checks (epochs, lr, seed, d, weights, gamma) up front, not after minutes of CLIP
        training, under the testbed's flag names."""
        from ..spelling.losses import resolve_preset
        from ..spelling.train import TrainConfig

        TrainConfig(epochs=self.proj_epochs, lr=self.proj_lr, seed=self.seed).check({"lr": "--proj-lr"})
        for space, dim, weights in (("learn", self.learn_dim, self.learn_weights),
                                    ("forget", self.forget_dim, self.forget_weights)):
            resolve_preset(space, dim, weights, self.gamma, self.embed_dim,
                           flags={"dim": f"--{space}-dim", "weights": f"--{space}-weights"})

    def world(self) -> World:
        return World(seed=self.seed, image_size=self.image_size, classes=self.classes, extra_words=self.extra_words,
                     n_nonsense=self.n_nonsense, nonsense_length=self.nonsense_length, label_box=self.label_box,
                     object_radius=self.object_radius, label_band=self.label_band, mix=dict(self.mix),
                     captioned_class_words=self.captioned_class_words)

    def clip_recipe(self) -> dict:
        """Everything that decides the small CLIP's weights (a saved CLIP is reused only when this matches)."""
        keys = ("seed", "image_size", "classes", "extra_words", "n_nonsense", "nonsense_length", "label_box",
                "object_radius", "label_band", "mix", "captioned_class_words", "n_pairs",
                "clip_steps", "clip_batch", "clip_lr", "clip_warmup", "clip_width",
                "clip_text_width", "embed_dim")
        d = self.to_dict()
        return {k: d[k] for k in keys}

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("classes", "extra_words", "nonsense_length", "object_radius"):
            d[k] = list(d[k])
        return d


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", disable=not enabled, leave=False, dynamic_ncols=True)


def train_clip_stage(world: World, config: TestbedConfig, out: Path, progress: bool = True,
                     reuse: bool = False) -> dict:
    """Generate the contrastive pairs, train the small CLIP, save it as `out/clip` (open_clip local-dir).

    With `reuse`, a CLIP already in `out/clip` whose recorded recipe matches this configuration is kept as is.
    """
    from ..io import write_json
    from .small_clip import ClipTrainConfig, save_small_clip, small_clip_config, train_small_clip
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
                                warmup=config.clip_warmup, seed=config.seed)
    with _bar(config.clip_steps, "small CLIP: contrastive training", progress) as bar:
        def on_step(rec):
            bar.update(1)
            if rec["step"] % 25 == 0:
                bar.set_postfix(loss=f"{rec['loss']:.3f}")

        model, history = train_small_clip(model_cfg, images, captions, train_cfg, on_step)
    clip_id = save_small_clip(model, model_cfg, out / "clip")
    record = {"clip": clip_id, "recipe": config.clip_recipe(), "model_cfg": model_cfg, "train": train_cfg.to_dict(),
              "pairs": {k: kinds.count(k) for k in sorted(set(kinds))},
              "final_loss": round(sum(r["loss"] for r in history[-20:]) / min(20, len(history)), 4),
              "seconds": {"world": round(gen_seconds, 1), "train": round(history[-1]["seconds"], 1)}}
    write_json(record_path, record)
    return {**record, "reused": False}


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


# (margin field, claim, at least / at most, what the number is, how the margin reads): the paper's qualitative
# claims made checkable.
DIRECTIONS = (
    ("reads", "clip reads: attacked accuracy falls well below clean accuracy", ">=", "clip clean - attacked",
     "needs >= {}"),
    ("forget_recovers", "forget recovers most of the attack loss", ">=", "share of clip's attack loss forget wins back",
     "needs >= {}"),
    ("forget_keeps_clean", "forget keeps clean accuracy", "<=", "clip clean - forget clean", "may fall by <= {}"),
    ("learn_keeps_words", "learn keeps or improves word retrieval", "<=", "clip - learn word retrieval",
     "may fall by <= {}"),
    ("learn_drops_objects", "learn loses object accuracy on clean images", ">=", "clip clean - learn clean",
     "must fall by >= {}"),
)


def direction_values(rows: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """The number behind each direction, from one run's rows (fractions). No attack loss means nothing recovered."""
    c, l, f = rows["clip"], rows["learn"], rows["forget"]
    loss = c["clean_accuracy"] - c["attacked_accuracy"]
    return {"reads": loss,
            "forget_recovers": (f["attacked_accuracy"] - c["attacked_accuracy"]) / loss if loss > 0 else 0.0,
            "forget_keeps_clean": c["clean_accuracy"] - f["clean_accuracy"],
            "learn_keeps_words": c["word_retrieval"] - l["word_retrieval"],
            "learn_drops_objects": c["clean_accuracy"] - l["clean_accuracy"]}


def _checks(values: Mapping[str, float], margins: Margins, details: Mapping[str, str]) -> list[dict]:
    out = []
    for key, claim, sense, _, rule in DIRECTIONS:
        limit = getattr(margins, key)
        passed = values[key] >= limit if sense == ">=" else values[key] <= limit
        out.append({"claim": claim, "key": key, "value": values[key], "margin": limit, "passed": bool(passed),
                    "detail": f"{details[key]} ({rule.format(limit)})"})
    return out


def check_directions(rows: Mapping[str, Mapping[str, float]], margins: Margins) -> list[dict]:
    """The paper's three qualitative claims on one run, each with the numbers and the margin it was held to."""
    c, l, f = rows["clip"], rows["learn"], rows["forget"]
    v = direction_values(rows)
    details = {
        "reads": f"clean {c['clean_accuracy']:.3f} - attacked {c['attacked_accuracy']:.3f} = {v['reads']:.3f}",
        "forget_recovers": f"recovers {v['forget_recovers']:.2f} of the loss: attacked {c['attacked_accuracy']:.3f} -> "
                           f"{f['attacked_accuracy']:.3f}",
        "forget_keeps_clean": f"clean {c['clean_accuracy']:.3f} -> {f['clean_accuracy']:.3f}",
        "learn_keeps_words": f"word retrieval {c['word_retrieval']:.3f} -> {l['word_retrieval']:.3f}",
        "learn_drops_objects": f"clean {c['clean_accuracy']:.3f} -> {l['clean_accuracy']:.3f}",
    }
    return _checks(v, margins, details)


def check_median(runs: Mapping[int, Mapping[str, Mapping[str, float]]], margins: Margins) -> list[dict]:
    """The directions on the median over seeds ({seed: rows}) of each direction's number.

    One small CLIP trained from scratch is one draw: which features it learns first depends on the seed and even
    on the CPU's float kernels. The median of a few draws is what the world and the recipe make typical.
    """
    per_seed = {seed: direction_values(rows) for seed, rows in runs.items()}
    values = {key: statistics.median(v[key] for v in per_seed.values()) for key, *_ in DIRECTIONS}
    details = {key: f"median {values[key]:.3f} of {what} over seeds {', '.join(map(str, per_seed))} "
                    f"({', '.join(f'{v[key]:.3f}' for v in per_seed.values())})"
               for key, _, _, what, _ in DIRECTIONS}
    return _checks(values, margins, details)


COLUMNS = (("clean_accuracy", "clean acc."), ("attacked_accuracy", "attacked acc."),
           ("attack_win_rate", "attack word wins"), ("word_retrieval", "word retrieval x_t→y_t"),
           ("word_retrieval_real", "(real)"), ("word_retrieval_nonsense", "(nonsense)"),
           ("string_to_image", "y_t→x_t"), ("word_on_object", "x_it→y_t"))


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def markdown_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """One row per space, percentages."""
    lines = ["| space | dim | " + " | ".join(label for _, label in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for name, row in rows.items():
        lines.append(f"| {name} | {row.get('dim') or 'D'} | " + " | ".join(_pct(row.get(k)) for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(result: Mapping[str, Any]) -> str:
    """results.md: the table, the directions checked, and how the numbers were made."""
    cfg = result["config"]
    lines = ["# vqclip testbed", "",
             f"Synthetic world seed {cfg['seed']}; small CLIP trained {cfg['clip_steps']} steps on "
             f"{cfg['n_pairs']} pairs; {cfg['n_tuples']} five-tuples; {cfg['n_attacks']} attacked objects. "
             "Accuracies are zero-shot over the object classes (prompt \"an image of a {class}\"); word retrieval "
             "is x_t -> y_t top-1 on the test tuples.", "",
             markdown_table(result["rows"]), "", "## Directions", ""]
    for c in result["checks"]:
        lines.append(f"- [{'x' if c['passed'] else ' '}] {c['claim']}: {c['detail']}")
    lines += ["", f"A linear read-out of CLIP's features recognises {_pct(result['attacked_object_probe'])} % of the "
              "attacked objects (ridge classifier, half fit, half scored): no projection can recover more."]
    lines += ["", f"Total time {result['seconds']['total']:.0f} s ({result['machine']})."]
    return "\n".join(lines) + "\n"


def run_testbed(config: TestbedConfig, out: str | os.PathLike, progress: bool = True, reuse_clip: bool = False) -> dict:
    """Run every stage on the CPU and write clip/, learn/forget projections, attacks/, results.{json,md} to `out`."""
    from ..io import writable_folder as writable_dir  # a read-only or full disk: exit 74
    from ..io import write_json, write_text
    from ..models.clip import load_clip
    from .world import attack_set, five_tuples, tuple_words

    start = time.perf_counter()
    out = writable_dir(Path(out).expanduser(), "--out")
    world = config.world()
    clip_info = train_clip_stage(world, config, out, progress, reuse_clip)
    clip = load_clip(clip_info["clip"], device="cpu", precision="fp32")
    t = time.perf_counter()
    words = tuple_words(world, config.include_class_words)
    with _bar(config.n_tuples, "world: five-tuples", progress) as bar:
        tuples = five_tuples(world, config.n_tuples, words, progress=bar.update)
    features = tuple_features(clip, world, tuples)
    with _bar(config.n_attacks, "world: typographic attacks", progress) as bar:
        attacks = attack_set(world, config.n_attacks, progress=bar.update)
    write_attack_dataset(world, attacks, out / "attacks")
    data_seconds = time.perf_counter() - t
    projections = train_projections(features, config, clip.identity, out, progress)
    t = time.perf_counter()
    spaces = load_spaces(out, clip)
    measured = measure(clip, spaces, features, out / "attacks", progress)
    probe = object_probe(encode_uint8(clip, attacks.attacked), attacks.true_ids)
    rows = measured["rows"]
    for name, sp in spaces.items():
        rows[name]["dim"] = sp.dim
    checks = check_directions(rows, config.margins)
    result = {
        "config": config.to_dict(), "world": world.to_dict(), "clip": clip_info, "projections": projections,
        "tuple_words": "all words" if config.include_class_words else "all words except the class names",
        "split_sizes": features.split_sizes(), "rows": rows, "checks": checks,
        "all_passed": all(c["passed"] for c in checks), "typographic": measured["typographic"],
        "attacked_object_probe": probe,
        "seconds": {**({} if clip_info["reused"] else clip_info["seconds"]), "data": round(data_seconds, 1),
                    "projections": round(sum(p["seconds"] for p in projections.values()), 1),
                    "evaluation": round(time.perf_counter() - t, 1),
                    "total": round(time.perf_counter() - start, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
    }
    write_json(out / "results.json", result)
    write_text(out / "results.md", markdown_report(result))
    return result


def markdown_summary(summary: Mapping[str, Any]) -> str:
    """summary.md: each seed's table, then the directions on the median over seeds."""
    lines = ["# vqclip testbed over seeds", "",
             f"Seeds {', '.join(map(str, summary['seeds']))}; every seed's own report is in seed-N/results.md. The "
             "directions are checked on the median over the seeds of each direction's number.", ""]
    for seed, run in summary["per_seed"].items():
        lines += [f"## Seed {seed}", "", markdown_table(run["rows"]),
                  f"Linear read-out of the attacked objects: {_pct(run['attacked_object_probe'])} %.", ""]
    lines += ["## Directions (median over seeds)", ""]
    for c in summary["checks"]:
        lines.append(f"- [{'x' if c['passed'] else ' '}] {c['claim']}: {c['detail']}")
    lines += ["", f"Total time {summary['seconds']:.0f} s ({summary['machine']})."]
    return "\n".join(lines) + "\n"


def run_testbed_seeds(config: TestbedConfig, seeds: Sequence[int], out: str | os.PathLike, progress: bool = True,
                      reuse_clip: bool = False) -> dict:
    """`run_testbed` for each seed into `out/seed-N/`, and the directions on the median over the seeds
    (`out/summary.json`, `out/summary.md`)."""
    from ..io import writable_folder as writable_dir  # a read-only or full disk: exit 74
    from ..io import write_json, write_text

    if not seeds or len(set(seeds)) != len(seeds):
        raise bad_arg("--seeds", "needs at least one seed, each listed once", list(seeds), "Use e.g. --seeds 0,1,2.")
    start = time.perf_counter()
    out = writable_dir(Path(out).expanduser(), "--out")
    results = {int(seed): run_testbed(replace(config, seed=int(seed)), out / f"seed-{seed}", progress, reuse_clip)
               for seed in seeds}
    checks = check_median({seed: r["rows"] for seed, r in results.items()}, config.margins)
    summary = {
        "seeds": list(results), "checks": checks, "all_passed": all(c["passed"] for c in checks),
        "per_seed": {seed: {k: r[k] for k in ("rows", "checks", "all_passed", "attacked_object_probe")}
                     for seed, r in results.items()},
        "config": {k: v for k, v in config.to_dict().items() if k != "seed"},
        "seconds": round(time.perf_counter() - start, 1), "machine": next(iter(results.values()))["machine"],
    }
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", markdown_summary(summary))
    return summary


def _read_record(path):
    """A record this testbed wrote earlier, or None when it is unreadable (then the step runs again)."""
    from ..untrusted import read_json

    try:
        return read_json(path)
    except (OSError, ValueError):
        return None
