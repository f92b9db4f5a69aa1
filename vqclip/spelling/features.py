"""Frozen CLIP features of the five-tuples, cached on disk in shards keyed by (CLIP identity, images, recipe,
precision): everything that changes the numbers.

Layout of one cache folder `<cache>/features/<clip>/<images>-<recipe hash>-<precision>/`:
  meta.json            format, CLIP identity, precision, D, the full recipe, shard size, completion and skip counts
  words.json           the word list with real/nonsense flags (reproducibility)
  plan.safetensors     per tuple: image index, class id, word id, is_real, split
  text.safetensors     y_t per word (W, D), class prompts y_i (C, D), rendered class-name images (C, D)
  shard-00000.safetensors  per tuple: x_i, x_t, x_it (S, D) float16 and `valid` (S,) bool

Every file is written atomically, so an interrupted run leaves only complete shards; re-running the same command
computes the missing ones and reuses the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from ..untrusted import read_json

from ..cache import cache_dir, slug
from ..errors import VqclipError, bad_arg
from ..io import atomic_path, write_json
from .dataset import SpellingDataset, to_uint8_tensor
from .featureset import SpellingFeatures

if TYPE_CHECKING:
    from .words import WordList

log = logging.getLogger(__name__)

FORMAT = "vqclip.features/1"
STORE_DTYPE = torch.float16  # unit vectors: fp16 keeps ~3 decimals and halves the cache


def feature_dir(clip_identity: str, dataset: SpellingDataset, cache: str | None = None,
                precision: str = "fp32") -> Path:
    """`<cache>/features/<clip>/<images>-<recipe hash>-<precision>`.

    The precision CLIP ran in is part of the key: bf16/fp16 autocast on a GPU and fp32 on a CPU give features
    that differ by far more than float rounding, so one must never stand in for the other. (Folders written before
    the precision was recorded have no suffix; their precision is unknown, so they are not reused.)"""
    images = slug(dataset.source.name.split("#")[0], 40)
    return cache_dir(cache) / "features" / slug(clip_identity) / f"{images}-{dataset.key()}-{precision}"


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a safetensors file, or None if it is missing or unreadable (it will be recomputed)."""
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except Exception as e:  # a file damaged outside vqclip: recompute rather than fail
        log.warning("ignoring unreadable cache file %s (%s)", path, e)
        return None


def _shard_path(folder: Path, k: int) -> Path:
    return folder / f"shard-{k:05d}.safetensors"


def _shard_ok(folder: Path, k: int, rows: int, dim: int) -> bool:
    t = _load(_shard_path(folder, k))
    return bool(t) and all(k_ in t and tuple(t[k_].shape) == (rows, dim) for k_ in ("x_i", "x_t", "x_it")) \
        and "valid" in t and len(t["valid"]) == rows


def _check_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Refuse a folder holding features of another CLIP model or another recipe."""
    path = folder / "meta.json"
    if not path.is_file():
        return
    try:
        old = read_json(path)
    except (OSError, ValueError):
        return  # unreadable meta: rewritten below, shards are checked one by one
    if old.get("clip_model") != meta["clip_model"] or old.get("embed_dim") != meta["embed_dim"]:
        raise bad_arg("--features", f"the cache folder holds features of CLIP {old.get('clip_model')!r}",
                      meta["clip_model"], f"Use another folder or remove {folder}.")
    built = meta.get("clip_quick_gelu")
    if built is not None and bool(old.get("clip_quick_gelu", False)) != built:
        # Before vqclip followed the pretrained tag, OpenAI weights were built with GELU: other features.
        raise bad_arg("--features", f"the cache folder holds features of CLIP {meta['clip_model']!r} built "
                      f"{'without' if built else 'with'} QuickGELU, which its pretrained tag "
                      f"{'needs' if built else 'does not use'}", str(folder),
                      f"Remove {folder} so the features are extracted again with the right model.")
    precision = meta.get("clip_precision")
    if precision is not None and old.get("clip_precision") != precision:
        had = old.get("clip_precision") or "an unrecorded precision (written before vqclip recorded it)"
        raise bad_arg("--features", f"the cache folder holds features computed in {had}, not in {precision}",
                      str(folder), f"Use another folder, run with --precision {old['clip_precision']}, or remove "
                      f"{folder}." if old.get("clip_precision") else f"Use another folder or remove {folder}.")
    if old.get("recipe_key") != meta["recipe_key"]:
        raise bad_arg("--features", "the cache folder holds features of another data recipe",
                      f"{old.get('recipe_key')} != {meta['recipe_key']}", f"Use another folder or remove {folder}.")


@torch.no_grad()
def encode_images_uint8(clip, images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, D) unit vectors, in one CLIP call."""
    x = images.to(clip.device, non_blocking=True).float().div_(255)  # (B, 3, H, W) in [0, 1]
    return clip.encode_image(x).float()


