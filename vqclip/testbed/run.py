"""The spelling testbed end to end: world -> small CLIP -> five-tuples -> learn / forget -> evaluations -> table.

The stages are in stages.py, the configuration in config.py, the directions and reports in report.py; here one
run, and a run per seed with the directions on the median over the seeds.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import torch

from ..errors import bad_arg
from .config import TestbedConfig
from .progress import bar as _bar
from .report import check_directions, check_median, markdown_report, markdown_summary
from .stages import (encode_uint8, load_spaces, measure, object_probe, train_clip_stage, train_projections,
                     tuple_features, write_attack_dataset, write_text_direction)


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
    textoff = write_text_direction(features, clip.identity, out, config.seed)
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
        "attacked_object_probe": probe, "textoff": textoff,
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


def run_testbed_seeds(config: TestbedConfig, seeds: Sequence[int], out: str | os.PathLike, progress: bool = True,
                      reuse_clip: bool = False) -> dict:
    """`run_testbed` for each seed into `out/seed-N/`, and the directions on the median over the seeds
    (`out/summary.json`, `out/summary.md`)."""
    from ..io import writable_folder as writable_dir  # a read-only or full disk: exit 74

    if not seeds or len(set(seeds)) != len(seeds):
        raise bad_arg("--seeds", "needs at least one seed, each listed once", list(seeds), "Use e.g. --seeds 0,1,2.")
    start = time.perf_counter()
    out = writable_dir(Path(out).expanduser(), "--out")
    results = {int(seed): run_testbed(replace(config, seed=int(seed)), out / f"seed-{seed}", progress, reuse_clip)
               for seed in seeds}
    return summarise_seeds(config, results, out, time.perf_counter() - start)


def summarise_seeds(config: TestbedConfig, results: Mapping[int, dict], out: Path, seconds: float) -> dict:
    """The directions on the median over the seeds' results (`run_testbed`'s), written to `out/summary.{json,md}`."""
    from ..io import write_json, write_text

    checks = check_median({seed: r["rows"] for seed, r in results.items()}, config.margins)
    summary = {
        "seeds": list(results), "checks": checks, "all_passed": all(c["passed"] for c in checks),
        "per_seed": {seed: {k: r[k] for k in ("rows", "checks", "all_passed", "attacked_object_probe")}
                     for seed, r in results.items()},
        "config": {k: v for k, v in config.to_dict().items() if k != "seed"},
        "seconds": round(seconds, 1), "machine": next(iter(results.values()))["machine"],
    }
    write_json(out / "summary.json", summary)
    write_text(out / "summary.md", markdown_summary(summary))
    return summary
