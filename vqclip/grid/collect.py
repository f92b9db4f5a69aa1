"""Collecting the images of a batch folder or of a folder of `vqclip generate` runs into cells with their fields.

Shared by `vqclip grid` (PNG pages, HTML gallery) and the gallery of `vqclip ui`. Every file read here is
untrusted: malformed records are skipped, and image paths never lead out of their folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import bad_arg
from ..io import inside, read_jsonl
from ..untrusted import read_json

SETTING_FIELDS = ("steps", "size", "lr", "optimizer", "method", "loss", "cutn", "cut_pow", "augment", "noise",
                  "init_image", "init_weight")
# "run" names the image itself (the job id in a batch, the run folder below the root otherwise): two runs that
# agree on every other field (e.g. made with two CLIP models, or the same command twice) still differ in it.
FIELDS = ("prompt", "space", "seed", "word_type") + SETTING_FIELDS + ("run",)
# Fields added to the columns, in this order, when cells would otherwise share a place in the grid; "run" comes last
# and is unique, so every image gets a place.
AUTO_ORDER = ("space", "seed", "prompt") + SETTING_FIELDS + ("word_type", "run")
STATUS_NOTES = {"missing": "not run yet", "failed": "failed", "lost": "image file missing",
                "refused": "image path leads outside the folder (refused)"}


@dataclass
class Cell:
    """One image (or one planned image that is not there): its fields, file and status."""

    fields: dict[str, Any]  # FIELDS -> hashable values; "prompt" is the item id in batches
    image: Path | None = None
    status: str = "ok"  # ok | failed | missing | lost
    note: str | None = None
    prompt_text: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # for the HTML page
    info: dict[str, Any] = field(default_factory=dict)  # loss, seconds, record path


@dataclass
class Collection:
    """Cells of a folder and a title for them."""

    folder: Path
    cells: list[Cell]
    title: str
    kind: str  # batch | runs


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return value


def _settings_fields(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _hashable(settings.get(k)) for k in SETTING_FIELDS}


def _read_json(path: Path) -> dict | None:
    try:
        obj = read_json(path)
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON, nested too deep
        return None
    return obj if isinstance(obj, dict) else None


def _manifest_view(folder: Path) -> dict[str, dict]:
    """Job id -> its deciding manifest line: the latest, except that a later failure does not undo an ok."""
    out: dict[str, dict] = {}
    for line in read_jsonl(folder / "manifest.jsonl"):
        key = str(line.get("id"))
        if key in out and out[key].get("status") == "ok" and line.get("status") != "ok" and \
                out[key].get("fingerprint") == line.get("fingerprint"):
            continue
        out[key] = line
    return out


def _batch_cell(folder: Path, job: Mapping[str, Any], item: Mapping[str, Any], base: Mapping[str, Any],
                line: Mapping[str, Any] | None) -> Cell:
    settings = {**base, **_dict(item.get("overrides"))}
    fields = {"prompt": _scalar(item.get("id", job.get("item"))), "space": job["space"], "seed": job["seed"],
              "word_type": _scalar(item.get("word_type")), **_settings_fields(settings), "run": job["id"]}
    cell = Cell(fields, prompt_text=str(item.get("prompt", "")), settings=settings, status="missing")
    if line and job.get("fingerprint") and line.get("fingerprint") not in (None, job["fingerprint"]):
        line = None  # written by an earlier batch with other settings
    if line is None:
        cell.note = STATUS_NOTES["missing"]
    elif line.get("status") == "ok" and line.get("image"):
        image = inside(folder, line["image"])  # manifests are untrusted: never follow one out of the folder
        cell.image, cell.status = ((image, "ok") if image is not None and image.is_file() else
                                   (None, "lost" if image is not None else "refused"))
        cell.note = None if cell.status == "ok" else STATUS_NOTES[cell.status]
    else:
        cell.status, cell.note = "failed", f"failed: {line.get('error') or line.get('status')}"
    if line:
        cell.info = {k: line.get(k) for k in ("loss", "seconds", "record", "image", "error") if line.get(k) is not None}
    return cell


def _dict(value: Any) -> dict:
    """`value` when it is a JSON object, else {}: batch.json, run.json and manifest lines are untrusted input."""
    return value if isinstance(value, dict) else {}


def _scalar(value: Any) -> Any:
    """A field value usable as a grid key (hashable, printable), whatever type the file gave."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else json.dumps(value, default=str)