@torch.no_grad()
def encode_texts(clip, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """list of N strings -> (N, D) unit vectors, batched."""
    out = [clip.encode_text(list(texts[i:i + batch_size])).float().cpu() for i in range(0, len(texts), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, clip.embed_dim)


def _text_features(clip, dataset: SpellingDataset, batch_size: int) -> dict[str, torch.Tensor]:
    y_t = encode_texts(clip, dataset.words.words)  # (W, D): words are encoded raw, no template (reference code)
    prompts = encode_texts(clip, dataset.prompts)  # (C, D)
    ids, images = dataset.class_name_images()
    feats = torch.cat([encode_images_uint8(clip, torch.stack([to_uint8_tensor(im) for im in images[i:i + batch_size]])
                                           ).cpu() for i in range(0, len(images), batch_size)])  # (C*k, D)
    class_images = torch.zeros(len(dataset.classes), clip.embed_dim).index_add_(0, torch.tensor(ids), feats)
    class_images = torch.nn.functional.normalize(class_images, dim=-1)  # mean direction of the renders
    return {"y_t": y_t, "class_prompts": prompts, "class_images": class_images}


def _encode_batch(clip, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One CLIP call for x_t, x_i, x_it of a batch; unreadable images get zero rows."""
    valid = batch["valid"].bool()
    b, v = len(valid), int(valid.sum())
    feats = encode_images_uint8(clip, torch.cat([batch["x_t"], batch["x_i"][valid], batch["x_it"][valid]])).cpu()
    x_i = torch.zeros(b, feats.shape[1])
    x_it = torch.zeros(b, feats.shape[1])
    x_i[valid], x_it[valid] = feats[b:b + v], feats[b + v:]
    return {"x_t": feats[:b], "x_i": x_i, "x_it": x_it, "valid": valid}


def _extraction_meta(clip, dataset: SpellingDataset, precision: str, shard_size: int) -> dict[str, Any]:
    """meta.json of a cache folder being filled: the CLIP, its precision, the recipe and the layout."""
    from .. import __version__

    return {"format": FORMAT, "clip_model": clip.identity, "clip_quick_gelu": getattr(clip, "quick_gelu", None),
            "clip_precision": precision, "embed_dim": clip.embed_dim, "recipe_key": dataset.key(),
            "recipe": dataset.recipe(), "tuples": len(dataset), "shard_size": shard_size, "classes": dataset.classes,
            "prompts": dataset.prompts, "split_sizes": dataset.split_sizes(), "vqclip_version": __version__,
            "complete": False}


def _prepare_folder(clip, dataset: SpellingDataset, folder: Path, meta: dict[str, Any], batch_size: int) -> int:
    """Check the folder holds this CLIP's features of this recipe, write meta, words, plan and text features (each
    kept if already there); returns the shard size, the one on disk if shards already fix the layout."""
    _check_meta(folder, meta)
    folder.mkdir(parents=True, exist_ok=True)
    old_shard = _old_shard_size(folder)
    if old_shard:
        meta["shard_size"] = old_shard  # shards already on disk fix the layout
    write_json(folder / "meta.json", meta)
    dataset.words.save(folder / "words.json")
    if _load(folder / "plan.safetensors") is None:
        _save(folder / "plan.safetensors", dataset.tuple_table())
    text = _load(folder / "text.safetensors")
    if text is None or text["y_t"].shape != (len(dataset.words), clip.embed_dim):
        _save(folder / "text.safetensors", _text_features(clip, dataset, batch_size))
    return meta["shard_size"]


def _shard_tensors(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One shard from its encoded batches: features stored as STORE_DTYPE, the `valid` mask as is."""
    shard = {key: torch.cat([p[key] for p in parts]) for key in ("x_i", "x_t", "x_it", "valid")}
    return {key: (v if key == "valid" else v.to(STORE_DTYPE)) for key, v in shard.items()}


def _encode_shards(clip, dataset: SpellingDataset, folder: Path, rows: list[int], todo: list[int], shard_size: int,
                   batch_size: int, num_workers: int, progress: bool,
                   callback: Callable[[dict], None] | None) -> None:
    """Encode the tuples of the shards in `todo` and save each shard as soon as all its rows are encoded."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    n = len(dataset)
    batches = [list(range(s, min(s + batch_size, k * shard_size + rows[k])))
               for k in todo for s in range(k * shard_size, k * shard_size + rows[k], batch_size)]
    bar = tqdm(total=n, initial=n - sum(rows[k] for k in todo), unit="tuple", desc="features",
               disable=not progress)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                        pin_memory=clip.device.type == "cuda")
    parts: dict[int, list[dict]] = {}
    for batch in loader:
        k = int(batch["index"][0]) // shard_size
        parts.setdefault(k, []).append(_encode_batch(clip, batch))
        bar.update(len(batch["index"]))
        if sum(len(p["valid"]) for p in parts[k]) == rows[k]:
            _save(_shard_path(folder, k), _shard_tensors(parts.pop(k)))
            if callback:
                callback({"shard": k, "shards": len(rows), "rows": rows[k]})
    bar.close()


def extract_features(clip, dataset: SpellingDataset, out: str | Path | None = None, cache: str | None = None,
                     batch_size: int = 64, num_workers: int = 0, shard_size: int = 4096, progress: bool = True,
                     callback: Callable[[dict], None] | None = None) -> Path:
    """Compute (or finish computing) the features of every tuple; returns the cache folder."""
    if batch_size < 1 or shard_size < 1 or num_workers < 0:
        raise bad_arg("--extract-batch-size", "batch and shard sizes must be >= 1, workers >= 0",
                      (batch_size, shard_size, num_workers), "Use e.g. 64, 4096, 4.")
    precision = getattr(clip, "precision", "fp32")
    folder = Path(out) if out else feature_dir(clip.identity, dataset, cache, precision)
    n, dim = len(dataset), clip.embed_dim
    meta = _extraction_meta(clip, dataset, precision, shard_size)
    shard_size = _prepare_folder(clip, dataset, folder, meta, batch_size)
    n_shards = math.ceil(n / shard_size)
    rows = [min(shard_size, n - k * shard_size) for k in range(n_shards)]
    todo = [k for k in range(n_shards) if not _shard_ok(folder, k, rows[k], dim)]
    start = time.perf_counter()
    _encode_shards(clip, dataset, folder, rows, todo, shard_size, batch_size, num_workers, progress, callback)
    skipped = sum(int((~_load(_shard_path(folder, k))["valid"]).sum()) for k in range(n_shards))
    meta.update(complete=True, skipped_images=skipped, seconds_last_run=round(time.perf_counter() - start, 2))
    write_json(folder / "meta.json", meta)
    if skipped:
        log.warning("%d of %d images could not be read and were skipped", skipped, n)
    return folder


def _old_shard_size(folder: Path) -> int | None:
    path = folder / "meta.json"
    if not path.is_file() or not any(folder.glob("shard-*.safetensors")):
        return None
    try:
        return int(read_json(path)["shard_size"])
    except (OSError, ValueError, KeyError):
        return None


MAX_SHARDS = 1_000_000


def _damaged(folder: Path, file: str, rule: str) -> VqclipError:
    """The one-line error for a feature cache file that breaks a rule: name the file, say how to rebuild it."""
    return bad_arg("--features", f"{file}: {rule}", str(folder),
                   f"The feature cache is damaged: remove {folder} (or pass another folder) and run again to "
                   "extract the features anew.")


def read_meta(folder: str | Path) -> dict:
    """meta.json of a feature cache folder, checked for every key and type the loader relies on."""
    folder = Path(folder)
    path = folder / "meta.json"
    if not path.is_file():
        raise bad_arg("--features", "not a vqclip feature cache folder (no meta.json)", str(folder),
                      "Pass a folder made by `vqclip train`, or leave --features out to extract.")
    try:
        meta = read_json(path)  # bounded: a regular UTF-8 file, 64 MiB, 64 levels
    except (OSError, ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise _damaged(folder, "meta.json", f"is not readable JSON ({type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise _damaged(folder, "meta.json", "must hold a JSON object")
    if meta.get("format") != FORMAT:
        raise bad_arg("--features", f"unknown feature cache format (expected {FORMAT})", meta.get("format"),
                      "Re-extract the features with this vqclip version.")

    def whole(key: str) -> int:
        v = meta.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _damaged(folder, "meta.json", f"`{key}` must be a whole number of at least 1 (got {v!r})")
        return v

    for key in ("embed_dim", "tuples", "shard_size"):
        whole(key)
    if not isinstance(meta.get("clip_model"), str):
        raise _damaged(folder, "meta.json", "`clip_model` must be the CLIP identity string")
    classes = meta.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise _damaged(folder, "meta.json", "`classes` must be a non-empty list of class names")
    if math.ceil(meta["tuples"] / meta["shard_size"]) > MAX_SHARDS:
        raise _damaged(folder, "meta.json", f"`tuples` / `shard_size` make more than {MAX_SHARDS} shards")
    return meta


def _check_tensors(folder: Path, file: str, tensors: dict, shapes: dict[str, tuple]) -> None:
    """Every named tensor is present with its shape (None: any size on that axis) and holds finite values."""
    for key, shape in shapes.items():
        t = tensors.get(key)
        if t is None:
            raise _damaged(folder, file, f"lacks the tensor {key!r}")
        if t.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise _damaged(folder, file, f"{key} has shape {tuple(t.shape)}, expected {want}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise _damaged(folder, file, f"{key} holds NaN or infinite values")


def _check_model(meta: dict, clip_identity: str | None, embed_dim: int | None) -> None:
    """Refuse features extracted with another CLIP than the one named, or of another width."""
    if clip_identity is not None and meta["clip_model"] != clip_identity:
        raise bad_arg("--features", f"these features were extracted with CLIP {meta['clip_model']!r}", clip_identity,
                      "Pass the same --clip/--pretrained, or extract features for this model.")
    if embed_dim is not None and meta["embed_dim"] != embed_dim:
        raise bad_arg("--features", f"these features have D={meta['embed_dim']}", embed_dim, "Use matching CLIP.")


def _read_shard(folder: Path, k: int, rows: int, dim: int) -> dict[str, torch.Tensor]:
    """Shard `k`, checked to hold `rows` finite feature rows of width `dim` and their `valid` mask."""
    shard = _load(_shard_path(folder, k))
    if shard is None:
        raise _damaged(folder, _shard_path(folder, k).name, "is not a readable safetensors file")
    _check_tensors(folder, _shard_path(folder, k).name, shard,
                   {"x_i": (rows, dim), "x_t": (rows, dim), "x_it": (rows, dim), "valid": (rows,)})
    return shard


def _read_tensors(folder: Path, meta: dict) -> tuple[dict, dict, list[dict]]:
    """plan, text and every shard of a complete folder, each checked for shape and finite values, and the plan's
    word and class ids for their range."""
    n, shard_size, dim = meta["tuples"], meta["shard_size"], meta["embed_dim"]
    n_shards = math.ceil(n / shard_size)
    missing = [k for k in range(n_shards) if not _shard_path(folder, k).is_file()]
    plan, text = _load(folder / "plan.safetensors"), _load(folder / "text.safetensors")
    if missing or plan is None or text is None:
        raise VqclipError(f"--features: the feature cache {folder} is incomplete ({n_shards - len(missing)} of "
                          f"{n_shards} shards): re-run the same command to resume the extraction.")
    shards = [_read_shard(folder, k, min(shard_size, n - k * shard_size), dim) for k in range(n_shards)]
    _check_tensors(folder, "plan.safetensors", plan, {k: (n,) for k in ("word_ids", "class_ids", "is_real", "split")})
    n_classes = len(meta["classes"])
    _check_tensors(folder, "text.safetensors", text, {"y_t": (None, dim), "class_prompts": (n_classes, dim),
                                                      "class_images": (n_classes, dim)})
    for key, limit, what in (("word_ids", len(text["y_t"]), "words in text.safetensors"),
                             ("class_ids", n_classes, "classes in meta.json")):
        ids = plan[key]
        if ids.is_floating_point() or (n and (int(ids.min()) < 0 or int(ids.max()) >= limit)):
            raise _damaged(folder, "plan.safetensors", f"{key} must index the {limit} {what}")
    return plan, text, shards


def _read_words(folder: Path, meta: dict, text: dict, plan: dict) -> WordList:
    """words.json, checked to list the words text.safetensors encodes, with the plan's real/nonsense flags."""
    from .words import WordList

    n = meta["tuples"]
    try:
        words = WordList.load(folder / "words.json", "--features")
    except VqclipError as e:
        raise _damaged(folder, "words.json", str(e).split(": ", 1)[-1].split("; got ")[0]) from None
    if len(words) != len(text["y_t"]):
        raise _damaged(folder, "words.json", f"lists {len(words)} words but text.safetensors encodes "
                                             f"{len(text['y_t'])}")
    recorded = (meta.get("recipe") or {}).get("words") if isinstance(meta.get("recipe"), dict) else None
    expected = recorded.get("sha256") if isinstance(recorded, dict) else None
    got = hashlib.sha256(json.dumps([words.words, words.is_real]).encode()).hexdigest()[:16]
    if expected is not None and got != expected:  # the same count, other words: text.safetensors encodes others
        raise _damaged(folder, "words.json", f"does not list the words the features encode (their sha256 {got} "
                                             f"is not {expected!s:.16} recorded in meta.json)")
    real = torch.tensor(words.is_real, dtype=torch.bool)
    if n and not bool((real[plan["word_ids"].long()] == plan["is_real"].bool()).all()):
        raise _damaged(folder, "words.json", "marks words real or nonsense otherwise than plan.safetensors")
    return words


def load_features(folder: str | Path, clip_identity: str | None = None, embed_dim: int | None = None,
                  dtype: torch.dtype = torch.float32) -> SpellingFeatures:
    """Read a complete cache folder into SpellingFeatures (unreadable images dropped); checks the CLIP.

    Every file is checked before use (shapes, index ranges, finite values), so a damaged cache is a one-line
    error naming the file, never a traceback or features silently wrong.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    _check_model(meta, clip_identity, embed_dim)
    plan, text, shards = _read_tensors(folder, meta)
    cat = {k: torch.cat([s[k] for s in shards]) for k in ("x_i", "x_t", "x_it", "valid")}
    valid = cat["valid"].bool()
    if not valid.any():
        raise bad_arg("--images", "none of the images could be read", f"0 of {meta['tuples']}",
                      "Check the image files.")
    words = _read_words(folder, meta, text, plan)
    f = SpellingFeatures(
        x_i=cat["x_i"][valid].to(dtype), x_t=cat["x_t"][valid].to(dtype), x_it=cat["x_it"][valid].to(dtype),
        y_t=text["y_t"][plan["word_ids"][valid]].to(dtype), class_ids=plan["class_ids"][valid].long(),
        class_features=text["class_prompts"].float(), word_ids=plan["word_ids"][valid].long(),
        is_real=plan["is_real"][valid].bool(), split=plan["split"][valid],
        class_image_features=text["class_images"].float(), words=words.words, classes=meta["classes"],
        metadata={**meta, "folder": str(folder), "skipped_images": int((~valid).sum())})
    return f
