"""The batch folder: batch.json (what the batch is), manifest.jsonl (one line per finished job) and job folders.

A job is finished when its run.json says `finished` for the same job fingerprint AND the manifest has an `ok` line
for it. Writes are atomic (run.json last) and the manifest is appended one whole line per write, so several
processes can work on one batch folder.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
import time
from pathlib import Path
from typing import Any, Mapping

from ..cache import slug
from ..errors import VqclipError, bad_arg, one_line
from ..io import TEMP_NAME, append_jsonl, inside, linked_part, own_temporary, read_jsonl, write_json
from ..outputs import IMAGE_NAME, RECORD_NAME, is_run_dir
from ..untrusted import UntrustedFileError, read_json
from .plan import FORMAT, Job, item_conflicts, merge_records, record_differences
from .prompt_fields import ID_PATTERN, RESERVED_IDS

BATCH_NAME = "batch.json"
MANIFEST_NAME = "manifest.jsonl"


HEX16 = re.compile(r"[0-9a-f]{16}")  # a fingerprint as vqclip writes it (canonical_hash)
_JOB_ID = re.compile(r"(?P<item>[^/]+)/(?P<space>[a-z]+(?:\+[a-z]+)*)-s(?P<seed>\d{1,19})")


def read_batch_record(folder: str | os.PathLike) -> dict | None:
    """batch.json of a batch folder, or None when there is none; a broken one is an error.

    Every value that vqclip later puts in a path or compares (fingerprints, item and job ids) is checked against the
    form vqclip writes it in, so that no path is ever built from a file's contents."""
    path = Path(folder) / BATCH_NAME
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except (OSError, ValueError) as e:
        reason = e.rule if isinstance(e, UntrustedFileError) else one_line(e, 200)
        raise bad_arg("--out", "batch.json in the folder cannot be read", str(path),
                      f"Fix or remove it, or pass --overwrite ({reason}).") from None
    problem = batch_record_problem(record)
    if problem:
        error = bad_arg("--out", f"batch.json in the folder is not a {FORMAT} record ({problem})", str(path),
                        "Choose another --out, or pass --overwrite.")
        error.problem = problem
        raise error
    return record


def batch_record_problem(record: Any) -> str | None:
    """What makes `record` something other than a batch.json vqclip wrote, or None."""
    if not isinstance(record, dict):
        return f"it holds a {type(record).__name__}, not an object"
    if record.get("format") != FORMAT:
        return f"its format is {one_line(repr(record.get('format')), 60)}"
    fingerprint = record.get("fingerprint")
    if not isinstance(fingerprint, str) or not HEX16.fullmatch(fingerprint):
        return f"fingerprint {one_line(repr(fingerprint), 60)} is not 16 hex digits"
    for key, kind in (("settings", dict), ("models", dict), ("projections", dict), ("items", dict),
                      ("jobs", list), ("spaces", list), ("seeds", list)):
        if key in record and not isinstance(record[key], kind) or key in ("items", "jobs") and key not in record:
            return f"{key!r} is not {'an object' if kind is dict else 'a list'}"
    for item_id, item in record["items"].items():
        if not ID_PATTERN.match(item_id) or item_id.lower() in RESERVED_IDS:
            return f"item id {one_line(repr(item_id), 80)} is not one vqclip makes"
        if not isinstance(item, dict) or not isinstance(item.get("fingerprint"), str) or \
                not HEX16.fullmatch(item["fingerprint"]):
            return f"item {item_id!r} is not an object with a 16-hex-digit fingerprint"
    for job in record["jobs"]:
        m = _JOB_ID.fullmatch(job.get("id", "")) if isinstance(job, dict) and isinstance(job.get("id"), str) else None
        if m is None or not ID_PATTERN.match(m["item"]) or m["item"].lower() in RESERVED_IDS:
            shown = job.get("id") if isinstance(job, dict) else job
            return f"job {one_line(repr(shown), 80)} is not an object whose id is ITEM/SPACE-sSEED"
        if not isinstance(job.get("fingerprint"), str) or not HEX16.fullmatch(job["fingerprint"]):
            return f"job {job['id']!r} has no 16-hex-digit fingerprint"
    return None


