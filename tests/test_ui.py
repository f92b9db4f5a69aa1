"""`vqclip ui` without a browser: the form checks, the runner (live state, stop, run folders), the gallery and the
server's safety defaults. The page itself is driven in tests/test_browser_ui.py."""

from __future__ import annotations

import json
import time

import pytest
import torch
from PIL import Image

from test_batch_support import make_batch, run_fake

# Gradio's queue calls pandas options that pandas 3 deprecates; not ours to fix, and not a failure of the page.
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
from vqclip.cli import main
from vqclip.errors import VqclipError
from vqclip.ui.runner import Form, Job, ModelCache, ModelChoice, check_form


@pytest.fixture()
def choice(tiny_clip_id, tmp_path):
    """Tiny CLIP and VQGAN, with learn and forget projections in the (per-test) cache, as the page would name them."""
    from vqclip.models.clip import load_clip
    from vqclip.models.tiny import write_taming_files
    from vqclip.projections import projection_path, save_projection

    config, ckpt = write_taming_files(tmp_path / "vqgan")
    clip = load_clip(tiny_clip_id, device="cpu")
    q, _ = torch.linalg.qr(torch.randn(clip.embed_dim, 8, generator=torch.Generator().manual_seed(0)))
    for space in ("learn", "forget"):
        save_projection(projection_path(space, clip.identity), q.T, space, clip.identity)
    return ModelChoice(tiny_clip_id, None, None, str(config), str(ckpt), "cpu", "auto", None, False)


def tiny_form(**kw) -> Form:
    values = dict(prompt="an apple | text:-0.5", spaces=["clip", "forget"], seed=3, width=32, height=32, steps=4,
                  method="zquant", cutn=2)
    values.update(kw)
    return Form(**values)


@pytest.mark.parametrize("change, message", [
    ({"prompt": "  "}, "prompt: a text prompt is required"),
    ({"prompt": "an apple:abc"}, "abc"),  # the CLI's prompt syntax: a word glued to ':' is a mistyped weight
    ({"spaces": []}, "spaces: pick at least one space"),
    ({"spaces": ["clip", "paint"]}, "spaces: unknown embedding space"),
    ({"steps": 0}, "steps: must be a whole number of at least 1"),
    ({"steps": 2.5}, "steps: must be a whole number"),
    ({"width": "wide"}, "width: must be a whole number"),
    ({"width": None}, "width: must be a whole number"),
    ({"seed": -1}, "seed: must be a whole number of at least 0"),
    ({"cutn": float("nan")}, "cutn: must be a whole number"),
    ({"method": "magic"}, "--method: unknown optimisation method"),
    ({"recipe": "crowson"}, "--recipe: unknown recipe"),
])
def test_form_values_get_the_clis_checks_and_one_line_errors(change, message):
    with pytest.raises(VqclipError) as err:
        check_form(tiny_form(**change))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_form_draws_one_seed_for_all_spaces_and_keeps_the_order_of_spaces():
    checked = check_form(tiny_form(seed=None, spaces=["forget", "clip"], learn_projection=" "))
    assert checked.spaces == ["clip", "forget"] and isinstance(checked.settings.seed, int)
    assert checked.requests == [("clip", None, "clip projection"), ("forget", None, "forget projection")]
    assert [p.weight for p in checked.settings.prompts] == [1.0, -0.5]


def wait(job: Job, timeout: float = 60) -> None:
    job.thread.join(timeout)
    assert job.done, "the job did not end in time"


