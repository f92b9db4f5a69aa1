"""The batch folder: batch.json (what the batch is), manifest.jsonl (one line per finished job) and job folders.

A job is finished when its run.json says `finished` for the same job fingerprint AND the manifest has an `ok` line
for it. Writes are atomic (run.json last) and the manifest is appended one whole line per write, so several
processes can work on one batch folder.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import VqclipError, bad_arg
from ..io import append_jsonl, read_jsonl, write_json
from ..outputs import IMAGE_NAME, RECORD_NAME
from .plan import FORMAT, Job, item_conflicts, merge_records, record_differences

BATCH_NAME = "batch.json"
MANIFEST_NAME = "manifest.jsonl"


def read_batch_record(folder: str | os.PathLike) -> dict | None:
    """batch.json of a batch folder, or None when there is none; a broken one is an error."""
    path = Path(folder) / BATCH_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise bad_arg("--out", "batch.json in the folder cannot be read", str(path),
                      f"Fix or remove it, or pass --overwrite ({e}).") from e
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise bad_arg("--out", f"batch.json in the folder is not a {FORMAT} record", str(path),
                      "Choose another --out, or pass --overwrite.")
    return record


def _visible_files(folder: Path) -> list[str]:
    """Entries other than hidden ones (atomic writes leave `.name.XXXX.part.ext` temporaries while in flight)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def check_batch_dir(folder: str | os.PathLike, record: Mapping[str, Any], overwrite: bool = False) -> str:
    """How to use `folder` for the batch `record`: new, resume, extend or replace; refuse another batch's folder.

    Creates nothing, so a command that cannot start leaves no trace.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise bad_arg("--out", "must be a folder, not a file", str(folder), "Choose another --out path.")
    try:
        old = read_batch_record(folder) if folder.is_dir() else None
    except VqclipError:
        if not overwrite:
            raise
        return "replace"
    if old is None:
        if folder.is_dir() and _visible_files(folder) and not overwrite:
            raise bad_arg("--out", "the folder holds files but no batch.json, so it is not a vqclip batch folder",
                          str(folder), "Choose an empty or new --out folder, or pass --overwrite.")
        return "new"
    if old.get("fingerprint") != record["fingerprint"]:
        if overwrite:
            return "replace"
        diffs = record_differences(old, record)
        raise bad_arg("--out", "the folder belongs to a batch with different settings "
                      f"({'; '.join(diffs[:6]) or 'models or settings differ'})", str(folder),
                      "Use the same settings to resume it, choose another --out, or pass --overwrite to redo its "
                      "jobs with the new settings.")
    conflicts = item_conflicts(old, record)
    if conflicts and not overwrite:
        raise bad_arg("--out", "the folder already holds other prompts under the same ids (" +
                      "; ".join(conflicts[:4]) + (f"; and {len(conflicts) - 4} more" if len(conflicts) > 4 else "")
                      + ")", str(folder), "Give those items other ids, choose another --out, or pass --overwrite.")
    known = {j["id"] for j in old.get("jobs", [])}
    return "resume" if all(j["id"] in known for j in record["jobs"]) and not conflicts else "extend"


def open_batch_dir(folder: str | os.PathLike, record: Mapping[str, Any], action: str) -> dict:
    """Create the folder and write batch.json (merged with the old plan unless replacing); return what was written.

    Replacing moves the old manifest aside (manifest.replaced-<fingerprint>.jsonl) instead of deleting anything.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        old = read_batch_record(folder) if action in ("resume", "extend", "replace") else None
    except VqclipError:  # a broken batch.json is only accepted with --overwrite ("replace")
        old = None
    manifest = folder / MANIFEST_NAME
    if action == "replace" and old is not None and old.get("fingerprint") != record["fingerprint"]:
        if manifest.exists():
            try:
                os.replace(manifest, folder / f"manifest.replaced-{old.get('fingerprint', 'old')}.jsonl")
            except FileNotFoundError:  # another shard of the same command moved it first
                pass
    end_torn_line(manifest)
    merged = merge_records(old, record) if old is not None and action != "replace" else dict(record)
    if old is None or _comparable(old) != _comparable(merged):
        merged["vqclip_version"] = _version()
        merged["updated"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        write_json(folder / BATCH_NAME, merged)
    return merged


def end_torn_line(path: Path) -> None:
    """A process that died mid-write can leave a last line without its newline; end it so the next line is whole."""
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
    except (FileNotFoundError, OSError):  # no manifest yet, or an empty one
        return
    if last != b"\n":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"\n")
        finally:
            os.close(fd)


def _comparable(record: Mapping[str, Any]) -> dict:
    return {k: v for k, v in record.items() if k not in ("updated", "vqclip_version")}


def _version() -> str:
    from .. import __version__
    return __version__


def manifest_ok(folder: str | os.PathLike) -> dict[tuple[str, str], dict]:
    """(job id, job fingerprint) -> its latest `ok` manifest line."""
    out = {}
    for line in read_jsonl(Path(folder) / MANIFEST_NAME):
        if line.get("status") == "ok" and line.get("id"):
            out[(str(line["id"]), str(line.get("fingerprint")))] = line
    return out


def finished_record(folder: str | os.PathLike, job: Job, fingerprint: str) -> dict | None:
    """The job's run.json when it is finished for this fingerprint and its image is there; else None."""
    run_dir = Path(folder) / job.folder
    try:
        record = json.loads((run_dir / RECORD_NAME).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    batch = record.get("batch") or {}
    if record.get("status") != "finished" or batch.get("fingerprint") != fingerprint:
        return None
    return record if (run_dir / str(record.get("image") or IMAGE_NAME)).is_file() else None


def job_state(folder: str | os.PathLike, job: Job, fingerprint: str, ok_lines: Mapping[tuple[str, str], dict]) -> str:
    """`done` (output and manifest agree), `recover` (output complete, manifest line lost in a crash) or `todo`."""
    if finished_record(folder, job, fingerprint) is None:
        return "todo"
    return "done" if (job.id, fingerprint) in ok_lines else "recover"


def manifest_line(job: Job, fingerprint: str, status: str, record: Mapping[str, Any] | None = None,
                  error: str | None = None, extra: Mapping[str, Any] | None = None) -> dict:
    """One manifest.jsonl line (the keys `vqclip score` reads: id, prompt, space, seed, image, record, status...)."""
    record = record or {}
    has_image = bool(record)
    line = {
        "id": job.id, "item": job.item.id, "prompt": job.item.prompt, "space": job.space, "seed": job.seed,
        "image": f"{job.folder}/{record.get('image') or IMAGE_NAME}" if has_image else None,
        "record": f"{job.folder}/{RECORD_NAME}" if has_image else None,
        "status": status, "error": error, "word_type": job.item.word_type,
        "loss": record.get("loss"), "losses": record.get("losses"),
        "seconds": (record.get("timings") or {}).get("loop_seconds"),
        "steps_done": record.get("steps_done"), "source": job.item.source, "fingerprint": fingerprint,
        "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    line.update(extra or {})
    return line


def append_manifest(folder: str | os.PathLike, line: Mapping[str, Any]) -> None:
    append_jsonl(Path(folder) / MANIFEST_NAME, line)
