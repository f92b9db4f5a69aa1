"""open_clip `local-dir:` folders (open_clip_config.json + weights): checked before open_clip builds from them,
fingerprinted for a stable identity, and written by `save_local_dir`; also the pickle check of any weights file."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import VqclipError, bad_arg, one_line

# Bounds on an open_clip model config read from a local-dir folder, checked before open_clip builds anything: the
# largest published CLIPs (ViT-bigG-14: 48 vision / 32 text layers, width 1664 / 1280, 2.5 B parameters) fit well.
CLIP_CFG_LIMITS = {"embed_dim": 16384, "width": 16384, "layers": 256, "heads": 256, "context_length": 4096,
                   "vocab_size": 1_000_000, "image_size": 4096, "patch_size": 4096, "head_width": 16384}
MAX_CLIP_PARAMETERS = 5_000_000_000  # 20 GB of float32 weights
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")  # what open_clip looks for in a local-dir folder
CONFIG_FIX = "Save the folder again in open_clip's format (or fix the value in open_clip_config.json)."


def dir_fingerprint(path: Path) -> str:
    """Short content hash of an open_clip local-dir (config + weights), so a moved folder keeps its identity."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        p = path / name
        if p.is_file() and (name.endswith((".json", ".safetensors", ".bin", ".pth", ".pt"))):
            h.update(name.encode())
            h.update(str(p.stat().st_size).encode())
            with open(p, "rb") as f:  # first and last MiB: cheap and enough to tell checkpoints apart
                h.update(f.read(1 << 20))
                if p.stat().st_size > 2 << 20:
                    f.seek(-(1 << 20), os.SEEK_END)
                    h.update(f.read())
    return h.hexdigest()[:16]


