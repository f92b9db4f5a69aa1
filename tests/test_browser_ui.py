"""`vqclip ui` and the `vqclip grid --html` gallery in a real browser: headless Chromium driven by Playwright.

The page runs in this process on the tiny models; the browser is the system's Chromium (Debian's `chromium`
package, or $VQCLIP_CHROMIUM). Without Playwright, Gradio or a Chromium these tests skip and say which is missing.
Set VQCLIP_SCREENSHOTS=DIR to keep screenshots of the page (docs/img/ui.png, docs/img/gallery.png come from here).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path

import pytest
import torch

pytest.importorskip("playwright.sync_api", reason='Playwright is not installed: pip install -e ".[test]"')
pytest.importorskip("gradio", reason='Gradio is not installed: pip install -e ".[ui]"')

from test_batch_support import make_batch, run_fake  # noqa: E402

# Gradio's queue calls pandas options that pandas 3 deprecates; not ours to fix, and not a failure of the page.
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]
from vqclip.cli import main  # noqa: E402

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_MS = 30_000


def find_chromium() -> str | None:
    """$VQCLIP_CHROMIUM, else a Chromium on PATH (Debian's `chromium` package installs /usr/bin/chromium)."""
    if os.environ.get("VQCLIP_CHROMIUM"):
        return os.environ["VQCLIP_CHROMIUM"]
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import Error, sync_playwright

    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium installed (apt-get install chromium, or set VQCLIP_CHROMIUM to its path)")
    args = ["--disable-dev-shm-usage"] + (["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else [])
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, headless=True, args=args)
        except Error as e:
            pytest.skip(f"Chromium at {executable} does not start headless: {str(e).splitlines()[0]}")
        yield b
        b.close()


class Console:
    """Console messages and uncaught page errors of one page; `errors()` lists the ones a test must not see."""

    def __init__(self, page):
        self.messages: list[tuple[str, str]] = []
        page.on("console", lambda m: self.messages.append((m.type, m.text)))
        page.on("pageerror", lambda e: self.messages.append(("pageerror", str(e))))

    def errors(self) -> list[tuple[str, str]]:
        return [m for m in self.messages if m[0] in ("error", "pageerror")]


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.console = Console(pg)
    yield pg
    context.close()


def screenshot(page, name: str) -> None:
    folder = os.environ.get("VQCLIP_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True)


@pytest.fixture(scope="module")
def ui(tiny_clip_id, tmp_path_factory):
    """The page of `vqclip ui` on the tiny models (learn and forget projections cached), served on a free port."""
    from vqclip.models.clip import load_clip
    from vqclip.models.tiny import write_taming_files
    from vqclip.projections import projection_path, save_projection
    from vqclip.ui.app import Server, launch
    from vqclip.ui.runner import ModelChoice

    root = tmp_path_factory.mktemp("ui")
    config, ckpt = write_taming_files(root / "vqgan")
    clip = load_clip(tiny_clip_id, device="cpu")
    q, _ = torch.linalg.qr(torch.randn(clip.embed_dim, 8, generator=torch.Generator().manual_seed(0)))
    for space in ("learn", "forget"):
        save_projection(projection_path(space, clip.identity, root / "cache"), q.T, space, clip.identity)
    server = Server(ModelChoice(tiny_clip_id, None, None, str(config), str(ckpt), "cpu", "auto",
                                str(root / "cache")), root / "outputs", report_seconds=0.1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    demo, url = launch(server, port=port, block=False)
    yield server, url
    demo.close()
    torch.set_num_threads(threads)


def lane_step(page, space: str) -> int:
    found = re.search(r"step (\d+)/", page.inner_text(f"#vq-lane-{space}"))
    return int(found.group(1)) if found else 0


def image_src(page, space: str) -> str | None:
    img = page.locator(f"#vq-image-{space} img")
    return img.first.get_attribute("src") if img.count() else None


def fill_form(page, prompt: str, steps: int) -> None:
    page.locator("#vq-prompt textarea").fill(prompt)
    for field, value in (("vq-width", 64), ("vq-height", 64), ("vq-steps", steps), ("vq-cutn", 2),
                         ("vq-seed", 7)):
        page.locator(f"#{field} input").fill(str(value))


def test_two_spaces_update_live_stop_keeps_them_and_the_gallery_shows_them(page, ui):
    from playwright.sync_api import expect

    server, url = ui
    page.goto(url)
    fill_form(page, "an apple", 5000)
    page.locator("#vq-spaces label", has_text="forget").click()  # clip and forget ticked at first: swap to learn
    page.locator("#vq-spaces label", has_text="learn").click()
    expect(page.locator("#vq-col-forget")).to_be_hidden()  # a column per chosen space
    expect(page.locator("#vq-col-learn")).to_be_visible()
    page.locator("#vq-start").click()

    page.wait_for_function("() => ['clip', 'learn'].every(s => document.querySelector(`#vq-image-${s} img`))")
    first = {s: (image_src(page, s), lane_step(page, s)) for s in ("clip", "learn")}
    page.wait_for_function(  # both images are replaced by later steps' images while the run goes on
        "([a, b]) => document.querySelector('#vq-image-clip img').src !== a &&"
        " document.querySelector('#vq-image-learn img').src !== b", arg=[first["clip"][0], first["learn"][0]])
    page.wait_for_function("() => document.querySelectorAll('#vq-loss-clip canvas, #vq-loss-clip svg').length > 0")
    now = {s: lane_step(page, s) for s in ("clip", "learn")}
    assert all(now[s] > first[s][1] for s in now), (first, now)
    assert "running" in page.inner_text("#vq-lane-clip") and "running" in page.inner_text("#vq-lane-learn")
    screenshot(page, "ui.png")

    page.locator("#vq-stop").click()
    page.wait_for_function("() => document.querySelector('#vq-status').innerText.includes('Stopped')")
    lanes = {s: page.inner_text(f"#vq-lane-{s}") for s in ("clip", "learn")}
    assert all("interrupted" in text for text in lanes.values()), lanes
    records = sorted(server.outputs_root.rglob("run.json"))
    assert [r.parent.name for r in records] == ["clip", "learn"]
    for r in records:
        record = json.loads(r.read_text())
        assert record["status"] == "interrupted" and 0 < record["steps_done"] < 5000 and record["seed"] == 7
        assert (r.parent / "image.png").is_file()

    page.get_by_role("tab", name="Gallery").click()
    page.wait_for_function("() => document.querySelectorAll('#vq-gallery img').length === 2")
    loaded = page.eval_on_selector_all("#vq-gallery img", "imgs => imgs.map(i => i.complete && i.naturalWidth)")
    assert loaded == [160, 160]  # 64 px images as 160 px thumbnails, decoded by the browser
    headers = page.eval_on_selector_all("#vq-gallery thead th", "ths => ths.map(t => t.innerText.trim())")
    assert headers == ["", "clip", "learn"]
    assert page.inner_text("#vq-gallery th.vq-row").startswith("an apple")
    assert "interrupted" in page.inner_text("#vq-gallery")
    screenshot(page, "gallery.png")
    assert page.console.errors() == []


def test_bad_form_values_are_one_line_errors_in_the_page(page, ui):
    server, url = ui
    before = sorted(server.outputs_root.rglob("run.json"))
    page.goto(url)
    fill_form(page, "an apple:abc", 10)
    page.locator("#vq-start").click()
    page.wait_for_function("() => document.querySelector('#vq-status').innerText.includes('error')")
    text = page.inner_text("#vq-status")
    assert "abc" in text and "Traceback" not in text
    page.locator("#vq-prompt textarea").fill("an apple")
    page.locator("#vq-steps input").fill("0")
    page.locator("#vq-start").click()
    page.wait_for_function("() => document.querySelector('#vq-status').innerText.includes('steps: must be')")
    assert sorted(server.outputs_root.rglob("run.json")) == before  # nothing ran
    assert page.console.errors() == []


def test_static_grid_gallery_loads_every_image_without_console_errors(tmp_path, page):
    spec, base = make_batch(tmp_path, prompt_text="#: word_type: real\napple\n#: word_type: nonsense\nblick\n",
                            size=(24, 24))
    out = tmp_path / "batch"
    run_fake(spec, base, out)
    assert main(["grid", str(out), "--html", "--no-png", "-q"]) == 0
    page.goto((out / "index.html").as_uri())
    page.wait_for_load_state("load")
    page.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
    page.wait_for_function("() => [...document.images].every(i => i.complete)")
    sizes = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
    assert len(sizes) == len(spec.jobs) == 12 and all(w == 24 for w in sizes), sizes
    assert page.title().startswith("batch: 2 prompts")
    assert page.console.errors() == []
