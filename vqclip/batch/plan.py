"""The job plan of a batch: prompts × seeds × spaces, each job with a fingerprint of what determines its image."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping, Sequence

from ..errors import VqclipError, bad_arg, choices_hint
from .promptfile import FieldError, Problem, PromptFileError, PromptItem, parse_seed_list

FORMAT = "vqclip.batch/1"


@dataclass(frozen=True)
class Job:
    """One image of a batch: an item, a space and a seed; `index` is its place in the plan (used to shard)."""

    index: int
    item: PromptItem
    space: str
    seed: int

    @property
    def id(self) -> str:
        """Unique within the batch, and the job folder relative to the batch folder."""
        return f"{self.item.id}/{self.space}-s{self.seed}"

    @property
    def folder(self) -> PurePosixPath:
        return PurePosixPath(self.item.id) / f"{self.space}-s{self.seed}"


def parse_spaces(text: str | Sequence[str], arg: str = "--spaces") -> tuple[str, ...]:
    """`"clip,learn,forget"` -> ("clip", "learn", "forget"), in the order given, without repeats. An entry may also
    be a way of keeping text out in a space (`negative`, `forget+negative`, ...: generation/antitext.py), a column
    of the plan like the spaces."""
    from ..generation.antitext import METHODS, SPACES, method_label, parse_method

    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")  # a list from a --config file
    names = [str(s).strip().lower() for s in parts if str(s).strip()]
    if not names:
        raise bad_arg(arg, "name at least one space", text, "Write e.g. --spaces clip,learn,forget.")
    unknown = [n for n in names if n not in SPACES and not _is_method(n)]
    if unknown:
        raise bad_arg(arg, "unknown embedding space", ",".join(unknown),
                      choices_hint(SPACES) + f" Or a way of keeping text out: {', '.join(METHODS[2:])}.")
    names = [method_label(*parse_method(n, arg)) for n in names]
    if len(set(names)) != len(names):
        raise bad_arg(arg, "a space is listed twice", text, "List each space once.")
    return tuple(names)


def _is_method(name: str) -> bool:
    from ..generation.antitext import parse_method

    try:
        parse_method(name)
    except VqclipError:
        return False
    return True


def parse_method_ways(label: str) -> tuple[str, ...]:
    """The ways of keeping text out of a plan's space entry: `forget+textoff` -> ("textoff",)."""
    from ..generation.antitext import parse_method

    return tuple(parse_method(label)[1])


def base_space(label: str) -> str:
    """The embedding space of a plan's space entry: `forget+negative` -> forget, `negative` -> clip."""
    from ..generation.antitext import parse_method

    return parse_method(label)[0]


def parse_seeds(text: str | int | Sequence[int], arg: str = "--seeds") -> tuple[int, ...]:
    """`"0,1,2"`, `"0-9"` or `"0..9"` (inclusive) -> seeds."""
    try:
        return parse_seed_list(text if isinstance(text, (list, tuple, int)) else str(text))
    except FieldError as e:
        raise bad_arg(arg, e.rule, text, e.fix) from None


def make_plan(items: Sequence[PromptItem], spaces: Sequence[str], seeds: Sequence[int]) -> list[Job]:
    """Every (item, seed, space) in a fixed order: items as listed, then seeds, then spaces."""
    jobs = []
    for item in items:
        for seed in item.seeds if item.seeds is not None else seeds:
            for space in spaces:
                jobs.append(Job(len(jobs), item, space, int(seed)))
    return jobs


def job_settings(base, item: PromptItem, seed: int, space: str | None = None):
    """The `Settings` of one job: the batch's settings, the item's prompt and overrides, the seed, and the ways of
    keeping text out that its space entry names (`forget+negative`)."""
    from ..generation.antitext import parse_anti_text, parse_method
    from ..generation.prompts import parse_noise_prompt, parse_story

    phases = parse_story(item.prompt)
    overrides = dict(item.overrides)
    if "noise_prompts" in overrides:
        overrides["noise_prompts"] = [parse_noise_prompt(p, "noise_prompts") for p in overrides["noise_prompts"]]
    if space is not None:
        overrides["anti_text"] = parse_anti_text(parse_method(space)[1] + parse_anti_text(base.anti_text))
    return dataclasses.replace(base, prompts=phases[0], story=phases[1:], seed=int(seed), **overrides)


def check_item_settings(items: Sequence[PromptItem], base, factor: int = 1) -> None:
    """Resolve every item's settings (as `generate` would) and list all failures with file and line."""
    problems = []
    for item in items:
        try:
            job_settings(base, item, 0).resolved(factor)
        except VqclipError as e:
            file, _, line = item.source.rpartition(":")
            problems.append(Problem(file or item.source, int(line) if line.isdigit() else None,
                                    f"item {item.id!r}: {e}"))
    if problems:
        raise PromptFileError(problems)