def _needs_package(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


class _ConfigRules:
    """The refusals of one local-dir folder's open_clip_config.json, each naming the file and the --clip value."""

    def __init__(self, path: Path):
        self.path = path
        self.config_path = path / "open_clip_config.json"

    def refuse(self, rule: str, fix: str = CONFIG_FIX) -> VqclipError:
        return bad_arg("--clip", f"{self.config_path}: {rule}", f"local-dir:{self.path}", fix)

    def whole(self, where: str, value: Any, key: str) -> int:
        """`value` if it is a whole number from 1 to CLIP_CFG_LIMITS[key], else the refusal naming `where`."""
        high = CLIP_CFG_LIMITS[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise self.refuse(f"`{where}` must be a whole number from 1 to {high} (got {one_line(repr(value), 40)})")
        return value


def _read_model_cfg(rules: _ConfigRules) -> dict:
    """The `model_cfg` mapping of the folder's open_clip_config.json, read as bounded untrusted JSON."""
    from ..untrusted import UntrustedFileError, read_json

    try:
        config = read_json(rules.config_path, max_bytes=1 << 20, max_depth=16)
    except UntrustedFileError as e:
        raise rules.refuse(e.rule) from None
    except OSError as e:
        raise rules.refuse(f"cannot be read ({e.strerror})") from None
    model_cfg = config.get("model_cfg") if isinstance(config, dict) else None
    if not isinstance(model_cfg, dict):
        raise rules.refuse("must hold a `model_cfg` mapping")
    return model_cfg


def _built_by_package(rules: _ConfigRules, tower: str, cfg: dict) -> bool:
    """Whether a Hugging Face or timm model builds the tower from its own config; refuses a package that is not
    installed or a timm model timm does not know."""
    hf = cfg.get("hf_tokenizer_name") or cfg.get("hf_model_name")
    if hf and _needs_package("transformers"):
        raise rules.refuse(f"`{tower}` names the Hugging Face model {one_line(str(hf), 60)!r}, which needs the "
                           "package transformers", "Install it: pip install transformers.")
    timm_name = cfg.get("timm_model_name")
    if timm_name and _needs_package("timm"):
        raise rules.refuse(f"`{tower}` names the timm model {one_line(str(timm_name), 60)!r}, which needs the "
                           "package timm", "Install it: pip install timm.")
    if timm_name:
        import timm

        if not timm.is_model(str(timm_name)):
            raise rules.refuse(f"`{tower}.timm_model_name` is not a model timm {timm.__version__} knows (got "
                               f"{one_line(str(timm_name), 60)!r})", "Name a model from timm.list_models(), or "
                               "upgrade timm.")
    return bool(hf or timm_name)


def _tower_parameters(rules: _ConfigRules, tower: str, cfg: dict, embed: int) -> int:
    """About how many parameters an open_clip tower of this config has, each size checked within its bound."""
    width = rules.whole(f"{tower}.width", cfg.get("width", 512 if tower == "text_cfg" else 768), "width")
    layers = cfg.get("layers", 12)
    if isinstance(layers, (list, tuple)):  # a ModifiedResNet: blocks per stage
        if not 1 <= len(layers) <= 8:
            raise rules.refuse(f"`{tower}.layers` must be a number or a list of 1 to 8 numbers")
        depth = sum(rules.whole(f"{tower}.layers entry", n, "layers") for n in layers)
    else:
        depth = rules.whole(f"{tower}.layers", layers, "layers")
    for key in ("heads", "head_width", "patch_size"):
        if key in cfg and cfg[key] is not None:
            rules.whole(f"{tower}.{key}", cfg[key], key)
    params = 0
    if tower == "text_cfg":
        rules.whole("text_cfg.context_length", cfg.get("context_length", 77), "context_length")
        vocab = rules.whole("text_cfg.vocab_size", cfg.get("vocab_size", 49408), "vocab_size")
        params += vocab * width
    else:
        size = cfg.get("image_size", 224)
        for v in (size if isinstance(size, (list, tuple)) and len(size) == 2 else [size]):
            rules.whole("vision_cfg.image_size", v, "image_size")
    return params + 12 * width * width * depth + width * embed


def _check_weight_files(path: Path) -> None:
    """Refuse a folder without a weights file (open_clip would build a random CLIP and only log a warning), and
    scan each weights file it holds."""
    weights = [p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file()]
    if not weights:
        raise bad_arg("--clip", "the local-dir folder holds no weights file (.safetensors, .bin or .pth): open_clip "
                      "would build a CLIP with random weights", f"local-dir:{path}",
                      "Put the model's weights in the folder (e.g. open_clip_model.safetensors).")
    for p in weights:
        check_weights_file(p, "--clip")


def check_local_dir(path: Path) -> None:
    """Refuse a local-dir folder whose open_clip_config.json open_clip cannot build from, before it builds: a
    config that is not bounded JSON, sizes that are not positive whole numbers within CLIP_CFG_LIMITS, a model of
    more than MAX_CLIP_PARAMETERS, a tokenizer or tower from a package that is not installed, and no weights file
    (open_clip would build a random CLIP and only log a warning)."""
    rules = _ConfigRules(path)
    model_cfg = _read_model_cfg(rules)
    embed = rules.whole("embed_dim", model_cfg.get("embed_dim"), "embed_dim")
    params = 0
    for tower in ("text_cfg", "vision_cfg"):
        cfg = model_cfg.get(tower, {})
        if not isinstance(cfg, dict):
            raise rules.refuse(f"`{tower}` must be a mapping")
        if not _built_by_package(rules, tower, cfg):  # a package's tower is built from that package's config
            params += _tower_parameters(rules, tower, cfg, embed)
    if params > MAX_CLIP_PARAMETERS:
        raise rules.refuse(f"describes a CLIP of about {params / 1e9:.1f} B parameters, more than the "
                           f"{MAX_CLIP_PARAMETERS / 1e9:.0f} B vqclip builds")
    _check_weight_files(path)


def check_weights_file(path: Path, arg: str) -> None:
    """A pickled weights file open_clip will `torch.load(weights_only=True)`: refuse a pickle bomb (and any global
    that allocates beyond its arguments) before torch builds it."""
    from .checkpoints import CheckpointBombError, EXPANDING_GLOBALS, is_safetensors, scan_pickle

    if is_safetensors(path):
        return
    try:
        names = scan_pickle(Path(path))
    except CheckpointBombError as e:
        raise bad_arg(arg, str(e), str(path), "Use weights from a trusted source, or a .safetensors file.") from None
    except (OSError, ValueError, RuntimeError):
        return  # unreadable: open_clip's own load reports it
    if names & EXPANDING_GLOBALS:
        found = ", ".join(sorted(f"{m}.{n}" for m, n in names & EXPANDING_GLOBALS))
        raise bad_arg(arg, f"the weights file names {found}, which allocates beyond its arguments and no weights "
                      "file needs (a pickle bomb?); refused without reading it", str(path),
                      "Use weights from a trusted source, or a .safetensors file.")


def save_local_dir(model: nn.Module, model_cfg: dict, path: str | os.PathLike, preprocess_cfg: dict | None = None) -> Path:
    """Save an open_clip model in the `local-dir:` format (open_clip_config.json + open_clip_model.safetensors)."""
    from safetensors.torch import save_file

    from ..io import atomic_path, write_json

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg}
    if preprocess_cfg:
        config["preprocess_cfg"] = preprocess_cfg
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path / "open_clip_model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_json(path / "open_clip_config.json", config)
    return path