def test_job_writes_ordinary_run_folders_that_grid_reads(choice, tmp_path, one_thread):
    job = Job(check_form(tiny_form()), choice, tmp_path / "outputs", ModelCache(), report_seconds=0).start()
    wait(job)
    assert job.error is None, job.error
    phase, lanes = job.snapshot()
    assert phase == "finished" and [l.state for l in lanes] == ["finished", "finished"]
    assert all(l.loss_steps == [1, 2, 3, 4] and len(l.losses) == 4 and l.step == 4 and l.image is not None
               for l in lanes)
    for lane in lanes:
        record = json.loads((lane.folder / "run.json").read_text())
        assert record["space_name"] == lane.space and record["status"] == "finished" and record["seed"] == 3
        assert record["prompt"] == "an apple | text:-0.5" and record["frontend"] == "vqclip ui"
        assert Image.open(lane.folder / "image.png").size == (32, 32)
    job_dir = lanes[0].folder.parent
    assert lanes[1].folder.parent == job_dir and job_dir.parent == tmp_path / "outputs"
    assert main(["grid", str(job_dir), "--thumb", "32", "-q"]) == 0
    from vqclip.grid import arrange, collect

    arr = arrange(collect(job_dir).cells)
    assert arr.rows == ["an apple | text:-0.5"] and arr.cols == [("clip",), ("forget",)]


def test_stop_keeps_the_current_images_and_run_json(choice, tmp_path, one_thread):
    job = Job(check_form(tiny_form(steps=5000)), choice, tmp_path / "outputs", ModelCache(), report_seconds=0)
    job.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(l.step >= 3 for l in job.snapshot()[1]):
        time.sleep(0.02)
    job.request_stop()
    wait(job)
    phase, lanes = job.snapshot()
    assert phase == "stopped" and job.error is None
    done = set()
    for lane in lanes:
        record = json.loads((lane.folder / "run.json").read_text())
        assert record["status"] == "interrupted" and 3 <= record["steps_done"] < 5000
        assert (lane.folder / "image.png").is_file()
        done.add(record["steps_done"])
    assert len(done) == 1  # optimised together in one batched latent: both stopped after the same step


def test_a_missing_projection_is_a_page_error_not_a_traceback(tiny_clip_id, tmp_path):
    from vqclip.models.tiny import write_taming_files

    config, ckpt = write_taming_files(tmp_path / "vqgan")
    plain = ModelChoice(tiny_clip_id, None, None, str(config), str(ckpt), "cpu")
    job = Job(check_form(tiny_form(spaces=["clip", "learn"])), plain, tmp_path / "outputs", ModelCache()).start()
    wait(job)
    assert job.snapshot()[0] == "failed" and "learn" in job.error and "Traceback" not in job.error
    assert not (tmp_path / "outputs").exists()  # nothing written for a job that never started


def test_gallery_rows_prompts_columns_spaces_filters_and_ocr_scores(tmp_path):
    from vqclip.evaluate.ocr import Detection
    from vqclip.evaluate.scoring import score_paths
    from vqclip.evaluate.sources import collect_images
    from vqclip.ui.gallery import build_gallery, folder_choices

    root = tmp_path / "outputs"
    spec, base = make_batch(tmp_path, prompt_text="#: word_type: real\napple\n#: word_type: nonsense\nblick\n",
                            spaces=("clip", "forget"), seeds=(0, 1), size=(24, 24))
    run_fake(spec, base, root / "words")

    class Reader:  # stands in for EasyOCR: reads "apple" in every image
        key = "fake"

        def read(self, images):
            return [[Detection(((0, 0), (1, 0), (1, 1), (0, 1)), "apple", 0.9)] for _ in images]

    items, skipped = collect_images([root / "words"])
    score_paths(items, skipped, root / "words" / "score", Reader(), progress=False, chart=False)

    g = build_gallery(root)
    assert g.images == 8 and g.seeds == ["0", "1"] and g.word_types == ["nonsense", "real"]
    assert "2 prompts × 4 columns (space, seed)" in g.summary
    assert g.html.count("<img ") == 8 and g.html.count("data:image/png;base64,") == 8
    assert g.html.count("OCR: text found (max confidence 0.90); word &#x27;apple&#x27; legible") == 4
    assert g.html.count("word &#x27;blick&#x27; not legible") == 4
    assert g.html.index("apple") < g.html.index("blick")  # rows in prompt order
    only = build_gallery(root, "words", seed="1", word_type="nonsense")
    assert only.images == 2 and "2 images, 1 prompt × 2 columns (space)" in only.summary and "apple" not in only.html
    assert "no image matches" in build_gallery(root, seed="7").summary
    assert folder_choices(root) == ["(all)", "words"]
    for bad in ("..", "../outputs", "/etc", "nothere"):
        with pytest.raises(VqclipError, match="folder: must be one of the folders"):
            build_gallery(root, bad)


