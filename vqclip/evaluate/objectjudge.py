"""Is the prompted object still in a generated image? A second CLIP, not the one that guided the generation,
classifies each image zero-shot over a word list ("a photo of a {word}"); the object counts as kept when its top-1
word is the image's prompt word.

It is a proxy: a zero-shot CLIP is itself swayed by written words (the paper's point), so an image that spells
its word can be "kept" for its writing alone. `kept_rates` therefore also counts only the images in which OCR
found no text. The judge should differ from the guide in architecture and training data (the default:
open_clip ViT-B-16 trained on LAION-2B, for the paper's OpenAI ViT-B/32); the guide itself is refused.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch

from ..errors import VqclipError, bad_arg
from .common import Encoder, encode_images, encode_texts
from .textscore import rate

DEFAULT_JUDGE_CLIP = "ViT-B-16:laion2b_s34b_b88k"  # another architecture and training set than OpenAI ViT-B/32
OTHER_JUDGE_CLIP = "ViT-B-32:openai"  # suggested when the guide is the default judge itself
JUDGE_TEMPLATE = "a photo of a {}"
NO_JUDGE = "none"
ARG = "--judge-clip"
PROXY_NOTE = ("a proxy: the judge is a zero-shot CLIP, and CLIPs read written words (the paper's point), so an image "
              "that only spells its word can count as kept; 'no text' counts only the images where OCR found none")


# ------------------------------------------------------------------------------------------------ the flag

def parse_judge_clip(text: str | None) -> tuple[str, str | None] | None:
    """`MODEL:PRETRAINED` -> (model, pretrained); `none` (or nothing) -> None.

    `local-dir:PATH` and `hf-hub:ORG/REPO` are one model each (they carry their weights); otherwise the text is cut
    at the first colon, so a weights file may be given as `ViT-B-16:/path/to/weights.bin`. A named model without
    weights is refused: open_clip would build it with random ones.
    """
    from ..models.clip import HF_HUB, LOCAL_DIR

    text = (text or "").strip()
    if not text or text.lower() == NO_JUDGE:
        return None
    if text.startswith((LOCAL_DIR, HF_HUB)):
        return text, None
    name, _, pretrained = text.partition(":")
    if not name or not pretrained.strip():
        raise bad_arg(ARG, "a named model needs its weights after a colon, MODEL:PRETRAINED (without them open_clip "
                      "builds a CLIP with random weights, which sees nothing)", text,
                      f"Try --judge-clip {DEFAULT_JUDGE_CLIP}, a weights file as MODEL:FILE, or --judge-clip none.")
    return name, pretrained


def _as_judge_error(error: VqclipError, spec: str) -> VqclipError:
    """A loader's message about --clip / --pretrained, re-worded to blame --judge-clip."""
    text = str(error)
    for flag in (error.arg, "--clip", "--pretrained"):  # the loader's own errors name no arg
        if flag and text.startswith(f"{flag}: "):
            text = text[len(flag) + 2:]
            break
    text = (text.replace("--pretrained PATH", "--judge-clip MODEL:PATH")
            .replace("--pretrained FILE", "--judge-clip MODEL:FILE")
            .replace("--clip local-dir:PATH", "--judge-clip local-dir:PATH"))
    out = VqclipError(f"{ARG}: {text.rstrip()} (judge CLIP {spec!r}; --judge-clip none skips the object check)")
    out.arg, out.exit_code = ARG, error.exit_code
    return out


def check_judge_clip(spec: str | None, guide: str, guide_pretrained: str | None) -> tuple[str, str | None] | None:
    """--judge-clip checked before any work: a model open_clip knows (or a local folder / weights file), and not the
    CLIP that guides the generation (that CLIP would grade its own work). None for `none`."""
    from ..models.clip import check_identifier, clip_identity

    judge = parse_judge_clip(spec)
    if judge is None:
        return None
    try:
        check_identifier(*judge)
        identity = clip_identity(*judge)
    except VqclipError as e:
        raise _as_judge_error(e, str(spec)) from None
    try:
        guide_identity = clip_identity(guide, guide_pretrained)
    except Exception:  # noqa: BLE001 - a guide the generation's loader refuses with its own message
        guide_identity = None
    if identity == guide_identity:
        other = OTHER_JUDGE_CLIP if parse_judge_clip(DEFAULT_JUDGE_CLIP) == judge else DEFAULT_JUDGE_CLIP
        raise bad_arg(ARG, "must be another CLIP than the one that guides the generation (--clip), or it would "
                      "judge its own work", spec, f"Pass a CLIP of another architecture and training set, e.g. "
                      f"--judge-clip {other}, or --judge-clip none to skip the object check.")
    return judge


