"""`vqclip reproduce`: the paper's experiments end to end on tiny models, a fake photo set in the authors' format and
a fake OCR engine (no network); the real run on real weights behind --run-slow."""

from __future__ import annotations

import json
import socket
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from vqclip.cli import main
from vqclip.evaluate.objectjudge import DEFAULT_JUDGE_CLIP
from vqclip.evaluate.ocr import Detection
from vqclip.evaluate.textscore import PAPER_ANY_TEXT, wilson_interval
from vqclip.io import read_jsonl, sha256_file

OBJECTS = [("apple", ""), ("apple", "ipod"), ("cup", "good"), ("cup", ""), ("dog", "cat"), ("dog", "")]


def fake_paper_photos():
    """A stand-in for the authors' photo folder in the cache (one 20x20 picture per OBJECTS row, annotation.json)."""
    from vqclip.evaluate.typographic import paper_dataset_dir

    dest = paper_dataset_dir() / "photos"
    dest.mkdir(parents=True)
    for i in range(len(OBJECTS)):
        Image.new("RGB", (20, 20), (30 * i, 0, 0)).save(dest / f"{i}.png")
    (dest / "annotation.json").write_text(json.dumps(
        {f"{i}.png": {"true object": o, "typographic attack label": a} for i, (o, a) in enumerate(OBJECTS)}))
    return dest


class BrightnessReader:
    """A fake OCR engine: one detection whose confidence is the image's mean brightness (0..1)."""

    key = "fake-brightness"

    def __init__(self):
        self.images = 0

    def read(self, images):
        self.images += len(images)
        return [[Detection(((0, 0), (4, 0), (4, 4), (0, 4)), "word", float(im.mean()) / 255)] for im in images]


@pytest.fixture()
def fake_ocr(monkeypatch):
    from vqclip.reproduce import ocr

    reader = BrightnessReader()
    monkeypatch.setattr(ocr, "ocr_reader", lambda device="auto": reader)
    return reader


@pytest.fixture()
def projections(tiny_clip):
    """learn and forget projections where the registry would leave them for the tiny CLIP."""
    from vqclip.projections import projection_path, save_projection

    for seed, space in enumerate(("learn", "forget")):
        q, _ = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(seed)))
        save_projection(projection_path(space, tiny_clip.identity), q.T, space, tiny_clip.identity)


