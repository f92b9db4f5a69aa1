"""The Gradio page of `vqclip ui`: a Generate tab (the spaces side by side, live, each with its loss curve) and a
Gallery tab over the outputs folder. The work is done by `runner` and `gallery`, which know nothing of Gradio."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import VqclipError
from ..spaces import SPACES
from . import require_gradio
from .gallery import ALL, build_gallery, folder_choices
from .runner import ANTI_TEXT_CHOICES, RECIPE_METHOD, Form, Job, ModelCache, ModelChoice, check_form, page_models

POLL_SECONDS = 0.25
CSS = """
.vq-live img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
.vq-gallery { border-collapse: collapse; }
.vq-gallery th, .vq-gallery td { border: 1px solid #ddd; padding: 4px; vertical-align: top; }
.vq-gallery th.vq-row { text-align: left; max-width: 16em; font-weight: normal; }
.vq-gallery img { display: block; }
.vq-sub { color: #777; font-size: 85%; overflow-wrap: anywhere; }
.vq-none { width: 160px; height: 160px; background: #eee; color: #888; display: flex; align-items: center;
           justify-content: center; text-align: center; font-size: 85%; }
.vq-caption { font-size: 85%; }
.vq-note { color: #b22; font-size: 85%; }
.vq-score { color: #246; font-size: 85%; }
.vq-gallery dl { display: grid; grid-template-columns: auto auto; gap: 0 0.6em; font-size: 80%; }
.vq-gallery dd { margin: 0; overflow-wrap: anywhere; }
"""


@dataclass
class Server:
    """What the page's handlers share: the model defaults from the command line, the loaded models, the job."""

    defaults: ModelChoice
    outputs_root: Path
    cache: ModelCache = field(default_factory=ModelCache)
    job: Job | None = None
    report_seconds: float = 0.2
    lock_models: bool = False  # the model fields show the command line's choice and cannot be changed (remote use)


def _lane_text(lane) -> str:
    loss = f" · loss {lane.losses[-1]:.4f}" if lane.losses else ""
    where = f" · `{lane.folder}`" if lane.folder else ""
    message = f" · {lane.message}" if lane.message else ""
    return f"**{lane.space}**: {lane.state} · step {lane.step}/{lane.steps}{loss}{message}{where}"


def _plot_frame(lane):
    import pandas as pd

    return pd.DataFrame({"step": lane.loss_steps, "loss": lane.losses})


@dataclass
class GenerateTab:
    """The Generate tab's components: the form fields (in `run_job`'s order), the buttons, and per space its column,
    live image, loss plot and lane line."""

    spaces: object
    form: list
    start: object
    stop: object
    status: object
    columns: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    plots: dict = field(default_factory=dict)
    lanes: dict = field(default_factory=dict)

    def live_outputs(self) -> list:
        """What `run_job` updates: the status line, then every space's image, then plot, then lane line."""
        return [self.status] + [self.images[n] for n in SPACES] + [self.plots[n] for n in SPACES] + \
               [self.lanes[n] for n in SPACES]


@dataclass
class GalleryTab:
    """The Gallery tab's components: the tab itself, its three filters, the refresh button and the results."""

    tab: object
    folder: object
    seed_filter: object
    type_filter: object
    refresh: object
    summary: object
    table: object


def build_app(server: Server):
    """The Blocks of the page (not launched)."""
    require_gradio()  # also turns Gradio's analytics off before it is imported
    import gradio as gr

    # Every live image passes through Gradio's file cache: clear what is older than 15 minutes, every 5 minutes.
    with gr.Blocks(title="vqclip", analytics_enabled=False, delete_cache=(300, 900)) as demo:
        gr.Markdown("## vqclip: compare the clip, learn and forget spaces\nPrompts as in `vqclip generate`: "
                    "`text:weight:stop` items separated by `|`, e.g. `an apple | written text:-0.5`.")
        generate = _generate_tab(gr, server)
        gallery = _gallery_tab(gr, server)
        _wire_events(gr, server, generate, gallery)
    return demo


def _generate_tab(gr, server: Server) -> GenerateTab:
    """The Generate tab: the run's fields, the models accordion, Start/Stop, and the live panels of each space."""
    with gr.Tab("Generate", id="generate"):
        run = _run_fields(gr)
        models = _models_accordion(gr, server)
        with gr.Row():
            start = gr.Button("Start", variant="primary", elem_id="vq-start")
            stop = gr.Button("Stop", variant="stop", elem_id="vq-stop")
        status = gr.Markdown("Ready.", elem_id="vq-status")
        form = [run["prompt"], run["spaces"], run["seed"], run["width"], run["height"], run["steps"], run["method"],
                run["cutn"], *models, run["recipe"], run["anti_text"]]
        tab = GenerateTab(run["spaces"], form, start, stop, status)
        _live_panels(gr, tab)
    return tab


def _run_fields(gr) -> dict:
    """The prompt, the spaces to compare and the numbers of the run, by name."""
    from ..generation.loop import METHODS
    from ..generation.recipes import RECIPES

    f = {}
    with gr.Row():
        f["prompt"] = gr.Textbox(label="prompt", placeholder="a photo of an apple", elem_id="vq-prompt", scale=4)
        f["spaces"] = gr.CheckboxGroup(list(SPACES), value=["clip", "forget"], label="spaces to compare",
                                       elem_id="vq-spaces", scale=2)
    with gr.Row():
        f["seed"] = gr.Number(0, label="seed (empty: drawn)", precision=0, elem_id="vq-seed")
        f["width"] = gr.Number(256, label="width", precision=0, elem_id="vq-width")
        f["height"] = gr.Number(256, label="height", precision=0, elem_id="vq-height")
        f["steps"] = gr.Number(200, label="steps", precision=0, elem_id="vq-steps")
        f["cutn"] = gr.Number(32, label="cutouts", precision=0, elem_id="vq-cutn")
        f["recipe"] = gr.Dropdown(sorted(RECIPES), value="vqclip", label="recipe", elem_id="vq-recipe")
        f["method"] = gr.Dropdown([RECIPE_METHOD, *METHODS], value=RECIPE_METHOD, label="method",
                                  elem_id="vq-method")
        f["anti_text"] = gr.Dropdown(list(ANTI_TEXT_CHOICES), value="none", label="also keep text out",
                                     elem_id="vq-anti-text")
    return f


def _models_accordion(gr, server: Server) -> list:
    """The model fields, folded away, in `run_job`'s order (clip ... forget projection); read-only when the command
    line fixed the models."""
    d = server.defaults
    locked = {"interactive": False} if server.lock_models else {}
    with gr.Accordion("models" + (" (fixed by the command line)" if server.lock_models else ""), open=False):
        with gr.Row():
            clip = gr.Textbox(d.clip, label="CLIP (open_clip name, hf-hub:..., local-dir:...)",
                              elem_id="vq-clip", **locked)
            pretrained = gr.Textbox(d.pretrained or "", label="pretrained tag or file", elem_id="vq-pretrained", **locked)
        with gr.Row():
            vqgan = gr.Textbox(d.vqgan or "", label="VQGAN registry name (empty: default)", elem_id="vq-vqgan", **locked)
            vqgan_config = gr.Textbox(d.vqgan_config or "", label="VQGAN config (offline)", **locked)
            vqgan_checkpoint = gr.Textbox(d.vqgan_checkpoint or "", label="VQGAN checkpoint (offline)", **locked)
        with gr.Row():
            learn_projection = gr.Textbox("", label="learn projection file (empty: cached/registered)", **locked)
            forget_projection = gr.Textbox("", label="forget projection file (empty: cached/registered)", **locked)
    return [clip, pretrained, vqgan, vqgan_config, vqgan_checkpoint, learn_projection, forget_projection]


def _live_panels(gr, tab: GenerateTab) -> None:
    """One column per space (shown when the space is ticked): its live image, its lane line and its loss curve."""
    with gr.Row():
        for name in SPACES:
            with gr.Column(visible=name in ("clip", "forget"), elem_id=f"vq-col-{name}") as col:
                tab.columns[name] = col
                tab.images[name] = gr.Image(label=name, type="pil", format="png", interactive=False,
                                            elem_id=f"vq-image-{name}", height=280, elem_classes=["vq-live"])
                tab.lanes[name] = gr.Markdown(f"**{name}**", elem_id=f"vq-lane-{name}")
                tab.plots[name] = gr.LinePlot(x="step", y="loss", label=f"{name} loss", height=200,
                                              elem_id=f"vq-loss-{name}")


def _gallery_tab(gr, server: Server) -> GalleryTab:
    """The Gallery tab: folder, seed and word-type filters over the outputs folder, a summary and the table."""
    with gr.Tab("Gallery", id="gallery", elem_id="vq-gallery-tab") as gallery_tab:
        with gr.Row():
            folder = gr.Dropdown(folder_choices(server.outputs_root), value=ALL, label="folder",
                                 elem_id="vq-folder")
            seed_filter = gr.Dropdown([ALL], value=ALL, label="seed", elem_id="vq-seed-filter")
            type_filter = gr.Dropdown([ALL], value=ALL, label="word type", elem_id="vq-type-filter")
            refresh = gr.Button("Refresh", elem_id="vq-refresh")
        summary = gr.Markdown("", elem_id="vq-gallery-summary")
        table = gr.HTML("", elem_id="vq-gallery")
    return GalleryTab(gallery_tab, folder, seed_filter, type_filter, refresh, summary, table)


def _wire_events(gr, server: Server, generate: GenerateTab, gallery: GalleryTab) -> None:
    """Ticking a space shows its column; Start runs one job at a time; Stop asks it to end; the gallery refreshes
    on its button, on any filter and on opening its tab."""
    generate.spaces.change(lambda chosen: [gr.update(visible=n in (chosen or [])) for n in SPACES], generate.spaces,
                           [generate.columns[n] for n in SPACES], queue=False)
    live_outputs = generate.live_outputs()
    generate.start.click(_job_handler(gr, server, len(live_outputs)), generate.form, live_outputs,
                         concurrency_limit=1, concurrency_id="gpu", show_progress="hidden")
    generate.stop.click(_stop_handler(server), None, generate.status, queue=False)
    filters = [gallery.folder, gallery.seed_filter, gallery.type_filter]
    gallery_io = (filters, filters + [gallery.summary, gallery.table])
    show_gallery = _gallery_handler(gr, server)
    gallery.refresh.click(show_gallery, *gallery_io, concurrency_limit=4)
    for filt in filters:
        filt.input(show_gallery, *gallery_io, concurrency_limit=4)
    gallery.tab.select(show_gallery, *gallery_io, concurrency_limit=4)


def _job_handler(gr, server: Server, n_outputs: int):
    """Start's handler: check the form, wait for a running job to end, then start one and stream its progress."""
    from ..generation.recipes import recipe_vqgan

    d = server.defaults

    def run_job(*values):
        (p, sp, sd, w, h, st, me, cu, cl, pre, vq, vqc, vqk, lp, fp, rc, at) = values
        if server.lock_models:
            lp = fp = ""
        try:
            checked = check_form(Form(p, sp or [], sd, w, h, st, me, cu, lp, fp, rc, at))
        except VqclipError as e:
            yield [f"**error:** {e}"] + [gr.skip()] * (n_outputs - 1)
            return
        choice = page_models(d, server.lock_models, cl, pre, vq, vqc, vqk)
        if not choice.vqgan and not choice.vqgan_checkpoint:  # the recipe's VQGAN (paper: f16 1024)
            choice = dataclasses.replace(choice, vqgan=recipe_vqgan(checked.settings.recipe, None))
        previous = server.job  # still running if its page was closed: the queue alone would not wait for it
        while previous is not None and not previous.done:
            yield ["Waiting for the running job to end..."] + [gr.skip()] * (n_outputs - 1)
            time.sleep(POLL_SECONDS)
        job = Job(checked, choice, server.outputs_root, server.cache, server.report_seconds)
        server.job = job
        job.start()
        yield from _stream_job(gr, job)

    return run_job


def _stream_job(gr, job: Job):
    """The page's updates while `job` runs, every POLL_SECONDS until it is done: an image only when its lane has a
    new one, a space not in the run said once."""
    seen: dict[str, int] = {}
    first = True
    while True:
        finished = job.done
        phase, current = job.snapshot()
        by_name = {lane.space: lane for lane in current}
        out_images, out_plots, out_lanes = [], [], []
        for name in SPACES:
            lane = by_name.get(name)
            if lane is None:
                out_images.append(None if first else gr.skip())
                out_plots.append(None if first else gr.skip())
                out_lanes.append(f"**{name}**: not in this run" if first else gr.skip())
                continue
            changed = lane.version != seen.get(name)
            seen[name] = lane.version
            out_images.append(lane.image if changed else (None if first else gr.skip()))
            out_plots.append(_plot_frame(lane) if changed or finished else gr.skip())
            out_lanes.append(_lane_text(lane))
        yield [_status_text(job, phase)] + out_images + out_plots + out_lanes
        first = False
        if finished:
            return
        time.sleep(POLL_SECONDS)


def _stop_handler(server: Server):
    """Stop's handler: ask the running job to end (it writes what it has)."""

    def request_stop():
        job = server.job
        if job is None or job.done:
            return "Nothing is running."
        job.request_stop()
        return "Stopping: the current images and run.json of each space are being written..."

    return request_stop


def _gallery_handler(gr, server: Server):
    """The gallery's handler: rebuild the table for the chosen filters, and offer the seeds and word types found."""

    def show_gallery(chosen_folder, chosen_seed, chosen_type):
        try:
            g = build_gallery(server.outputs_root, chosen_folder, chosen_seed, chosen_type)
        except VqclipError as e:
            return (gr.update(), gr.update(), gr.update(), f"**error:** {e}", "")
        seeds = [ALL] + g.seeds
        types = [ALL] + g.word_types
        return (gr.update(choices=folder_choices(server.outputs_root)),
                gr.update(choices=seeds, value=chosen_seed if chosen_seed in seeds else ALL),
                gr.update(choices=types, value=chosen_type if chosen_type in types else ALL),
                g.summary, g.html)

    return show_gallery


def _status_text(job: Job, phase: str) -> str:
    notices = "".join(f"\n\nnote: {n}" for n in job.notices)
    if job.error:
        return f"**error:** {job.error}"
    if phase == "loading models":
        return "Loading models (once per choice of models)..."
    if phase == "running":
        return f"Running: {', '.join(l.space for l in job.lanes)}." + notices
    folders = [str(l.folder) for l in job.lanes if l.folder]
    kept = f" Written: {', '.join(f'`{f}`' for f in folders)}." if folders else ""
    word = {"stopped": "Stopped", "finished": "Finished", "failed": "Failed"}.get(phase, phase)
    return f"**{word}.**{kept} See the Gallery tab, or run `vqclip grid` on the folder." + notices


def launch(server: Server, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
           block: bool = True):
    """Queue (one generation at a time), then serve the page in background threads; returns (demo, url)."""
    demo = build_app(server)
    demo.queue(default_concurrency_limit=1, max_size=16)
    _, url, _ = demo.launch(server_name=host, server_port=port, auth=auth, prevent_thread_lock=True,
                            quiet=True, ssr_mode=False, share=False, inbrowser=False, css=CSS,
                            footer_links=[], show_error=False, auth_message="vqclip ui: sign in")
    if block:
        wait_forever()
    return demo, url


def wait_forever() -> None:
    """Block the main thread (the server runs in its own threads) until Ctrl-C."""
    while True:
        time.sleep(3600)
