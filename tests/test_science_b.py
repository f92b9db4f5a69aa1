"""The science tier, group B (tests/testbed_stages.py): the world models, the quick testbed's CLIP seed 2, the
paper's directions on the median over seeds 0-2, and generation of the phrases on seed 0 in clip and learn space."""

from __future__ import annotations


import pytest

from testbed_stages import QUICK_SEEDS, check_seed_run, generation, quick_seed, world_models

pytestmark = pytest.mark.testbed


def test_world_models_are_good_enough_judges(tmp_path_factory):
    """The text detector the generation's directions rest on, and the VQGAN that draws, on held-out pictures."""
    models = world_models(tmp_path_factory)
    detector, vqgan = models["detector"]["heldout"], models["vqgan"]["heldout"]
    assert detector["clean"]["text_present"] >= 0.95 and detector["clean"]["text_false_positive_on_clutter"] <= 0.05
    assert detector["clean"]["object"] >= 0.9
    assert vqgan["psnr"] > 15 and vqgan["codebook_usage"] > 0.5


def test_quick_testbed_writes_a_loadable_clip_projections_and_reports_seed_2(tmp_path_factory):
    root, result = quick_seed(tmp_path_factory, 2)
    check_seed_run(root, 2, result)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The reduced testbed on three seeds: world, small CLIP, five-tuples, learn / forget and evaluations per seed,
    and the directions on the median over the seeds (docs/testbed.md says why the median)."""
    from vqclip.testbed.config import TestbedConfig
    from vqclip.testbed.run import summarise_seeds

    results = {}
    for seed in QUICK_SEEDS:
        root, results[seed] = quick_seed(tmp_path_factory, seed)
    seconds = sum(r["seconds"]["total"] for r in results.values())
    return root, summarise_seeds(TestbedConfig.quick(), results, root, seconds)


def test_quick_testbed_reproduces_the_papers_directions(quick_run):
    root, summary = quick_run
    failed = [f"{c['claim']}: {c['detail']}" for c in summary["checks"] if not c["passed"]]
    assert not failed, "\n".join(failed)
    assert summary["all_passed"] and len(summary["checks"]) == 5 and summary["seeds"] == list(QUICK_SEEDS)
    assert "median" in (root / "summary.md").read_text()


def test_median_checks_are_the_medians_of_the_seeds(quick_run):
    from vqclip.testbed.report import direction_values

    _, summary = quick_run
    per_seed = [direction_values(run["rows"]) for run in summary["per_seed"].values()]
    for check in summary["checks"]:
        assert check["value"] == sorted(v[check["key"]] for v in per_seed)[1]


def test_generation_learn_writes_the_phrase_more_than_clip(tmp_path_factory):
    """"an image of a ..." in clip and learn space (6 x 3 x 2 = 36 images): learn writes the phrase more often."""
    _, _, summary = generation(tmp_path_factory, templates=("phrase",), spaces=("clip", "learn"))
    failed = [f"{c['claim']}: {c['detail']}" for c in summary["checks"] if not c["passed"]]
    assert not failed, "\n".join(failed)
    assert [c["key"] for c in summary["checks"]] == ["learn_more_text"]
