"""A missing projection: one message with a runnable training command, its cost here, and --auto-train.

Tiny CLIP and VQGAN; the default training set is replaced by a small generated image folder.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import MappingProxyType

import pytest
import torch

from conftest import class_photos
from vqclip.cli import main
from vqclip import downloads
from vqclip.projections import published
from vqclip.models.clip import clip_identity
from vqclip.projections import load_projection, projection_path
from vqclip.spelling import pipeline


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def model_args(tiny_model_flags):
    return tiny_model_flags + ["--size", "16", "16", "--steps", "1"]


@pytest.fixture()
def default_images(tmp_path, monkeypatch):
    """A 3-class image folder standing in for ImageNetV2 as the default training set; records training calls."""
    root = class_photos(tmp_path / "photos")
    monkeypatch.setattr(pipeline, "DEFAULT_IMAGES", str(root))
    monkeypatch.setattr(pipeline, "default_workers", lambda: 0)
    calls = []
    real = pipeline.train_default_projection

    def spy(clip, space, *args, **kwargs):
        calls.append(space)
        return real(clip, space, *args, **kwargs)

    monkeypatch.setattr(pipeline, "train_default_projection", spy)
    return calls


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_the_default_recipe_is_the_one_vqclip_train_uses():
    from vqclip.cli import build_parser
    from vqclip.cli.train import _data_config, _style_from_args
    from vqclip.spelling.dataset import DataConfig
    from vqclip.spelling.render import TextStyle, resolve_fonts
    from vqclip.spelling.train import TrainConfig

    args = build_parser().parse_args(["train", "--space", "forget"])
    assert _data_config(args) == DataConfig()  # same feature cache folder for --auto-train and `vqclip train`
    assert _style_from_args(args) == TextStyle(fonts=resolve_fonts(None, None), seed=DataConfig().seed)
    defaults = TrainConfig()
    assert (args.lr, args.batch_size, args.epochs, args.step_size, args.lr_decay, args.seed) == \
        (defaults.lr, defaults.batch_size, defaults.epochs, defaults.step_size, defaults.lr_decay, defaults.seed)
    assert args.images is None and pipeline.DEFAULT_IMAGES == "imagenetv2"


def test_missing_projection_is_one_runnable_line_with_size_and_a_measured_estimate(model_args, tmp_path, capsys):
    from vqclip.cli import build_parser

    bogus = model_args[:]
    bogus[bogus.index("--vqgan-checkpoint") + 1] = str(tmp_path / "absent.ckpt")  # never reached: spaces come first
    rc = main(["generate", "apple", "--space", "forget", "--out", str(tmp_path / "r")] + bogus)
    assert rc == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("vqclip generate: error: --space forget: no forget projection for CLIP 'local-dir:")
    assert "none is registered for this CLIP" in line and "absent.ckpt" not in line
    command = line.split("Train one with: ")[1].split("  — ")[0]
    argv = shlex.split(command)
    assert argv[:4] == ["vqclip", "train", "--space", "forget"] and "--images" not in argv
    parsed = build_parser().parse_args(argv[1:])  # runnable as printed
    assert parsed.space == "forget" and parsed.clip.startswith("local-dir:")
    assert "~1.26 GB" in line and "measured here" in line and "1,890 training steps" in line  # 30 x 63 batches
    assert "34,000 CLIP image encodes" in line and "on cpu" in line
    assert "add --auto-train" in line and "--projection PATH" in line
    assert not (tmp_path / "r").exists()


def test_estimate_counts_the_default_run_and_measures_this_device(tiny_clip):
    est = pipeline.estimate_training(tiny_clip, "forget", workers=2)
    assert est.image_encodes == 3 * 10_000 + 4 * 1000 and est.steps == 30 * -(-8000 // 128)  # the partial batch counts
    assert est.images_per_s > 0 and est.seconds >= 10_000 / (pipeline.RENDER_TUPLES_PER_WORKER_S * 2)
    serial = pipeline.estimate_training(tiny_clip, "forget", workers=0)
    assert serial.seconds > 10_000 / pipeline.RENDER_TUPLES_PER_WORKER_S  # rendering and encoding in turn


def test_auto_train_trains_then_generates_and_the_next_run_reuses_it(model_args, tmp_path, default_images, capsys):
    out = tmp_path / "r"
    assert main(["generate", "apple", "--space", "forget", "--auto-train", "--out", str(out)] + model_args) == 0
    err = capsys.readouterr().err
    assert "training the forget projection for CLIP" in err and "vqclip train --space forget" in err
    assert default_images == ["forget"]
    identity = clip_identity(model_args[1], None)
    space = load_projection(projection_path("forget", identity))
    assert space.W.shape == (16, 32) and json.loads(space.metadata["training"])["epochs"] == 30
    record = json.loads((out / "run.json").read_text())
    assert record["space"]["space"] == "forget" and record["space"]["dim"] == 16
    assert main(["generate", "apple", "--space", "forget", "--out", str(tmp_path / "r2")] + model_args) == 0
    assert default_images == ["forget"]  # found in the cache, not trained again


def test_auto_train_is_a_config_key(model_args, tmp_path):
    from vqclip.cli import build_parser
    from vqclip.cli.generate import apply_config_file

    (tmp_path / "run.yaml").write_text("auto_train: true\n")
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["generate"]
    apply_config_file(sub, str(tmp_path / "run.yaml"))
    assert parser.parse_args(["generate", "apple"]).auto_train is True
    (tmp_path / "bad.yaml").write_text("auto_train: 3\n")
    with pytest.raises(Exception, match="auto_train: must be true or false"):
        apply_config_file(sub, str(tmp_path / "bad.yaml"))


def test_batch_reports_every_missing_projection_before_the_first_job(model_args, tmp_path, capsys):
    (tmp_path / "p.txt").write_text("apple\npear\n")
    out = tmp_path / "out"
    rc = main(["batch", str(tmp_path / "p.txt"), "--spaces", "clip,learn,forget", "--out", str(out)] + model_args)
    assert rc == 2
    err = capsys.readouterr().err.splitlines()
    # the few-steps note batch repeats from generate (issue 36 item 15) comes first; the error is still one line
    line = one_line("\n".join(ln for ln in err if not ln.startswith("vqclip batch: note: with 1 steps")))
    assert "--space learn: no learn projection" in line and "--projection-learn PATH" in line
    assert "The forget projection is missing too: train it with `vqclip train --space forget --clip local-dir:" in line
    assert not out.exists()  # no job ran, no folder was made


def test_batch_auto_trains_each_missing_projection_once_before_the_first_job(model_args, tmp_path, default_images,
                                                                              monkeypatch, capsys):
    import vqclip.batch.runner as runner

    order = []
    real_run_group = runner._run_group

    def run_group(group, ctx):
        order.extend(("job", job.id, tuple(default_images)) for job, _ in group)
        return real_run_group(group, ctx)

    monkeypatch.setattr(runner, "_run_group", run_group)
    (tmp_path / "p.txt").write_text("apple\npear\n")
    out = tmp_path / "out"
    assert main(["batch", str(tmp_path / "p.txt"), "--spaces", "clip,learn,forget", "--auto-train",
                 "--out", str(out)] + model_args) == 0
    assert sorted(default_images) == ["forget", "learn"]
    assert len(order) == 6 and all(trained == ("learn", "forget") for _, _, trained in order)
    assert "6 generated" in capsys.readouterr().err


@pytest.fixture()
def registered_tiny(tiny_clip, monkeypatch):
    """Register projections for the tiny CLIP (D = 32) served by a fake Drive folder, as the paper's are."""
    identity = tiny_clip.identity
    assets = {f"{identity}:{space}": published.ProjectionAsset(identity, space, ("https://drive.example/folder",), 32,
                                                             dim, "test", "https://example")
              for space, dim in (("learn", 4), ("forget", 16))}
    monkeypatch.setattr(published, "PROJECTION_ASSETS", MappingProxyType(assets))

    def serve(url, output, progress):
        for space, d, seed in (("learn", 4, 1), ("forget", 16, 2)):
            q = torch.nn.init.orthogonal_(torch.empty(d, 32), generator=torch.Generator().manual_seed(seed))
            torch.save({"W": q.T.contiguous()}, Path(output) / f"{space}_to_spell.pt")

    return identity, serve


