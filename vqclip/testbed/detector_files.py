"""The judges on disk and in use: one self-describing .safetensors file per model, and the readers `vqclip score`
and the generation experiment use (`WorldTextReader` as an `OcrReader`, `ObjectClassifier`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import VqclipError, bad_arg, quote_error
from .detector_nets import MEAN, STD, SmallConvNet, model_outputs
from .world import World, to_tensor

NONE = "none"  # the object classifier's label for pictures without an object
DETECTOR_FORMAT = "vqclip-world-detector"
FORMAT_VERSION = "1"


def _metadata(model: SmallConvNet, world: World, kind: str, width: int, extra: dict | None = None) -> dict[str, str]:
    config = {"kind": kind, "architecture": "SmallConvNet", "width": width, "pool": model.pool,
              "heads": {k: model.heads[k].out_features for k in model.head_names}, "image_size": world.image_size,
              "classes": list(world.classes), "words": list(world.words), "none": NONE,
              "normalisation": {"scale": 1 / 255, "mean": MEAN, "std": STD}}
    return {"format": DETECTOR_FORMAT, "format_version": FORMAT_VERSION, "config": json.dumps(config),
            **{k: json.dumps(v) for k, v in (extra or {}).items()}}


def save_model(model: SmallConvNet, path: str | Path, world: World, kind: str, width: int,
               extra: dict | None = None) -> Path:
    """One self-describing .safetensors file: the weights plus, in the metadata, everything that rebuilds them."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    path = Path(path).expanduser()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=_metadata(model, world, kind, width, extra))
    return path


FIX = "Train one with vqclip.testbed.detector.train_detector_stage (it writes text_detector.safetensors and " \
      "object_classifier.safetensors), or point at such a file."


def load_model(path: str | Path, kind: str, arg: str = "detector file") -> tuple[SmallConvNet, dict]:
    """Rebuild a saved judge from its file alone; any damage or mismatch is one VqclipError naming the file."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise bad_arg(arg, f"no {kind} file there", str(path), FIX)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != DETECTOR_FORMAT:
            raise ValueError(f"not a {DETECTOR_FORMAT} file (format={meta.get('format')!r})")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"format version {meta.get('format_version')!r}, this vqclip reads {FORMAT_VERSION}")
        from ..untrusted import parse_json

        config = parse_json(meta["config"], path)
        if config.get("kind") != kind:
            raise ValueError(f"it holds a {config.get('kind')!r}, not a {kind!r}")
        model = SmallConvNet(int(config["width"]), {k: int(v) for k, v in config["heads"].items()},
                             int(config.get("pool", 1)))
        model.load_state_dict(load_file(str(path)))
        model.eval()
    except VqclipError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors, json and torch raise many types for a damaged file
        raise bad_arg(arg, f"cannot load this {kind} file ({quote_error(e)})", str(path), FIX) from None
    return model, config


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _as_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """(H, W, 3) uint8 arrays of any size -> (N, 3, size, size) uint8, resized with antialiasing."""
    out = []
    for im in images:
        pil = Image.fromarray(np.ascontiguousarray(im[..., :3]).astype(np.uint8)).convert("RGB")
        if pil.size != (size, size):
            pil = pil.resize((size, size), Image.Resampling.BILINEAR)
        out.append(pil)
    return to_tensor(out)


class WorldTextReader:
    """The text detector as an `OcrReader`: one whole-image detection reading the likeliest word when the text head
    says text (p >= 0.5), else none.

    The confidence is p_text x p_word: the model's probability that the picture shows text *and* that it says this
    word, so the score's confidence thresholds ask for a confident reading, as EasyOCR's recognition confidence does;
    the text head alone decides whether there is a detection at all (threshold 0).
    """

    def __init__(self, path: str | Path, arg: str = "detector file", threshold: float = 0.5):
        self.path = Path(path).expanduser()
        self.model, self.config = load_model(self.path, "text_detector", arg)
        self.words = list(self.config["words"])
        self.size = int(self.config["image_size"])
        self.threshold = threshold
        self.key = f"world-text-{_file_hash(self.path)[:12]}"

    @torch.no_grad()
    def probabilities(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """p_text (N,) and the word distribution (N, V)."""
        out = model_outputs(self.model, _as_batch(images, self.size))
        return torch.sigmoid(out["text"][:, 0]), torch.softmax(out["word"], dim=1)

    def read(self, images: Sequence[np.ndarray]) -> list[list]:
        from ..evaluate.ocr import Detection

        if not len(images):
            return []
        p_text, p_word = self.probabilities(images)
        best_p, best = p_word.max(dim=1)
        out = []
        for im, pt, pw, w in zip(images, p_text.tolist(), best_p.tolist(), best.tolist()):
            h, wd = im.shape[:2]
            box = ((0.0, 0.0), (float(wd), 0.0), (float(wd), float(h)), (0.0, float(h)))
            out.append([Detection(box, self.words[w], float(pt * pw))] if pt >= self.threshold else [])
        return out


class ObjectClassifier:
    """Which of the world's classes is drawn, or "none"."""

    def __init__(self, model: SmallConvNet, config: dict):
        self.model, self.config = model, config
        self.labels = [*config["classes"], config.get("none", NONE)]
        self.size = int(config["image_size"])

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray]) -> tuple[list[str], np.ndarray]:
        """(H, W, 3) uint8 arrays -> predicted labels and (N, classes + 1) probabilities."""
        if not len(images):
            return [], np.zeros((0, len(self.labels)), np.float32)
        probs = torch.softmax(model_outputs(self.model, _as_batch(images, self.size))["object"], dim=1)
        return [self.labels[i] for i in probs.argmax(1).tolist()], probs.numpy()


def load_object_classifier(path: str | Path, arg: str = "object classifier file") -> ObjectClassifier:
    model, config = load_model(path, "object_classifier", arg)
    return ObjectClassifier(model, config)
