"""Shared fixtures: tiny models built in code, no downloads.

The suite runs in parallel under pytest-xdist (README's command: `-n 2`, tests/testbed_stages.py): each worker keeps to its share of
the cores (one thread on two cores; its subprocesses too, through OMP_NUM_THREADS), and the science checks' costly
stages (the testbed's CLIP trainings, the world models) are computed once for all workers by `once`, whichever
worker asks first, the others waiting on a file lock. Alone, pytest runs with two threads as before.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // WORKERS))
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS)  # the CLI subprocesses of some tests

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(THREADS)  # module- and session-scoped fixtures too, not only the tests (_isolated_cache)


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run tests marked slow (real weights, minutes)")


def pytest_collection_modifyitems(config, items):
    # The science checks first: xdist hands their groups out before the many short tests, which then fill the
    # gaps; the order within each group is kept.
    items.sort(key=lambda item: item.get_closest_marker("testbed") is None)  # the marker, not a test id "testbed"
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_clip_id(tmp_path_factory) -> str:
    """`local-dir:` identifier of a tiny random open_clip model (D = 32, 32x32 input)."""
    from vqclip.models.tiny import make_clip_dir

    return make_clip_dir(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_id):
    from vqclip.models.clip import load_clip

    return load_clip(tiny_clip_id, device="cpu")


@pytest.fixture()
def tiny_vqgan():
    from vqclip.models.tiny import make_vqgan

    return make_vqgan()


@pytest.fixture()
def tiny_model_flags(tiny_clip_id, tmp_path) -> list[str]:
    """The CLI flags that run a command on the tiny CLIP and a tiny VQGAN written in taming format, on the CPU."""
    from vqclip.models.tiny import write_taming_files

    config, ckpt = write_taming_files(tmp_path / "vqgan")
    return ["--clip", tiny_clip_id, "--vqgan-config", str(config), "--vqgan-checkpoint", str(ckpt), "--device", "cpu",
            "--cutn", "2", "--quiet"]


@pytest.fixture()
def one_thread():
    """Tiny models and matrices: extra threads only add contention on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own empty vqclip cache."""
    monkeypatch.setenv("VQCLIP_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(THREADS)


def shared_folder(tmp_path_factory) -> Path:
    """A folder every xdist worker of this test session sees (the session's own temporary folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared"
    root.mkdir(exist_ok=True)
    return root


def once(tmp_path_factory, name: str, make: Callable[[], Any]) -> Any:
    """What `make()` returns (through JSON), run once per test session by whichever xdist worker asks first; the
    others wait on a file lock and read what it wrote. A `make` that fails leaves nothing, so the next asker tries
    again (and fails the same way, in its own test)."""
    from filelock import FileLock

    root = shared_folder(tmp_path_factory)
    done = root / f"{name}.json"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            done.write_text(json.dumps(make()))
    return json.loads(done.read_text())


@pytest.fixture(autouse=True)
def _no_drive_downloads(request, monkeypatch):
    """Tests never reach Google Drive: the default folder fetcher fails as on an offline machine (slow tests aside)."""
    if "slow" in request.keywords:
        return
    from vqclip import downloads

    def offline(url, output, progress):
        raise OSError(f"Failed to resolve 'drive.google.com' (network disabled in tests; {url})")

    monkeypatch.setattr(downloads, "gdown_folder", offline)


@pytest.fixture(autouse=True)
def _network_probe(monkeypatch):
    """The preflight's network probe never connects in tests: it answers "online" (downloads then go through the
    fakes above, as before the preflight) unless a test replaces it; HF_HUB_OFFLINE set by a run is undone."""
    import os

    from vqclip import preflight

    monkeypatch.setattr(preflight, "probe_network", lambda *a, **k: True)
    monkeypatch.setattr(preflight, "_network", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", os.environ.get("HF_HUB_OFFLINE", "0"))
    try:
        from huggingface_hub import constants
    except ImportError:
        return
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)


def class_photos(root, per_class: int = 6):
    """A 3-class ImageNet-layout folder of small photos (a coloured square on a random background), the same
    pixels every time: the training images of the tests that run `vqclip train` on a tiny CLIP."""
    import random
    from pathlib import Path

    from PIL import Image, ImageDraw

    rng = random.Random(0)
    root = Path(root)
    for c, color in {"apple": (200, 30, 30), "banana": (230, 220, 40), "grape": (100, 30, 140)}.items():
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            im = Image.new("RGB", (40, 48), tuple(rng.randrange(256) for _ in range(3)))
            ImageDraw.Draw(im).rectangle((5, 5, 30, 30), fill=color)
            im.save(root / c / f"{i}.png")
    return root