@pytest.fixture()
def words_file(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("apple,real\nhouse,real\nzezr,nonsense\nqwpx,nonsense\n")
    return path


@pytest.fixture()
def drive(monkeypatch, tmp_path):
    """The authors' Drive folder, faked: a zip holding the photos and `annotations.json` (the alias some copies use)."""
    from vqclip import downloads

    src = tmp_path / "drive" / "typographic_attack_dataset"
    src.mkdir(parents=True)
    entries = {}
    for i, (obj, attack) in enumerate(OBJECTS):
        Image.new("RGB", (40, 30), (40 * i, 120, 30)).save(src / f"IMG_{i}.JPG")
        entries[f"IMG_{i}.JPG"] = {"true object": obj, "typographic attack label": attack}
    (src / "annotations.json").write_text(json.dumps(entries))
    calls = []

    def fetch(url, output, progress):
        calls.append(url)
        with zipfile.ZipFile(output / "typographic_attack_dataset.zip", "w") as zf:
            for p in sorted(src.iterdir()):
                zf.write(p, f"typographic_attack_dataset/{p.name}")

    monkeypatch.setattr(downloads, "gdown_folder", fetch)
    return calls


def expected_any_text(batch, threshold):
    """(space, word_type) -> (k, n) computed from the images themselves, as BrightnessReader scores them."""
    counts = {}
    for line in read_jsonl(batch / "manifest.jsonl"):
        if line["status"] != "ok":
            continue
        mean = float(np.asarray(Image.open(batch / line["image"]).convert("RGB")).mean()) / 255
        for wt in (line["word_type"], "all"):
            k, n = counts.get((line["space"], wt), (0, 0))
            counts[(line["space"], wt)] = (k + (mean > threshold), n + 1)
    return counts


def test_all_runs_end_to_end_offline_and_resumes(tiny_model_flags, tiny_clip_id, projections, fake_ocr, drive,
                                                words_file, tmp_path, capsys):
    out = tmp_path / "report"
    cmd = ["reproduce", "all", "--words", str(words_file), "--scale", "0.001", "--size", "16", "16", "--steps", "1",
           "--out", str(out), "--grid-words", "2", "--judge-clip", "none", *tiny_model_flags]  # judge: own tests
    assert main(cmd) == 0
    assert "estimate" not in capsys.readouterr().err  # -q (in tiny_model_flags) hides info lines
    assert drive == ["https://drive.google.com/drive/folders/17v74pmQs2zHrs9sJ_8D0bfrz5ykB5ZW2"]
    report = json.loads((out / "report.json").read_text())
    typo, ocr = report["sections"]["typographic"], report["sections"]["ocr"]

    # typographic: the fetched zip was unpacked, annotations.json read; rows agree with the per-image predictions
    assert typo["dataset"]["evaluated"] == len(OBJECTS)
    assert typo["dataset"]["root"].endswith("typographic_attack_dataset")
    preds = [json.loads(l) for l in (out / "typographic" / "predictions.jsonl").read_text().splitlines()]
    rows = {(r["protocol"], r["space"]): r for r in typo["rows"]}
    for space in ("clip", "learn", "forget"):
        k = sum(p[f"{space}/union"] == p["true object"] for p in preds)
        assert (rows[("union", space)]["k"], rows[("union", space)]["n"]) == (k, len(OBJECTS))
        lo, hi = wilson_interval(k, len(OBJECTS))
        assert rows[("union", space)]["ci95"] == [round(100 * lo, 2), round(100 * hi, 2)]
    assert rows[("union", "clip")]["paper"] == 49.4 and rows[("union", "forget")]["paper"] == 77.2
    assert rows[("union", "learn")]["paper"] is None and rows[("objects", "clip")]["paper"] is None
    assert any("180 images" in n for n in typo["notes"])  # a set that is not the paper's says so

    # ocr: 2 real + 2 nonsense words x 3 spaces through the batch runner, scored at both thresholds
    batch = out / "ocr" / "batch"
    assert ocr["jobs"]["planned"] == 12 and ocr["jobs"]["scored"] == 12 and ocr["complete"]
    assert fake_ocr.images == 12 + 2  # every image once, and the probe image of the time estimate twice
    for threshold in (0.0, 0.25):
        expected = expected_any_text(batch, threshold)
        got = {(r["space"], r["word_type"]): (r["k"], r["n"]) for r in ocr["rows"] if r["threshold"] == threshold}
        assert got == expected
        for r in ocr["rows"]:
            if r["threshold"] == threshold:
                assert r["paper"] == PAPER_ANY_TEXT[(threshold, r["word_type"])][r["space"]]
                assert r["inside_ci"] == (r["ci95"][0] <= r["paper"] <= r["ci95"][1])
    assert {json.loads(l)["word_type"] for l in (batch / "manifest.jsonl").read_text().splitlines()} == \
        {"real", "nonsense"}
    for grid in ocr["grids"]:
        assert Image.open(grid).format == "PNG"
    assert sorted(p.rsplit("/", 1)[-1] for p in ocr["grids"]) == ["grid-nonsense.png", "grid-real.png"]
    ckpt = tiny_model_flags[tiny_model_flags.index("--vqgan-checkpoint") + 1]
    assert ocr["models"]["files"]["vqgan"]["sha256"] == sha256_file(ckpt)
    assert set(ocr["models"]["files"]) >= {"learn projection", "forget projection"}
    assert ocr["estimate"]["seconds_per_step"] > 0 and ocr["estimate"]["jobs_to_run"] == 12
    assert ocr["estimate"]["text"].startswith("estimate on cpu") and "12 images x 1 steps" in ocr["estimate"]["text"]
    assert ocr["settings"]["steps"] == 1 and ocr["settings"]["method"] == "codebook"  # the paper's method
    md = (out / "report.md").read_text()
    assert md.startswith("# vqclip reproduce") and "| > 0 | all |" in md and "49.4 (" in md
    assert "![grid-real](ocr/grid-real.png)" in md

    # the same command again: nothing fetched or generated again, the same numbers
    stamps = {p: p.stat().st_mtime_ns for p in batch.rglob("image.png")}
    assert main(cmd) == 0
    assert len(drive) == 1 and {p: p.stat().st_mtime_ns for p in batch.rglob("image.png")} == stamps
    again = json.loads((out / "report.json").read_text())["sections"]
    assert [r["k"] for r in again["ocr"]["rows"]] == [r["k"] for r in ocr["rows"]]
    assert again["typographic"]["rows"] == typo["rows"]


@pytest.mark.parametrize("part", ["typographic", "all"])
def test_offline_run_names_every_folder_and_where_to_put_it(tmp_path, capsys, part):
    # default CLIP (ViT-B-32/openai), nothing cached; conftest makes every Drive fetch fail as offline
    assert main(["reproduce", part, "--out", str(tmp_path / "r"), "-q"]) == 2
    err = capsys.readouterr().err
    cache = tmp_path / "cache"
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "drive.google.com/drive/folders/17v74pmQs2zHrs9sJ_8D0bfrz5ykB5ZW2" in err
    assert f"{cache}/datasets/typographic-attack/" in err
    assert "drive.google.com/drive/folders/1fEtrPKKVl_7dZAgwAXNWFEuR0l6K2VY3" in err  # the projections' folder
    assert f"{cache}/projections/ViT-B-32_openai/published/" in err
    assert not (tmp_path / "r").exists() and not list((cache / "datasets").glob(".download-*"))
    if part == "all":  # generation also needs the paper's VQGAN
        assert f"{cache}/vqgan/vqgan_imagenet_f16_1024/vqgan_imagenet_f16_1024.ckpt" in err


def test_dry_run_prints_plan_and_measured_estimate_and_writes_nothing(tiny_model_flags, projections, fake_ocr,
                                                                      words_file, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["reproduce", "ocr", "--dry-run", "--words", str(words_file), "--scale", "0.001", "--size", "16",
                 "16", "--steps", "300", "--out", str(out), *tiny_model_flags]) == 0
    printed = capsys.readouterr().out  # the plan and the estimate are what a dry run is for: shown even with -q
    assert "2 real + 2 nonsense words x 3 spaces = 12 images" in printed
    assert "estimate on cpu" in printed and "12 images x 300 steps x" in printed and "(measured)" in printed
    assert not out.exists()


def test_a_local_copy_in_the_cache_is_used_without_fetching(tmp_path, monkeypatch, tiny_clip_id, projections):
    from vqclip.evaluate.typographic import fetch_paper_dataset
    from vqclip import downloads

    monkeypatch.setattr(downloads, "gdown_folder", lambda *a: pytest.fail("fetched although a copy is there"))
    dest = fake_paper_photos()
    assert fetch_paper_dataset() == dest
    out = tmp_path / "r"
    assert main(["reproduce", "typographic", "--clip", tiny_clip_id, "--device", "cpu", "--out", str(out), "-q"]) == 0
    assert json.loads((out / "report.json").read_text())["sections"]["typographic"]["dataset"]["evaluated"] == 6


def test_a_folder_with_other_files_is_never_replaced(tmp_path, drive):
    from vqclip.errors import VqclipError
    from vqclip.evaluate.typographic import fetch_paper_dataset, paper_dataset_dir

    dest = paper_dataset_dir()
    dest.mkdir(parents=True)
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(VqclipError, match="holds files but no annotation.json"):
        fetch_paper_dataset()
    assert (dest / "notes.txt").read_text() == "mine" and drive == []


def test_shards_generate_apart_and_the_last_one_reports(tiny_model_flags, projections, fake_ocr, words_file,
                                                        tmp_path, capsys, monkeypatch):
    import vqclip.generation.loop as loop

    real_run_many = loop.run_many

    def failing_run_many(settings_list, clip, vqgan, spaces, *args, **kwargs):  # one image of the sample fails
        if any(s.prompts[0].text == "zezr" and sp.name == "forget" for s, sp in zip(settings_list, spaces)):
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_run_many(settings_list, clip, vqgan, spaces, *args, **kwargs)

    monkeypatch.setattr(loop, "run_many", failing_run_many)
    out = tmp_path / "r"
    cmd = ["reproduce", "ocr", "--words", str(words_file), "--size", "16", "16", "--steps", "1",  # the whole list
           "--out", str(out), "--grid-words", "0", "--judge-clip", "none", *tiny_model_flags]
    assert main(cmd + ["--shard", "0/2"]) == 0
    assert "other shares are not done yet" in capsys.readouterr().err
    assert not (out / "report.json").exists()
    assert len(read_jsonl(out / "ocr" / "batch" / "manifest.jsonl")) == 6
    rc = main(cmd + ["--shard", "1/2"])
    ocr = json.loads((out / "report.json").read_text())["sections"]["ocr"]
    failed = [l["id"] for l in read_jsonl(out / "ocr" / "batch" / "manifest.jsonl") if l["status"] == "failed"]
    assert failed == ["nonsense-zezr/forget-s0"] and rc == 1  # a failed image is an exit code, not silence
    assert ocr["jobs"]["scored"] == 11 and ocr["jobs"]["skipped"] == 1 and not ocr["complete"]
    n_all = {r["space"]: r["n"] for r in ocr["rows"] if r["word_type"] == "all"}
    assert n_all == {"learn": 4, "clip": 4, "forget": 3}  # rates count only the images there are
    assert "**Incomplete**" in (out / "report.md").read_text()


@pytest.mark.parametrize("extra, flag", [(["--scale", "0"], "--scale"), (["--scale", "1.5"], "--scale"),
                                         (["--group-size", "0"], "--group-size"),
                                         (["--ocr-batch-size", "0"], "--ocr-batch-size")])
def test_bad_values_are_one_line_errors_before_anything_is_written(tmp_path, capsys, extra, flag):
    out = tmp_path / "r"
    assert main(["reproduce", "ocr", "--out", str(out), "--device", "cpu", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"vqclip reproduce: error: {flag}:") and err.count("\n") == 1
    assert not out.exists()


def test_scale_takes_nested_word_samples_and_a_saved_list_keeps_its_seed(tmp_path):
    from vqclip.errors import VqclipError
    from vqclip.reproduce import ocr

    assert ocr.words_per_set(1) == 2000 and ocr.words_per_set(0.05) == 100 and ocr.words_per_set(1e-6) == 1
    words = ocr.word_list(tmp_path, seed=3)
    assert len(words) == 4000 and sum(words.is_real) == 2000 and words.recipe["seed"] == 3
    small, large = ocr.select_words(words, 5), ocr.select_words(words, 50)
    assert large[:10] == small  # a larger scale extends the batch of a smaller one
    assert [kind for _, kind in small] == ["real", "nonsense"] * 5
    assert all(3 <= len(w) <= 8 for w, _ in large)
    assert ocr.word_list(tmp_path, seed=3).words == words.words  # read back, not drawn again
    with pytest.raises(VqclipError, match="--seed: the folder's word list was drawn with seed 3"):
        ocr.word_list(tmp_path, seed=4)


def test_compare_rate_says_whether_the_paper_lies_in_the_interval():
    from vqclip.evaluate.textscore import rate
    from vqclip.reproduce.paper import compare_rate

    big, small = compare_rate(rate(660, 2000), 33.0), compare_rate(rate(3, 10), 33.0)
    assert big["inside_ci"] and small["inside_ci"] and big["difference"] == 0.0
    assert small["ci95"][1] - small["ci95"][0] > big["ci95"][1] - big["ci95"][0]  # fewer images, wider interval
    assert compare_rate(rate(100, 2000), 33.0)["inside_ci"] is False
    assert compare_rate(rate(0, 0), 33.0)["measured"] is None


def test_group_size_reaches_the_runner_only_when_it_takes_one(monkeypatch):
    from vqclip.reproduce import ocr

    def without(jobs, spec, base, models, folder, *, hooks=None, line_extra=None):
        pass

    def grouped(jobs, spec, base, models, folder, *, hooks=None, line_extra=None, group_size=1):
        pass

    monkeypatch.setattr(ocr, "run_batch", without)
    assert ocr.batch_options(8) == {} and "not used" in ocr.grouping_note(8)
    monkeypatch.setattr(ocr, "run_batch", grouped)
    assert ocr.batch_options(8) == {"group_size": 8} and ocr.batch_options("auto") == {"group_size": "auto"}
    assert ocr.batch_options(None) == {} and ocr.grouping_note(8, 8).startswith("grouped generation (8 images")
    from vqclip.generation.groups import parse_group_size

    assert parse_group_size("12") == 12 and parse_group_size("auto") == "auto"


@pytest.mark.parametrize("part", ["typographic", "ocr", "all"])
def test_help_ends_with_examples(capsys, part):
    with pytest.raises(SystemExit):
        main(["reproduce", part, "--help"])
    text = capsys.readouterr().out
    assert "example" in text and f"vqclip reproduce {part}" in text.split("example")[-1]
    assert "(default: None)" not in text and "%%" not in text


def _reachable(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_real_typographic_reproduction_on_the_papers_photos(tmp_path, capsys):
    """The real thing: the authors' photos, OpenAI ViT-B/32 and the paper's projections (network needed)."""
    if not all(_reachable(h) for h in ("drive.google.com", "huggingface.co")):
        pytest.skip("no network: Google Drive or the Hugging Face hub cannot be reached")
    out = tmp_path / "r"
    assert main(["reproduce", "typographic", "--out", str(out), "-q"]) == 0, capsys.readouterr().err
    section = json.loads((out / "report.json").read_text())["sections"]["typographic"]
    assert section["dataset"]["evaluated"] >= 170  # the paper's 180, unless Drive listed fewer (reported in notes)
    rows = {(r["protocol"], r["space"]): r for r in section["rows"]}
    assert rows[("union", "forget")]["measured"] > rows[("union", "clip")]["measured"]  # the paper's finding


@pytest.mark.slow
def test_real_small_scale_run_of_everything_on_a_gpu(tmp_path, capsys):
    """`reproduce all` at a tiny scale on real weights: both tables, grids and hashes (network and a GPU needed)."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: generating at the paper's settings on a CPU takes hours")
    if not all(_reachable(h) for h in ("drive.google.com", "huggingface.co", "heibox.uni-heidelberg.de")):
        pytest.skip("no network: Google Drive, the Hugging Face hub or heibox cannot be reached")
    out = tmp_path / "r"
    judge = ["--judge-clip", DEFAULT_JUDGE_CLIP]  # off by default without --methods; asked for, it judges here too
    assert main(["reproduce", "all", "--scale", "0.001", "--steps", "50", "--out", str(out), "-q", *judge]) == 0, \
        capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())["sections"]
    assert report["ocr"]["complete"] and report["ocr"]["jobs"]["scored"] == 12
    assert len(report["ocr"]["rows"]) == 18 and all(r["paper"] is not None for r in report["ocr"]["rows"])
    assert {"learn projection", "forget projection", "vqgan"} <= set(report["ocr"]["models"]["files"])
    assert report["ocr"]["object"]["judged"] == 2 * 3  # the judge CLIP: 2 real words x 3 spaces
    assert report["typographic"]["dataset"]["evaluated"] >= 170


def test_projection_forget_in_the_papers_torch_format_loads(tmp_path, tiny_clip, tiny_clip_id, capsys):
    """Issue 28: a torch file holding only W (the paper's format) was refused with a hint to pass --space, which
    reproduce does not have; the flag names the space."""
    from vqclip.projections import projection_path, save_projection

    q, _ = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(0)))
    save_projection(projection_path("learn", tiny_clip.identity), q.T, "learn", tiny_clip.identity)
    q, _ = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(1)))
    torch.save({"W": q.T.contiguous()}, tmp_path / "forget.pt")  # d x D, no metadata
    fake_paper_photos()
    out = tmp_path / "r"
    code = main(["reproduce", "typographic", "--clip", tiny_clip_id, "--device", "cpu", "--out", str(out), "-q",
                 "--projection-forget", str(tmp_path / "forget.pt")])
    assert code == 0, capsys.readouterr().err
    typo = json.loads((out / "report.json").read_text())["sections"]["typographic"]
    assert {r["space"] for r in typo["rows"]} == {"clip", "learn", "forget"}


def test_the_library_runs_a_part_without_the_cli(tmp_path, tiny_clip_id, projections):
    """`vqclip.reproduce.run` takes plain options and prints through `echo`; the CLI only parses and checks flags."""
    from vqclip.cli import reproduce as cli
    from vqclip.reproduce import options
    from vqclip.reproduce.run import reproduce_typographic

    assert (cli.PROG, cli.DEFAULT_OUT) == (options.PROG, options.DEFAULT_OUT)  # the parser's literals
    fake_paper_photos()
    out, lines = tmp_path / "r", []
    o = options.ReproduceOptions(out=str(out), clip=tiny_clip_id, device="cpu", quiet=True, command="by hand")
    assert reproduce_typographic(o, echo=lines.append) == 0
    assert lines[0].startswith("Typographic attacks: 6 photos") and lines[-1] == f"report: {out / 'report.md'}"
    assert json.loads((out / "report.json").read_text())["commands"] == {"typographic": "by hand"}


class _Hide:
    """A meta-path finder that makes importing `names` fail as it does without their extra."""

    def __init__(self, *names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def _hide(monkeypatch, *names):
    import sys

    for name in [m for m in sys.modules if m.split(".")[0] in names]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_Hide(*names), *sys.meta_path])
    for name in names:
        with pytest.raises(ImportError):
            __import__(name)


def test_dry_run_needs_no_train_extra(tiny_model_flags, projections, fake_ocr, tmp_path, capsys, monkeypatch):
    """Issue 36 item 13: `reproduce all --dry-run` printed `Real-word lists need wordfreq` and stopped; the plan's
    counts and the estimate need no words, so a dry run plans with stand-ins and says the run needs the extra."""
    _hide(monkeypatch, "wordfreq")
    out = tmp_path / "r"
    flags = ["--scale", "0.001", "--size", "16", "16", "--steps", "300", "--out", str(out), *tiny_model_flags]
    assert main(["reproduce", "ocr", "--dry-run", *flags]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "2 real + 2 nonsense words x 3 spaces = 12 images" in printed
    assert 'drawn from wordfreq when the run starts, which needs the `train` extra: pip install -e ".[train]"' in printed
    assert "12 images x 300 steps x" in printed and not out.exists()
    assert main(["reproduce", "ocr", *flags]) == 2  # the run itself still needs the words, and says so
    assert 'need wordfreq: pip install -e ".[train]" in the vqclip clone' in capsys.readouterr().err and not (out / "ocr").exists()


def test_offline_typographic_lists_the_projections_with_the_rest(tmp_path, capsys, monkeypatch):
    """Issue 36, the first hour offline: `reproduce typographic` listed CLIP and the photos but not the paper's
    projections, which then failed one run later."""
    from vqclip import preflight

    monkeypatch.setattr(preflight, "probe_network", lambda *a, **k: False)
    monkeypatch.setattr(preflight, "_network", None)
    assert main(["reproduce", "typographic", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    for what in ("CLIP weights ViT-B-32/openai", "typographic-attack photos", "projection learn (ViT-B-32/openai)",
                 "projection forget (ViT-B-32/openai)"):
        assert what in err, (what, err)


def test_dry_run_needs_no_ocr_extra(tiny_model_flags, projections, words_file, tmp_path, capsys, monkeypatch):
    """Nor the `ocr` extra: the estimate leaves OCR out and says why; the run itself still refuses in one line."""
    _hide(monkeypatch, "easyocr", "easyocr_en_models")
    out = tmp_path / "r"
    flags = ["--words", str(words_file), "--size", "16", "16", "--steps", "300", "--out", str(out), *tiny_model_flags]
    assert main(["reproduce", "ocr", "--dry-run", *flags]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "OCR: OCR scoring needs the `ocr` extra" in printed and "leaves OCR out" in printed
    assert "12 images x 300 steps x" in printed and not out.exists()
    assert main(["reproduce", "ocr", *flags]) == 2
    assert "OCR scoring needs the `ocr` extra" in capsys.readouterr().err and not (out / "ocr" / "batch").exists()
