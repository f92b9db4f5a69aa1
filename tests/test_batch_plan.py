"""The job plan, shards and the batch-folder checks (no models)."""

import pytest

from test_batch_support import make_batch, run_fake
from vqclip.batch import check_batch_dir, make_plan, parse_shard, resolve_shard, shard_from_env, shard_jobs
from vqclip.batch.promptfile import PromptItem
from vqclip.errors import VqclipError


def test_plan_is_prompts_x_seeds_x_spaces_with_item_seed_overrides():
    items = [PromptItem("apple", "apple"), PromptItem("pear", "pear", seeds=(7,)), PromptItem("fig", "fig")]
    jobs = make_plan(items, ("clip", "learn", "forget"), (0, 1))
    assert len(jobs) == 2 * 3 + 1 * 3 + 2 * 3
    assert [j.index for j in jobs] == list(range(len(jobs)))
    assert [(j.item.id, j.seed, j.space) for j in jobs[:4]] == [("apple", 0, "clip"), ("apple", 0, "learn"),
                                                                ("apple", 0, "forget"), ("apple", 1, "clip")]
    assert {j.seed for j in jobs if j.item.id == "pear"} == {7}
    assert len({j.id for j in jobs}) == len(jobs)
    assert str(jobs[4].folder) == "apple/learn-s1" and jobs[4].id == "apple/learn-s1"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_shards_cover_every_job_exactly_once(n):
    items = [PromptItem(f"p{i}", f"p{i}") for i in range(7)]
    jobs = make_plan(items, ("clip", "learn", "forget"), (0, 1))
    shares = [shard_jobs(jobs, parse_shard(f"{i}/{n}")) for i in range(n)]
    ids = [j.id for share in shares for j in share]
    assert sorted(ids) == sorted(j.id for j in jobs) and len(ids) == len(set(ids))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert shares == [shard_jobs(jobs, parse_shard(f"{i}/{n}")) for i in range(n)]  # deterministic


def test_shard_from_torchrun_environment_and_flag():
    assert shard_from_env({}) is None
    s = shard_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (s.index, s.count, s.local_rank, s.source) == (3, 4, 1, "torchrun")
    assert resolve_shard(None, {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}).index == 1
    assert resolve_shard("2/3", {}).count == 3
    with pytest.raises(VqclipError, match="disagrees"):
        resolve_shard("0/3", {"RANK": "1", "WORLD_SIZE": "2"})
    for bad in ("1", "3/3", "a/b", "0/0"):
        with pytest.raises(VqclipError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(VqclipError, match="RANK"):
        shard_from_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_folder_checks_new_resume_extend_and_refusals(tmp_path):
    spec, base = make_batch(tmp_path)
    out = tmp_path / "out"
    assert check_batch_dir(out, spec.to_record()) == "new"
    run_fake(spec, base, out, jobs=spec.jobs[:2])
    assert check_batch_dir(out, spec.to_record()) == "resume"
    more, _ = make_batch(tmp_path, seeds=(0, 1, 2))
    assert check_batch_dir(out, more.to_record()) == "extend"
    other, _ = make_batch(tmp_path, steps=3)
    with pytest.raises(VqclipError, match=r"different settings \(steps: 1 -> 3\).*--overwrite"):
        check_batch_dir(out, other.to_record())
    assert check_batch_dir(out, other.to_record(), overwrite=True) == "replace"
    changed, _ = make_batch(tmp_path, prompt_text="prompt,id\napple,apple\npear:2,pear\n", name="q.csv")
    with pytest.raises(VqclipError, match="item 'pear'"):
        check_batch_dir(out, changed.to_record())
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(VqclipError, match="no batch.json"):
        check_batch_dir(stranger, spec.to_record())
    (tmp_path / "afile").write_text("x")
    with pytest.raises(VqclipError, match="not a file"):
        check_batch_dir(tmp_path / "afile", spec.to_record())


def test_replacing_a_batch_moves_the_old_manifest_aside_and_redoes_jobs(tmp_path):
    from vqclip.batch import open_batch_dir
    from vqclip.io import read_jsonl

    spec, base = make_batch(tmp_path, spaces=("clip",), seeds=(0,))
    out = tmp_path / "out"
    run_fake(spec, base, out)
    other, base3 = make_batch(tmp_path, spaces=("clip",), seeds=(0,), steps=3)
    open_batch_dir(out, other.to_record(), check_batch_dir(out, other.to_record(), overwrite=True))
    assert list(out.glob("manifest.replaced-*.jsonl")) and not (out / "manifest.jsonl").exists()
    summary = run_fake(other, base3, out)
    assert summary.ok == 2 and summary.done_before == 0
    assert {line["fingerprint"] for line in read_jsonl(out / "manifest.jsonl")} == {other.job_fp(j) for j in other.jobs}


def test_job_fingerprints_change_with_what_determines_the_image(tmp_path):
    spec, _ = make_batch(tmp_path, spaces=("clip", "learn"), seeds=(0, 1))
    fps = [spec.job_fp(j) for j in spec.jobs]
    assert len(set(fps)) == len(fps)
    again, _ = make_batch(tmp_path, spaces=("clip", "learn"), seeds=(0, 1))
    assert [again.job_fp(j) for j in again.jobs] == fps
    proj = dict(spec.projections, learn="/x/learn.safetensors")
    moved = type(spec)(**{**spec.__dict__, "projections": proj})
    changed = [a != b for a, b in zip(fps, (moved.job_fp(j) for j in spec.jobs))]
    assert changed == [j.space == "learn" for j in spec.jobs]