def test_generate_with_a_registered_projection_fetches_it_on_first_use(model_args, tmp_path, registered_tiny,
                                                                       monkeypatch):
    identity, serve = registered_tiny
    monkeypatch.setattr(downloads, "gdown_folder", serve)
    out = tmp_path / "r"
    assert main(["generate", "apple", "--space", "forget", "--out", str(out)] + model_args) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["space"]["dim"] == 16 and record["space"]["clip_model"] == identity
    meta = load_projection(projection_path("forget", identity)).metadata
    assert meta["source_url"] == "https://drive.example/folder" and meta["source_file"] == "forget_to_spell.pt"
    assert record["space"]["source_url"] == meta["source_url"]  # the run records where its projection came from
    assert record["space"]["source_sha256"] == meta["source_sha256"]


def test_a_failed_fetch_with_auto_train_trains_instead(model_args, tmp_path, registered_tiny, default_images, capsys):
    # the conftest's offline fetcher stays in place: the registered download fails
    assert main(["generate", "apple", "--space", "learn", "--auto-train", "--out", str(tmp_path / "r")]
                + model_args) == 0
    err = capsys.readouterr().err
    assert "could not be downloaded" in err and "training the learn projection" in err
    assert default_images == ["learn"]
    meta = load_projection(projection_path("learn", registered_tiny[0])).metadata
    assert "training" in meta and "source_url" not in meta
