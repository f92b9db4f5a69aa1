"""The science tier's costly stages, shared by tests/test_science_a.py and tests/test_science_b.py.

Under xdist (README: `-n 2 --dist loadfile --no-loadscope-reorder`) the two files are two groups of about equal
cost (one thread each, measured), each on one worker from the start, the short tests filling the gaps. A stage (a
CLIP per seed; the world models) is computed once by `conftest.once`, by whichever worker needs it first.
Group A: CLIP seeds 0 and 1, the CLI's reuse of seed 0, then the bare-word generation on seed 0. Group B: the world
models, CLIP seed 2, the median over the three seeds, the phrase generation. (xdist's `loadgroup` marks would
say the same per test, but pytest 9 no longer lets xdist tag node ids, pytest-dev/pytest-xdist#1386: the groups
are silently ignored; files group reliably.)
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import once, shared_folder

QUICK_SEEDS = (0, 1, 2)
# Issue 27's guard: vqclip's own text direction, as a negative target, writes the bare word on fewer images than
# clip space (a direction, no margin; measured over CLIP seeds 0-5 on both kernel paths, README and docs/testbed.md).
GUARD_METHOD = "textoff"


def quick_seed(tmp_path_factory, seed: int) -> tuple[Path, dict]:
    """(the shared testbed folder, run_testbed's results) of the reduced testbed for one CLIP seed, in seed-N/."""
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.run import run_testbed

    root = shared_folder(tmp_path_factory) / "testbed"

    def run() -> dict:
        run_testbed(TestbedConfig.quick(seed), root / f"seed-{seed}", progress=False)
        return json.loads((root / f"seed-{seed}" / "results.json").read_text())

    return root, once(tmp_path_factory, f"testbed-seed-{seed}", run)


def world_models(tmp_path_factory) -> dict:
    """The world VQGAN and the judges with their default recipes, as `vqclip testbed --generate` trains them."""
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.generate import load_world_models, world_models_stage

    folder = shared_folder(tmp_path_factory) / "world"
    made = once(tmp_path_factory, "world-models",
                lambda: world_models_stage(TestbedConfig.quick(0).world(), folder, progress=False)["folder"])
    return load_world_models(made)


def generation(tmp_path_factory, **config) -> tuple[Path, Path, dict]:
    """(the generation folder, the summary folder, the summary) of the generation experiment on the seed-0 quick
    CLIP and its projections with the world models: `vqclip batch` from a blank page with generation seeds 0-2
    (with fewer, one image moves a share by 17 points), `vqclip score --detector world:...`, the object classifier,
    the table, the grid and the directions, under the default recipe (the paper's); only the cells the directions
    read (`config`)."""
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.generate import GenerationConfig, run_generation

    root, _ = quick_seed(tmp_path_factory, 0)
    models = world_models(tmp_path_factory)
    out = tmp_path_factory.mktemp("generation")
    config = GenerationConfig(**config)
    return root / "seed-0" / config.gen_dir, out, run_generation(
        {0: root / "seed-0"}, TestbedConfig.quick(0).world(), out, config, models_dir=models["folder"],
        progress=False)


def check_seed_run(root: Path, seed: int, result: dict) -> None:
    """One seed's run is complete: results, a loadable CLIP, both projections for it, reports, the attack set."""
    from vqclip.models.clip import load_clip
    from vqclip.projections import load_projection

    out = root / f"seed-{seed}"
    assert result == json.loads((out / "results.json").read_text()) and result["config"]["seed"] == seed
    clip = load_clip(f"local-dir:{out / 'clip'}", device="cpu")
    for space, dim in (("learn", 16), ("forget", 64)):  # the presets' d/D = 1/8 and 1/2 of D = 128
        projection = load_projection(out / f"{space}.safetensors", space, clip.embed_dim)
        projection.check_clip(clip.identity, clip.embed_dim)
        assert projection.dim == dim == result["rows"][space]["dim"]
    assert 0 <= result["attacked_object_probe"] <= 1
    report = (out / "results.md").read_text()
    for space in ("clip", "learn", "forget"):
        assert f"| {space} |" in report
    annotation = json.loads((out / "attacks" / "annotation.json").read_text())
    assert len(annotation) == 2 * result["config"]["n_attacks"]
    assert all((out / "attacks" / name).is_file() for name in annotation)