def collect_batch(folder: Path) -> Collection:
    """Cells of every planned job of a batch folder, found or not; malformed jobs and lines are left out."""
    record = _read_json(folder / "batch.json") or {}
    items = _dict(record.get("items"))
    base = _dict(record.get("settings"))
    lines = _manifest_view(folder)
    cells, planned = [], set()
    jobs = record.get("jobs") if isinstance(record.get("jobs"), list) else []
    for job in jobs:
        if not isinstance(job, dict) or not isinstance(job.get("id"), str):
            continue
        job = {**job, "space": _scalar(job.get("space")), "seed": _scalar(job.get("seed"))}
        planned.add(job["id"])
        item = _dict(items.get(job.get("item")) if isinstance(job.get("item"), str) else None) or \
            {"id": _scalar(job.get("item")), "prompt": str(job.get("item"))}
        cells.append(_batch_cell(folder, job, item, base, lines.get(job["id"])))
    for job_id, line in lines.items():  # finished jobs of a plan written after batch.json was read
        if job_id in planned or line.get("status") != "ok" or not line.get("image"):
            continue
        record_path = inside(folder, line.get("record"))
        run = (_read_json(record_path) if record_path is not None else None) or {}
        item = {"id": _scalar(line.get("item")) or job_id.split("/")[0], "prompt": str(line.get("prompt", "")),
                "word_type": _scalar(line.get("word_type"))}
        job = {"id": job_id, "space": _scalar(line.get("space")), "seed": _scalar(line.get("seed"))}
        cells.append(_batch_cell(folder, job, item, _dict(run.get("settings")) or base, line))
    n_items = len({c.fields["prompt"] for c in cells})
    title = f"{folder.name}: {n_items} prompts"
    return Collection(folder, cells, title, "batch")


def _run_cell(dirpath: str | os.PathLike, folder: Path) -> Cell | None:
    """The cell of one `vqclip generate` run folder (None when its run.json is unreadable)."""
    run = _read_json(Path(dirpath) / "run.json")
    if run is None:
        return None
    recorded = run.get("space")
    space = (run.get("text_method") or run.get("space_name")  # text_method: forget+negative, ... (issue 27)
             or (recorded.get("space") if isinstance(recorded, dict) else recorded))
    settings = _dict(run.get("settings"))
    prompt = str(run.get("prompt", ""))
    fields = {"prompt": prompt, "space": _scalar(space) or "clip", "seed": _scalar(run.get("seed")),
              "word_type": _scalar(run.get("word_type")), **_settings_fields(settings),
              "run": Path(dirpath).relative_to(folder).as_posix() if Path(dirpath) != folder else folder.name}
    image = inside(dirpath, run.get("image") or "image.png")  # run.json is untrusted: stay in its folder
    cell = Cell(fields, prompt_text=prompt, settings=settings,
                info={k: run.get(k) for k in ("loss", "steps_done") if run.get(k) is not None})
    if image is None:
        cell.status, cell.note = "refused", STATUS_NOTES["refused"]
    elif not image.is_file():
        cell.status, cell.note = "lost", STATUS_NOTES["lost"]
    else:
        cell.image = image
        if run.get("status") != "finished":  # e.g. "interrupted after 40 of 300 steps"; the message says it all
            cell.note = str(run.get("message") or run.get("status"))
    return cell


def _title(folder: Path, cells: list[Cell]) -> str:
    return f"{folder.name}: {len({c.fields['prompt'] for c in cells})} prompts"


def collect_runs(folder: Path) -> Collection:
    """Cells of `vqclip generate` run folders (run.json + image) anywhere under `folder`."""
    cells = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "run.json" not in filenames:
            continue
        dirnames[:] = []  # a run owns its sub-folders (frames)
        cell = _run_cell(dirpath, folder)
        if cell is not None:
            cells.append(cell)
    return Collection(folder, cells, _title(folder, cells), "runs")


def is_batch_dir(folder: str | os.PathLike) -> bool:
    return (Path(folder) / "batch.json").is_file() or (Path(folder) / "manifest.jsonl").is_file()


def collect_tree(folder: str | os.PathLike) -> Collection:
    """Cells of every batch folder and every run folder anywhere under `folder` (e.g. outputs/), for a gallery of
    all of them; a batch contributes its planned jobs, found or not. The "run" field names the folder below
    `folder` (and the job in a batch), so images of different batches never share a place."""
    folder = Path(folder)
    cells: list[Cell] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        if "batch.json" in filenames or "manifest.jsonl" in filenames:
            dirnames[:] = []
            rel = here.relative_to(folder).as_posix() if here != folder else folder.name
            for cell in collect_batch(here).cells:
                cell.fields["run"] = f"{rel}/{cell.fields['run']}"
                cells.append(cell)
        elif "run.json" in filenames:
            dirnames[:] = []
            cell = _run_cell(here, folder)
            if cell is not None:
                cells.append(cell)
    return Collection(folder, cells, _title(folder, cells), "tree")


def collect(folder: str | os.PathLike) -> Collection:
    """Cells of a batch folder or of a folder of runs; a folder with neither is an error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise bad_arg("DIR", "must be a batch folder or a folder of runs", str(folder),
                      "Give the --out folder of `vqclip batch` or `vqclip generate`.")
    if is_batch_dir(folder):
        found = collect_batch(folder)
    else:
        found = collect_runs(folder)
    if not found.cells:
        raise bad_arg("DIR", "holds no runs (no batch.json or manifest.jsonl, and no run.json below it)",
                      str(folder), "Run `vqclip batch FILE --out DIR` (or `vqclip generate`) first.")
    return found