def test_ui_command_is_safe_by_default(tmp_path, capsys, monkeypatch):
    import sys

    assert main(["ui", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host: the page listens on this machine only unless --allow-remote" in err and "0.0.0.0" in err
    assert main(["ui", "--port", "0"]) == 2
    assert "--port" in capsys.readouterr().err
    (tmp_path / "pw").write_text("")
    assert main(["ui", "--password-file", str(tmp_path / "pw")]) == 2
    assert "--password-file: the first line is empty" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if the extra were not installed
    assert main(["ui"]) == 2
    assert 'pip install -e ".[ui]" in the vqclip clone' in capsys.readouterr().err


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_remote_host_warns_and_a_password_guards_the_page(tmp_path, capsys, monkeypatch):
    pytest.importorskip("gradio", reason="the ui extra is not installed: pip install -e \".[ui]\"")
    import httpx

    import vqclip.ui.app as app

    port = free_port()
    (tmp_path / "pw").write_text("s3cret\n")
    answers = {}

    def probe_then_quit():
        base = f"http://127.0.0.1:{port}"
        answers["anonymous"] = httpx.get(f"{base}/config", timeout=10).status_code
        client = httpx.Client(base_url=base, timeout=10)
        answers["wrong"] = client.post("/login", data={"username": "vqclip", "password": "no"}).status_code
        answers["right"] = client.post("/login", data={"username": "vqclip", "password": "s3cret"}).status_code
        answers["signed in"] = client.get("/config").status_code
        raise KeyboardInterrupt  # Ctrl-C

    monkeypatch.setattr(app, "wait_forever", probe_then_quit)
    rc = main(["ui", "--host", "0.0.0.0", "--allow-remote", "--port", str(port), "--password-file",
               str(tmp_path / "pw"), "--outputs-root", str(tmp_path / "out"), "-q"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "warning: listening on 0.0.0.0" in err and "anyone who can reach" in err
    assert answers == {"anonymous": 401, "wrong": 400, "right": 200, "signed in": 200}


def test_a_port_in_use_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("gradio", reason="the ui extra is not installed: pip install -e \".[ui]\"")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port), "--outputs-root", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"vqclip ui: error: --port: could not listen on 127.0.0.1:{port}") and "\n" not in err


def test_model_fields_name_the_models_unless_locked_for_remote_use():
    from vqclip.ui.runner import page_models

    cli = ModelChoice("ViT-B-32", "openai", None, None, None, "cuda", "bf16", "/cache", True)
    page = page_models(cli, False, " local-dir:/m ", "", "vqgan_imagenet_f16_1024", "", " ")
    assert page == ModelChoice("local-dir:/m", None, "vqgan_imagenet_f16_1024", None, None, "cuda", "bf16", "/cache",
                               True)
    assert page_models(cli, False, "", "", "", "", "").clip == "ViT-B-32"
    assert page_models(cli, True, "local-dir:/elsewhere", "x", "y", "/etc/passwd", "/etc/shadow") == cli


def test_stop_while_models_load_runs_nothing_and_writes_nothing(choice, tmp_path):
    job = Job(check_form(tiny_form()), choice, tmp_path / "outputs", ModelCache())
    job.request_stop()  # Stop pressed before the models were loaded
    job.start()
    wait(job)
    phase, lanes = job.snapshot()
    assert phase == "stopped" and job.error is None and [l.state for l in lanes] == ["not started"] * 2
    assert not (tmp_path / "outputs").exists()


def test_the_page_runs_a_recipe_and_its_method_unless_one_is_chosen():
    from vqclip.ui.runner import RECIPE_METHOD

    paper = check_form(tiny_form(recipe="paper", method=RECIPE_METHOD)).settings
    assert (paper.recipe, paper.method, paper.noise, paper.augment) == ("paper", "codebook", 0.0, ())
    chosen = check_form(tiny_form(recipe="paper", method="zquant")).settings
    assert chosen.method == "zquant" and chosen.overrides["method"] == "zquant"