def _visible_files(folder: Path) -> list[str]:
    """Entries other than hidden ones (atomic writes leave `.name.XXXX.part.ext` temporaries while in flight)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _refuse_links(folder: Path, record: Mapping[str, Any]) -> None:
    """vqclip writes batch.json, manifest.jsonl and the job folders itself: a link planted under one of those names
    (to a file or folder elsewhere) is refused, never written through."""
    for name, want_dir in ((BATCH_NAME, False), (MANIFEST_NAME, False), (CLAIMS_DIR, True)):
        path = folder / name
        if not path.is_symlink() and path.exists() and path.is_dir() != want_dir:
            raise bad_arg("--out", f"{name} in the batch folder is a {'file' if want_dir else 'folder'}, where "
                          f"vqclip keeps its own {'folder' if want_dir else 'file'}", str(path),
                          "Move it out of the batch folder (vqclip never removes what it did not write), or choose "
                          "another --out.")
        if path.is_symlink():
            raise bad_arg("--out", f"{name} in the batch folder is a symbolic link, and vqclip never writes through a "
                          "link it did not make", str(folder / name),
                          "Remove the link (or choose another --out); the file it points to is left alone.")
    for job in record.get("jobs", []):
        linked = linked_part(folder, str(job.get("id", "")))
        if linked is not None:
            raise bad_arg("--out", "a job folder of the batch is (or lies under) a symbolic link, and vqclip never "
                          "writes through a link it did not make", str(linked),
                          "Remove the link (or choose another --out); what it points to is left alone.")


def _foreign_job_folders(folder: Path, record: Mapping[str, Any]) -> list[str]:
    """Job folders of the plan that hold files but no run vqclip wrote (a user's image.png would be replaced)."""
    out = []
    for job in record.get("jobs", []):
        job_dir = folder / str(job.get("id", ""))
        if job_dir.is_dir() and any(job_dir.iterdir()) and not is_run_dir(job_dir) and \
                any(p.name in (IMAGE_NAME, RECORD_NAME) for p in job_dir.iterdir()):
            out.append(str(job_dir))
    return out


def check_batch_dir(folder: str | os.PathLike, record: Mapping[str, Any], overwrite: bool = False) -> str:
    """How to use `folder` for the batch `record`: new, resume, extend or replace; refuse another batch's folder.

    --overwrite replaces a vqclip batch (a folder with vqclip's batch.json), never a folder of other files, and never
    writes through a link planted in the folder. Creates nothing, so a command that cannot start leaves no trace.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise bad_arg("--out", "must be a folder, not a file", str(folder), "Choose another --out path.")
    if folder.is_dir():
        _refuse_links(folder, record)
    try:
        old = read_batch_record(folder) if folder.is_dir() else None
    except VqclipError as e:
        if not overwrite:
            raise
        why = f" ({e.problem})" if getattr(e, "problem", None) else ""
        raise bad_arg("--out", "--overwrite replaces only a vqclip batch, and this folder's batch.json is not one "
                      f"vqclip wrote{why}", str(folder / BATCH_NAME),
                      "Choose a new or empty --out folder; vqclip never replaces files it did not write.") from e
    if old is None:
        if folder.is_dir() and _visible_files(folder):
            if not overwrite:
                raise bad_arg("--out", "the folder holds files but no batch.json, so it is not a vqclip batch folder",
                              str(folder), "Choose an empty or new --out folder, or pass --overwrite.")
            raise bad_arg("--out", "--overwrite replaces only a vqclip batch (a folder with vqclip's batch.json), and "
                          "this folder holds other files", str(folder),
                          "Choose a new or empty --out folder; vqclip never replaces files it did not write.")
        return "new"
    foreign = _foreign_job_folders(folder, record)
    if foreign:
        raise bad_arg("--out", f"{len(foreign)} job folder(s) hold an image.png or run.json that vqclip did not "
                      "write, and vqclip never replaces files it did not write", foreign[0],
                      "Move those files away, or choose another --out.")
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
        set_aside(manifest, str(old["fingerprint"]))
    end_torn_line(manifest)
    clean_temporaries(folder)
    merged = merge_records(old, record) if old is not None and action != "replace" else dict(record)
    if old is None or _comparable(old) != _comparable(merged):
        merged["vqclip_version"] = _version()
        merged["updated"] = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        write_json(folder / BATCH_NAME, merged)
    return merged


def set_aside(manifest: Path, fingerprint: str) -> Path | None:
    """Move a replaced batch's manifest to manifest.replaced-<fingerprint>[.N].jsonl, never onto an existing file
    (a batch replaced twice under the same settings keeps both); returns the new path, or None when there was
    nothing to move (none, or another shard of the same command moved it first).

    `fingerprint` is the 16 hex digits read_batch_record checked, never other text from a file."""
    if not HEX16.fullmatch(fingerprint):
        raise ValueError(f"not a fingerprint: {fingerprint!r}")
    for n in range(1, 10_000):
        target = manifest.with_name(f"manifest.replaced-{fingerprint}{'' if n == 1 else f'.{n}'}.jsonl")
        try:
            os.link(manifest, target, follow_symlinks=False)  # fails on an existing target: nothing is replaced
        except FileExistsError:
            continue
        except FileNotFoundError:
            return None
        try:
            os.unlink(manifest)
        except FileNotFoundError:  # another shard moved it at the same moment: two copies, nothing lost
            pass
        return target
    raise bad_arg("--out", "the batch folder holds 9999 set-aside manifests of these settings",
                  str(manifest.parent), "Move some manifest.replaced-*.jsonl files away and run again.")


def end_torn_line(path: Path) -> None:
    """A process that died mid-write can leave a last line without its newline; end it so the next line is whole."""
    if path.is_symlink():  # never written through (check_batch_dir refuses it)
        return
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            last = f.read(1)
    except (FileNotFoundError, OSError):  # no manifest yet, or an empty one
        return
    if last != b"\n":
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0))
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
        record = read_json(run_dir / RECORD_NAME)
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict):
        return None
    batch = record.get("batch")
    if record.get("status") != "finished" or not isinstance(batch, dict) or batch.get("fingerprint") != fingerprint:
        return None
    image = inside(run_dir, record.get("image") or IMAGE_NAME)  # an image outside the job folder is not its image
    return record if image is not None and image.is_file() else None


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
        "group_size": (record.get("batch") or {}).get("group_size"),
        "finished": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    line.update(extra or {})
    return line


def append_manifest(folder: str | os.PathLike, line: Mapping[str, Any]) -> None:
    append_jsonl(Path(folder) / MANIFEST_NAME, line)


# ---------------------------------------------------------------------------------------------------------------
# Cooperating workers: a job is claimed with a lock file taken atomically (O_EXCL), so several `vqclip batch`
# processes on one folder (one machine, or several sharing a file system) split the jobs without duplicates.

CLAIMS_DIR = ".claims"
STALE_SECONDS = 600.0  # a claim whose owner cannot be checked (another host) is stale after this long untouched
REFRESH_SECONDS = 30.0  # a running job touches its claim this often
TEMP_STALE_SECONDS = 120.0


def claim_path(folder: str | os.PathLike, job_id: str) -> Path:
    digest = hashlib.sha256(job_id.encode("utf-8")).hexdigest()[:12]
    return Path(folder) / CLAIMS_DIR / f"{slug(job_id, 60)}-{digest}.lock"


def _pid_alive(pid: int) -> bool:
    from ..io import pid_alive

    return pid_alive(pid)


def _claim_owner(path: Path) -> dict | None:
    try:
        owner = read_json(path, max_bytes=1 << 20)
    except (OSError, ValueError):
        return None  # gone, or being written this instant
    return owner if isinstance(owner, dict) else None


def claim_is_stale(path: Path, stale_after: float = STALE_SECONDS) -> bool:
    """A claim is stale when its owner on this host is dead, or when it has not been touched for `stale_after`."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    owner = _claim_owner(path)
    if owner and owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        return not _pid_alive(owner["pid"])
    return age > stale_after


def _break_stale(path: Path, stale_after: float) -> bool:
    """Remove a stale claim; one process at a time (its own O_EXCL file), re-checking staleness once alone."""
    breaker = path.with_name(path.name + ".breaking")
    try:
        os.close(os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        try:  # a breaker killed in this tiny window leaves its file behind
            if time.time() - breaker.stat().st_mtime > 60:
                breaker.unlink()
        except FileNotFoundError:
            pass
        return False
    try:
        if claim_is_stale(path, stale_after):
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        breaker.unlink(missing_ok=True)


class Claim:
    """A job claimed by this process: refresh it while the job runs, release it when done."""

    def __init__(self, path: Path, owner: dict):
        self.path, self.owner, self.touched = path, owner, time.monotonic()

    def refresh(self) -> None:
        if time.monotonic() - self.touched >= REFRESH_SECONDS:
            self.touched = time.monotonic()
            try:
                os.utime(self.path)
            except OSError:  # a full or flaky disk must not stop the job; the claim may go stale, that is all
                pass

    def release(self) -> None:
        if _claim_owner(self.path) == self.owner:  # never remove a claim another worker took over
            self.path.unlink(missing_ok=True)


def claim_job(folder: str | os.PathLike, job_id: str, stale_after: float = STALE_SECONDS) -> Claim | None:
    """Claim `job_id` for this process, or None when another live worker holds it."""
    path = claim_path(folder, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    owner = {"host": socket.gethostname(), "pid": os.getpid(), "job": job_id,
             "claimed": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "nonce": os.urandom(6).hex()}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if not claim_is_stale(path, stale_after) or not _break_stale(path, stale_after):
                return None
            continue
        try:
            os.write(fd, json.dumps(owner).encode("utf-8"))
        finally:
            os.close(fd)
        return Claim(path, owner)
    return None


def clean_temporaries(folder: str | os.PathLike, min_age: float = TEMP_STALE_SECONDS) -> list[Path]:
    """Remove the temporaries vqclip's own killed writes left (`io.own_temporary`: a name only vqclip writes, made
    by this process or by a vqclip process of this host that is gone); a user's file, a link, and a live process's
    in-flight temporary (another worker, a running `vqclip grid`) are never touched. Links are not followed.
    `min_age` is kept for callers; liveness, not age, decides."""
    folder = Path(folder)
    removed = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d != CLAIMS_DIR]
        for name in filenames:
            path = Path(dirpath) / name
            if not TEMP_NAME.fullmatch(name) or not own_temporary(path):
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed
