"""The reproduce report folder: report.json (everything) and report.md (paper vs measured), written atomically.

Sections (`typographic`, `ocr`) are kept across commands: `vqclip reproduce ocr` after `vqclip reproduce
typographic` into the same folder gives one report with both tables.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
from pathlib import Path
from typing import Any, Mapping

from ..errors import bad_arg
from ..io import check_writable, sha256_file, write_json, write_text
from .paper import PAPER, format_comparison, format_paper

FORMAT = "vqclip.reproduce/1"
JSON_NAME, MD_NAME = "report.json", "report.md"
NOT_MEASURED = ("These are the numbers of this run. vqclip has not measured the paper's numbers on real weights "
                "itself; compare with care, and see docs/reproduce.md for what differs from the paper's setup.")


def read_report(folder: str | os.PathLike) -> dict | None:
    """report.json of an earlier reproduce run in `folder`, None when there is none; another file is refused."""
    path = Path(folder) / JSON_NAME
    if not path.exists():
        return None
    try:
        from ..untrusted import read_json

        data = read_json(path, "--out")
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise bad_arg("--out", f"{JSON_NAME} in the folder is not a vqclip reproduce report", str(path),
                      "Choose another --out folder; vqclip replaces only reports it wrote.")
    return data


def check_report_folder(folder: str | os.PathLike) -> None:
    """Refuse, before any work, a folder whose report files vqclip did not write."""
    read_report(folder)
    md = Path(folder) / MD_NAME
    if md.exists() and not md.read_text(encoding="utf-8", errors="replace").startswith("# vqclip reproduce"):
        raise bad_arg("--out", f"{MD_NAME} in the folder was not written by vqclip reproduce", str(md),
                      "Choose another --out folder; vqclip replaces only reports it wrote.")


def check_out_folder(folder: str | os.PathLike, typographic: bool = True) -> None:
    """--out before any work: no report files vqclip did not write, writable, and (for the typographic part) no
    user's file under typographic/ that the evaluation would replace."""
    check_report_folder(folder)
    check_writable(folder, "--out")
    if typographic:
        from ..evaluate.typographic import check_report_out

        check_report_out(Path(folder) / "typographic", overwrite=False)


def file_hashes(paths: Mapping[str, str | os.PathLike | None]) -> dict[str, dict]:
    """{label: {path, sha256}} for the files that exist (model weights, projections)."""
    out = {}
    for label, path in paths.items():
        if path and Path(path).is_file():
            out[label] = {"path": str(path), "sha256": sha256_file(path)}
    return out