def canonical_hash(obj: Any, n: int = 16) -> str:
    """A short sha256 of the canonical JSON of `obj`."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


ANTI_TEXT_FIELDS = ("anti_text", "negative_text", "negative_weight", "textoff", "textoff_mode", "textoff_weight")
# Fields added after batches were begun: at their defaults they stay out of batch.json's settings (same fingerprint).
LATER_FIELDS = ANTI_TEXT_FIELDS + ("init_code_probability",)


def base_settings_record(base) -> dict:
    """The batch-wide settings as recorded (resolved, without prompts and seed)."""
    from ..generation.prompts import Prompt

    resolved, _ = dataclasses.replace(base, prompts=[Prompt("x")], seed=0).resolved(1)
    record = resolved.to_dict()
    for key in ("prompts", "seed"):
        record.pop(key)
    defaults = {f.name: f.default for f in dataclasses.fields(base) if f.name in LATER_FIELDS}
    for key in LATER_FIELDS:  # at their defaults they are left out: batches begun before them resume as before
        if record.get(key) in (defaults[key], [], ()):
            record.pop(key, None)
    return record


def item_fingerprint(item: PromptItem) -> str:
    return canonical_hash({"prompt": item.prompt, "word_type": item.word_type, "overrides": item.to_dict()["overrides"]})


def job_fingerprint(batch_fp: str, job: Job, projection: str | None) -> str:
    """What determines a job's image: batch settings and models, the item, the space and its projection, the seed."""
    return canonical_hash({"batch": batch_fp, "item": item_fingerprint(job.item), "space": job.space,
                           "projection": projection, "seed": job.seed})


def file_identity(value: str | None) -> str | None:
    """A model or projection argument as recorded: files by their absolute path, names as given."""
    if value is None:
        return None
    prefix = "local-dir:" if str(value).startswith("local-dir:") else ""
    path = Path(str(value)[len(prefix):]).expanduser()
    return prefix + str(path.resolve()) if path.exists() else str(value)


def model_identity(clip: str, pretrained: str | None, vqgan: str | None, vqgan_config: str | None,
                   vqgan_checkpoint: str | None, precision: str) -> dict:
    """The models of a batch as the user named them (checked before anything is loaded)."""
    return {"clip": file_identity(clip), "pretrained": file_identity(pretrained), "vqgan": vqgan,
            "vqgan_config": file_identity(vqgan_config), "vqgan_checkpoint": file_identity(vqgan_checkpoint),
            "precision": precision}


@dataclass
class BatchSpec:
    """Everything a batch folder records in batch.json: settings, models, items and jobs."""

    settings: dict
    models: dict
    items: list[PromptItem]
    spaces: tuple[str, ...]
    seeds: tuple[int, ...]
    jobs: list[Job]
    projections: dict[str, str | None]

    @property
    def fingerprint(self) -> str:
        """Batch-wide: the settings and models every image shares."""
        return canonical_hash({"settings": self.settings, "models": self.models})

    def job_fp(self, job: Job) -> str:
        return job_fingerprint(self.fingerprint, job, self.projections.get(base_space(job.space)))

    def to_record(self) -> dict:
        return {"format": FORMAT, "fingerprint": self.fingerprint, "settings": self.settings, "models": self.models,
                "spaces": list(self.spaces), "seeds": list(self.seeds),
                "projections": dict(self.projections),
                "items": {i.id: dict(i.to_dict(), fingerprint=item_fingerprint(i)) for i in self.items},
                "jobs": [{"id": j.id, "item": j.item.id, "space": j.space, "seed": j.seed,
                          "fingerprint": self.job_fp(j)} for j in self.jobs]}


def merge_records(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict:
    """The union of two compatible batch records: items and jobs of both, new definitions winning."""
    merged = dict(new)
    merged["items"] = {**old.get("items", {}), **new["items"]}
    jobs = {j["id"]: j for j in old.get("jobs", [])}
    jobs.update({j["id"]: j for j in new["jobs"]})
    merged["jobs"] = list(jobs.values())
    merged["spaces"] = list(dict.fromkeys(list(old.get("spaces", [])) + list(new["spaces"])))
    merged["seeds"] = list(dict.fromkeys(list(old.get("seeds", [])) + list(new["seeds"])))
    merged["projections"] = {**old.get("projections", {}), **new.get("projections", {})}
    return merged


def record_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable differences in the batch-wide settings and models of two records."""
    out = []
    for section in ("settings", "models"):
        a, b = old.get(section) or {}, new.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(f"{key}: {json.dumps(a.get(key), default=str)} -> {json.dumps(b.get(key), default=str)}")
    a, b = old.get("projections") or {}, new.get("projections") or {}
    for space in sorted(set(a) & set(b)):
        if a[space] != b[space]:
            out.append(f"{space} projection: {a[space] or 'cached default'} -> {b[space] or 'cached default'}")
    return out


def item_conflicts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Item ids defined differently in the two records (same folder, different images)."""
    out = []
    for item_id, item in new["items"].items():
        prev = old.get("items", {}).get(item_id)
        if prev and prev.get("fingerprint") != item["fingerprint"]:
            out.append(f"item {item_id!r} at {item['source']} differs from the one in the folder "
                       f"(from {prev.get('source')}: prompt {prev.get('prompt')!r})")
    return out