def load_judge(spec: str, device: str = "auto", precision: str = "auto", cache_dir: str | None = None):
    """The judge CLIP through the usual loader (downloads like any CLIP); its errors name --judge-clip."""
    from ..models.clip import load_clip

    judge = parse_judge_clip(spec)
    if judge is None:
        raise ValueError(f"load_judge: no judge to load in {spec!r}")
    try:
        return load_clip(judge[0], judge[1], device=device, precision=precision, cache_dir=cache_dir)
    except VqclipError as e:
        raise _as_judge_error(e, spec) from None


# ---------------------------------------------------------------------------------------------- the judging

def judge_features(image_feats: torch.Tensor, word_feats: torch.Tensor, words: Sequence[str],
                   prompt_words: Sequence[str]) -> list[dict]:
    """(N, D) image features x (C, D) word-prompt features (unit vectors; rows of `word_feats` follow `words`)
    -> per image {"top1", "kept", "similarity"}: the nearest word, whether it is the image's own prompt word, and
    its cosine similarity."""
    if len(prompt_words) != image_feats.shape[0]:
        raise ValueError(f"judge_features: {image_feats.shape[0]} images but {len(prompt_words)} prompt words")
    if image_feats.shape[0] == 0:
        return []
    # the nearest word prompt, as the typographic protocol's zero_shot_predictions picks it, and its similarity
    sims, top = (image_feats.float() @ word_feats.float().T).max(dim=1)  # (N, C) -> (N,), (N,)
    return [{"top1": words[j], "kept": words[j] == w, "similarity": round(float(s), 5)}
            for j, w, s in zip(top.tolist(), prompt_words, sims.tolist())]


def _loader(path: str | os.PathLike) -> Callable:
    """A loader of one image file, read with vqclip's size limit (`encode_images` calls it in its batch)."""
    def load():
        from ..untrusted import open_image

        return open_image(path)
    return load


def judge_images(clip: Encoder, images: Sequence[str | os.PathLike], prompt_words: Sequence[str],
                 words: Sequence[str], template: str = JUDGE_TEMPLATE, batch_size: int = 32,
                 progress: bool = False) -> list[dict]:
    """Classify each image zero-shot over `words` with `clip` (`models.clip.load_clip`'s ClipModel, or any
    encoder with encode_image / encode_text): per image, in input order, {"word", "top1", "kept", "similarity"}.

    An unreadable image gets top1 / kept None and the reason under "error"; a prompt word missing from `words`
    is an error (the judge could never name it).
    """
    words = list(dict.fromkeys(words))
    missing = sorted({w for w in prompt_words if w not in set(words)})
    if missing:
        raise ValueError(f"judge_images: prompt words not in the word list: {', '.join(missing[:5])}")
    if len(images) != len(prompt_words):
        raise ValueError(f"judge_images: {len(images)} images but {len(prompt_words)} prompt words")
    feats, kept, failed = encode_images([_loader(im) for im in images], clip, batch_size, progress, desc="judge")
    text = encode_texts([template.format(w) for w in words], clip)  # (C, D)
    judged = judge_features(feats, text, words, [prompt_words[i] for i in kept])
    out: list[dict] = [{"word": w, "top1": None, "kept": None, "similarity": None} for w in prompt_words]
    for i, verdict in zip(kept, judged):
        out[i].update(verdict)
    for i, reason in failed.items():
        out[i]["error"] = reason
    return out


def kept_rates(records: Iterable[Mapping[str, Any]], by: str = "space") -> dict[str, dict]:
    """{group: {"kept": rate, "kept_no_text": rate}} over judged records (`kept` True / False; None is left out),
    "kept_no_text" counting only those with `no_text` True. Rates are `textscore.rate` (k, n, Wilson 95 %)."""
    counts: dict[str, list[int]] = {}
    for r in records:
        if r.get("kept") is None:
            continue
        c = counts.setdefault(str(r.get(by)), [0, 0, 0, 0])
        c[0] += bool(r["kept"])
        c[1] += 1
        if r.get("no_text"):
            c[2] += bool(r["kept"])
            c[3] += 1
    return {g: {"kept": rate(c[0], c[1]), "kept_no_text": rate(c[2], c[3])} for g, c in counts.items()}