def environment() -> dict:
    import torch

    from .. import __version__

    env = {"vqclip": __version__, "python": platform.python_version(), "torch": torch.__version__,
           "host": socket.gethostname(), "platform": platform.platform()}
    if torch.cuda.is_available():
        env["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return env


def write_report(folder: str | os.PathLike, sections: Mapping[str, Any], command: str) -> dict:
    """Merge `sections` into the folder's report.json (other sections kept) and write report.md from it."""
    folder = Path(folder)
    old = read_report(folder) or {}
    report = {"format": FORMAT, "paper": PAPER, "note": NOT_MEASURED,
              "sections": {**(old.get("sections") or {}), **sections},
              "commands": {**(old.get("commands") or {}), **{name: command for name in sections}},
              "environment": environment(),
              "updated": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    write_json(folder / JSON_NAME, report)
    write_text(folder / MD_NAME, markdown(report, folder))
    return report


def _rel(path: str | os.PathLike, folder: Path) -> str:
    try:
        return Path(path).resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return str(path)


def markdown(report: Mapping[str, Any], folder: Path) -> str:
    """report.md: per section the paper-vs-measured table, notes, settings, models and timing."""
    lines = ["# vqclip reproduce: paper vs measured", "",
             f"Paper: {PAPER['authors']}, *{PAPER['title']}*, {PAPER['venue']} (arXiv {PAPER['arxiv']}).", "",
             f"> {report['note']}", "",
             "Cells: measured % [95 % Wilson interval] (images counted / images). *Paper*: the published % and "
             "whether it lies inside the measured interval.", ""]
    sections = report["sections"]
    if "typographic" in sections:
        lines += _typographic_md(sections["typographic"], report["commands"].get("typographic"), folder)
    if "ocr" in sections:
        lines += _ocr_md(sections["ocr"], report["commands"].get("ocr"), folder)
    env = report["environment"]
    lines += ["## Environment", "", *(f"- {k}: {v}" for k, v in env.items()), "",
              f"Updated {report['updated']}.", ""]
    return "\n".join(lines)


def _models_md(models: Mapping[str, Any]) -> list[str]:
    lines = ["Models:", ""]
    for label, info in (models.get("files") or {}).items():
        lines.append(f"- {label}: `{info['path']}` sha256 `{info['sha256']}`")
    for label, value in (models.get("names") or {}).items():
        lines.append(f"- {label}: {value}")
    return lines + [""]


def _typographic_md(s: Mapping[str, Any], command: str | None, folder: Path) -> list[str]:
    d = s["dataset"]
    lines = ["## Typographic attacks", "",
             f"Dataset: {d['evaluated']} photos evaluated ({d['clean']} clean, {d['attacked']} attacked listed), "
             f"{len(d['objects'])} objects, {len(d['attack_words'])} attack words; `{d['root']}`. "
             f"Prompt template `{s['template']}`.", ""]
    lines += [f"- note: {n}" for n in s.get("notes", [])] + ([""] if s.get("notes") else [])
    lines += ["| protocol | space | object accuracy, all images | paper | attacked images only | attack word wins |",
              "|---|---|---|---|---|---|"]
    for r in s["rows"]:
        lines.append(f"| {r['protocol_label']} | {r['space']} | {format_comparison(r)} | {format_paper(r)} | "
                     f"{format_comparison(r['attacked'])} | {format_comparison(r['attack_wins'])} |")
    lines += ["", "The paper's 49.4 % (CLIP) and 77.2 % (forget) are compared with the *object + attack labels* "
              "protocol (docs/evaluation.md).", ""]
    lines += _models_md(s.get("models", {}))
    lines += [f"Time: {s.get('seconds', 0):.1f} s. Files: " +
              ", ".join(f"`{_rel(p, folder)}`" for p in s.get("files", {}).values()), ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    return lines


def _ocr_md(s: Mapping[str, Any], command: str | None, folder: Path) -> list[str]:
    w = s["words"]
    lines = ["## Text in generated images", "",
             f"Words: {w['per_set']} real and {w['per_set']} nonsense ({w['source']}); scale {s['scale']:g} of "
             f"the paper's {PAPER['ocr']['images_per_word_set']:,} images per word set. "
             f"{s['jobs']['planned']} images planned ({', '.join(s['spaces'])}; seed {s['seed']}), "
             f"{s['jobs']['scored']} scored, {s['jobs']['skipped']} skipped.", ""]
    if not s.get("complete", True):
        lines += [f"**Incomplete**: {s['jobs']['unfinished']} images are not generated yet (other shares, failures "
                  "or an interrupted run); the rates below count only the images scored.", ""]
    spaces = list(dict.fromkeys(r["space"] for r in s["rows"]))
    cells = {(r["threshold"], r["word_type"], r["space"]): r for r in s["rows"]}
    head = " | ".join(f"{sp} | paper" for sp in spaces)
    lines += [f"| OCR confidence | words | {head} |", "|---|---|" + "---|---|" * len(spaces)]
    for t, word_type in dict.fromkeys((r["threshold"], r["word_type"]) for r in s["rows"]):
        row = " | ".join(f"{format_comparison(cells[(t, word_type, sp)])} | {format_paper(cells[(t, word_type, sp)])}"
                         for sp in spaces)
        lines.append(f"| > {t:g} | {word_type} | {row} |")
    lines += ["", f"Paper: {PAPER['ocr']['setup']}; numbers read from its figure (±0.5).", ""]
    if s.get("legibility"):
        leg = {(r["metric"], r["word_type"], r["space"]): r for r in s["legibility"]}
        lines += ["Beyond the paper: is the prompt word itself legible (normalised edit distance ≤ 0.3), or exact?",
                  "", f"| measure | words | {' | '.join(spaces)} |", "|---|---|" + "---|" * len(spaces)]
        for metric, word_type in dict.fromkeys((r["metric"], r["word_type"]) for r in s["legibility"]):
            lines.append(f"| {metric} | {word_type} | " + " | ".join(
                format_comparison(leg.get((metric, word_type, sp), {})) for sp in spaces) + " |")
        lines.append("")
    if s.get("object"):
        lines += _object_md(s["object"], spaces)
    for page in s.get("grids", []):
        lines += [f"![{Path(page).stem}]({_rel(page, folder)})", ""]
    recipe = s.get("recipe") or {}
    if recipe:
        changed = ", ".join(f"{k}={v}" for k, v in recipe.get("overrides", {}).items()) or "none"
        lines += [f"Recipe: `{recipe['name']}` ({recipe.get('anchor', '')}); overrides: {changed}.", ""]
    lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in s["settings"].items()), "",
              f"Generation: {s['grouping']}.", ""]
    lines += _models_md(s.get("models", {}))
    if s.get("estimate"):
        lines += [f"Estimate before the run: {s['estimate']['text']}.", ""]
    t = s.get("timing", {})
    lines += ["Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items()) + ".", "",
              "Files: " + ", ".join(f"`{_rel(p, folder)}`" for p in s.get("files", {}).values()), ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    return lines


def _object_md(obj: Mapping[str, Any], spaces: list[str]) -> list[str]:
    """The object check: "object kept (judge)" and "object kept, no text" beside each column of the OCR table."""
    j = obj["judge"]
    rows = {r["space"]: r for r in obj["rows"]}
    lines = [f"Is the prompted object still there? A second CLIP, `{j['clip']}` (not the guiding one), classifies "
             f"each real word's image zero-shot over the run's {j['words']} real words (\"{j['template']}\"; chance "
             f"{j['chance_percent']:g} %); the object is kept when its top-1 word is the prompt word. This is "
             f"{j['note']} ({j['no_text']}). Nonsense words have no object and are not judged.", "",
             f"| measure | words | {' | '.join(spaces)} |", "|---|---|" + "---|" * len(spaces)]
    for key, label in (("kept", "object kept (judge)"), ("kept_no_text", "object kept, no text")):
        lines.append(f"| {label} | real | " + " | ".join(format_comparison(rows.get(sp, {}).get(key, {}))
                                                        for sp in spaces) + " |")
    if obj.get("unreadable"):
        lines += ["", f"{obj['unreadable']} of {obj['judged']} images could not be read by the judge."]
    return lines + [""]


def summary_lines(sections: Mapping[str, Any], folder: str | os.PathLike) -> list[str]:
    """What the command prints when the report is written: the table of each section this run made, then where
    the report is."""
    lines = _typographic_summary(sections["typographic"]) if "typographic" in sections else []
    lines += _ocr_summary(sections["ocr"]) if "ocr" in sections else []
    return lines + [f"report: {Path(folder) / MD_NAME}"]


def _typographic_summary(s: Mapping[str, Any]) -> list[str]:
    d = s["dataset"]
    return [f"Typographic attacks: {d['evaluated']} photos ({d['clean']} clean, {d['attacked']} attacked listed), "
            "object accuracy on all images, % [95 % CI] (k/n):",
            *(f"  {r['protocol_label']:<24} {r['space']:<7} {format_comparison(r):<28} paper {format_paper(r)}"
              for r in s["rows"]),
            *(f"  note: {note}" for note in s["notes"])]


def _ocr_summary(s: Mapping[str, Any]) -> list[str]:
    j = s["jobs"]
    return [f"Text in generated images: {j['scored']} images scored of {j['planned']} planned"
            f"{'' if s['complete'] else ' (incomplete)'}; share with any OCR text, % [95 % CI] (k/n):",
            *(f"  > {r['threshold']:<4g} {r['word_type']:<8} {r['space']:<6} {format_comparison(r):<28} "
              f"paper {format_paper(r)}" for r in s["rows"])] + _object_summary(s.get("object"))


def _object_summary(obj: Mapping[str, Any] | None) -> list[str]:
    if not obj:
        return []
    return [f"Object kept, judged by {obj['judge']['clip']} (a proxy: CLIPs read text; see the report), real words, "
            "% [95 % CI] (k/n):",
            *(f"  {r['space']:<16} kept {format_comparison(r['kept']):<28} no text "
              f"{format_comparison(r['kept_no_text'])}" for r in obj["rows"])]
