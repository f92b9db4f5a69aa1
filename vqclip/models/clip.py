"""CLIP adapter over open_clip: one small surface (encode images in [0,1], encode strings) for all of vqclip."""

from __future__ import annotations

import difflib
import hashlib
import logging
import os
import types
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import autocast, resolve_device, resolve_precision
from ..errors import VqclipError, bad_arg
from ..errors import quote_error
from .clip_local import check_local_dir, check_weights_file, dir_fingerprint
from .clip_local import save_local_dir as save_local_dir  # imported from here by tiny CLIPs and the testbed

DEFAULT_CLIP = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
QUICKGELU_SUFFIX = "-quickgelu"


def _tag_cfg(name: str, pretrained: str | None) -> dict:
    """open_clip's pretrained config of (model name, tag), or {} for a file, a schema model or no weights."""
    import open_clip

    if not pretrained or name.startswith((LOCAL_DIR, HF_HUB)):
        return {}
    return dict(open_clip.get_pretrained_cfg(name.replace("/", "-"), pretrained) or {})


def canonical_name(name: str, pretrained: str | None) -> str:
    """`ViT-B-32-quickgelu` with a tag that `ViT-B-32` carries with QuickGELU builds the same model: `ViT-B-32`.

    Both spellings then share one identity, so projections and feature caches are found either way.
    """
    base = name[:-len(QUICKGELU_SUFFIX)] if name.endswith(QUICKGELU_SUFFIX) else None
    if base and pretrained and _tag_cfg(base, pretrained).get("quick_gelu", False):
        return base
    return name


def tag_build_kwargs(name: str, pretrained: str | None) -> dict:
    """`open_clip.create_model` keyword arguments that build `name` with the activation its pretrained tag needs.

    OpenAI's weights (and some others) were trained with QuickGELU, which open_clip's plain configs such as
    `ViT-B-32` do not use: the tag's own `quick_gelu` flag decides, as its `-quickgelu` model name would.
    A weights file or a schema model (`hf-hub:`, `local-dir:`) carries its own config: nothing to add.
    """
    from open_clip.factory import get_model_config

    tag = _tag_cfg(name, pretrained)
    if not tag:
        return {}
    wanted = bool(tag.get("quick_gelu", False))
    configured = bool((get_model_config(name.replace("/", "-")) or {}).get("quick_gelu", False))
    if wanted == configured:
        return {}
    return {"force_quick_gelu": True} if wanted else {"quick_gelu": False}  # the latter: a model kwarg, which wins


def clip_identity(name: str, pretrained: str | None) -> str:
    """The stable identity string that projections record: `NAME/TAG`, `hf-hub:ORG/REPO` or a content hash."""
    if name.startswith(HF_HUB):
        return name
    if name.startswith(LOCAL_DIR):
        path = Path(name[len(LOCAL_DIR):]).expanduser()
        return f"local-dir:{path.name}#{dir_fingerprint(path)}"
    if pretrained and not _tag_cfg(name, pretrained) and os.path.isfile(pretrained):
        with open(pretrained, "rb") as f:
            head = hashlib.sha256(f.read(1 << 20)).hexdigest()[:16]
        return f"{name}/file#{head}"
    return f"{canonical_name(name, pretrained)}/{pretrained or 'random'}"


def _user_weights(name: str, pretrained: str | None) -> tuple[str, str] | None:
    """(flag, path) of the weights file or folder the user gave, if the model comes from one."""
    if name.startswith(LOCAL_DIR):
        return "--clip", str(Path(name[len(LOCAL_DIR):]).expanduser())
    if pretrained and os.path.isfile(pretrained):
        return "--pretrained", pretrained
    return None


def _load_failure_cause(error: Exception, name: str, arg: str) -> str:
    """The likely cause of a failed load of a user's weights, and the fix, from the kind of error."""
    text = str(error)
    if isinstance(error, AssertionError) or "size mismatch" in text or "Missing key" in text \
            or "Unexpected key" in text:
        if arg == "--clip":
            return ("Likely cause: the weights do not fit the architecture in open_clip_config.json; save the "
                    "folder again with the model's own config.")
        return (f"Likely cause: the weights belong to another architecture than {name}; pass the --clip name "
                "they were trained with.")
    return ("Likely cause: the file is truncated, corrupt or not an open_clip checkpoint; download it again and "
            "check its size.")


def clip_flags(name: str, pretrained: str | None) -> str:
    """The command-line flags that name this model, runnable from any folder (paths absolute, shell-quoted)."""
    import shlex

    if name.startswith(LOCAL_DIR):
        path = Path(name[len(LOCAL_DIR):]).expanduser().absolute()
        return f"--clip {shlex.quote(LOCAL_DIR + str(path))}"
    if name.startswith(HF_HUB) or not pretrained:
        return f"--clip {shlex.quote(name)}"
    if os.path.isfile(pretrained):
        pretrained = str(Path(pretrained).expanduser().absolute())
    return f"--clip {shlex.quote(name)} --pretrained {shlex.quote(pretrained)}"


def check_identifier(name: str, pretrained: str | None) -> None:
    """Refuse an unknown model name or tag (with close matches) before anything is downloaded."""
    if name.startswith((LOCAL_DIR, HF_HUB)):
        pretrained = None
    _validate_identifier(name, pretrained)


def check_schema_pretrained(name: str, pretrained: str | None) -> None:
    """A `local-dir:` or `hf-hub:` model carries its own weights: a --pretrained tag or file beside it would be
    dropped without a word, so it is refused (the default tag, or none, is fine)."""
    if name.startswith((LOCAL_DIR, HF_HUB)) and pretrained not in (None, DEFAULT_PRETRAINED):
        schema = LOCAL_DIR if name.startswith(LOCAL_DIR) else HF_HUB
        where = "the folder's own weights file" if schema == LOCAL_DIR else "the repository's weights"
        raise bad_arg("--pretrained", f"a {schema} model loads {where}, so --pretrained would be ignored",
                      pretrained, "Drop --pretrained (or use --clip NAME --pretrained FILE for a weights file of a "
                      "named model).")


def _validate_identifier(name: str, pretrained: str | None) -> None:
    import open_clip

    if name.startswith(LOCAL_DIR):
        path = Path(name[len(LOCAL_DIR):]).expanduser()
        if not (path / "open_clip_config.json").is_file():
            raise bad_arg("--clip", "a local-dir: model needs a folder holding open_clip_config.json and weights",
                          name, "Point it at a folder saved in open_clip's format.")
        check_local_dir(path)
        return
    if name.startswith(HF_HUB):
        return
    known = open_clip.list_models()
    if name.replace("/", "-") not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.5)
        hint = f"Did you mean: {', '.join(close)}? " if close else ""
        raise bad_arg("--clip", "not a model name open_clip knows", name,
                      f"{hint}`python -c \"import open_clip; print(open_clip.list_models())\"` lists all; "
                      "hf-hub:ORG/REPO and local-dir:PATH also work.")
    if pretrained is not None and not pretrained.strip():
        raise bad_arg("--pretrained", "is empty: without weights open_clip builds a CLIP with random weights, which "
                      "sees nothing", pretrained, f"Pass a tag (e.g. {DEFAULT_PRETRAINED}) or a checkpoint file, or "
                      "leave --pretrained out.")
    if pretrained and os.path.isfile(pretrained):
        check_weights_file(Path(pretrained), "--pretrained")
    if pretrained and not os.path.isfile(pretrained):
        tags = open_clip.list_pretrained_tags_by_model(name.replace("/", "-"))
        if pretrained not in tags:
            raise bad_arg("--pretrained", f"not a pretrained tag for {name} nor an existing file", pretrained,
                          f"Tags for {name}: {', '.join(tags) or '(none)'}; or give the path of a checkpoint file.")


def _check_preprocess(mean: tuple, std: tuple, size: tuple, identity: str) -> None:
    """Refuse a preprocessing config that makes every input NaN or inf (a `std` of 0) or cannot be resized to."""
    import math

    ok = len(mean) == len(std) == 3 and all(math.isfinite(v) for v in mean + std) and all(v > 0 for v in std) \
        and all(isinstance(v, int) and 0 < v <= 4096 for v in size)
    if not ok:
        raise VqclipError(f"CLIP {identity}: its preprocessing config must give 3 finite means, 3 positive "
                          f"standard deviations and an input size of 1-4096 pixels; got mean {list(mean)}, std "
                          f"{list(std)}, size {list(size)}. Fix preprocess_cfg in the model's "
                          "open_clip_config.json (OpenAI CLIP: std 0.2686, 0.2613, 0.2758).")


def _patchify_forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A forward for a ViT's patch embedding (a convolution whose stride equals its kernel, no padding) as a
    reshape and one matrix product: the same numbers, and on the CPU its backward to the pixels measured 25 ms
    against oneDNN's 131 ms for 8 images at 224² (ViT-B/32, 2 cores); generation pays that every step."""
    kh, kw = conv.kernel_size
    b, c, h, w = x.shape
    if h % kh or w % kw:  # the convolution would drop the remainder: keep its own path
        return nn.Conv2d.forward(conv, x)
    gh, gw = h // kh, w // kw
    patches = x.reshape(b, c, gh, kh, gw, kw).permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c * kh * kw)
    weight = conv.weight.reshape(conv.out_channels, -1)
    out = patches @ weight.T if conv.bias is None else torch.addmm(conv.bias, patches, weight.T)
    return out.reshape(b, gh, gw, conv.out_channels).permute(0, 3, 1, 2)


def use_matmul_patch_embedding(model: nn.Module) -> bool:
    """Give a ViT's patch-embedding convolution the reshape-and-matmul forward (weights and state dict unchanged);
    False when the model has no such convolution (ResNets, timm towers)."""
    conv = getattr(getattr(model, "visual", None), "conv1", None)
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == conv.stride and conv.padding in ((0, 0), 0)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"):
        return False
    conv.forward = types.MethodType(_patchify_forward, conv)  # deepcopy rebinds it to the copy
    return True


class ClipModel(nn.Module):
    """A frozen open_clip model behind one small interface; embeddings come back L2-normalised in fp32."""

    def __init__(self, model: nn.Module, tokenizer, identity: str, device: torch.device, precision: str = "fp32",
                 source: tuple[str, str | None] | None = None):
        super().__init__()
        import open_clip

        self.model = model.eval().requires_grad_(False)
        if device.type == "cpu":  # measured there; on GPUs cuDNN's convolution is kept (not measured)
            use_matmul_patch_embedding(self.model)
        self.tokenizer = tokenizer
        self.identity = identity
        self.source = source  # (name, pretrained) as the user gave them; the identity keeps only a hash of paths
        self.quick_gelu = uses_quick_gelu(model)
        self.device = device
        self.precision = precision
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.input_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.mean: tuple[float, ...] = tuple(float(m) for m in cfg["mean"])
        self.std: tuple[float, ...] = tuple(float(s) for s in cfg["std"])
        _check_preprocess(self.mean, self.std, self.input_size, identity)
        self.register_buffer("_mean", torch.tensor(self.mean, device=device).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(self.std, device=device).view(1, -1, 1, 1), persistent=False)
        with torch.no_grad():
            self.embed_dim = int(self.encode_text(["a"]).shape[-1])

    def train(self, mode: bool = True):  # CLIP stays frozen in eval mode whatever the caller does
        return super().train(False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] at `input_size` -> (B, D) unit vectors; differentiable w.r.t. the pixels."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise VqclipError(f"encode_image expects (B, 3, H, W) images in [0, 1]; got shape {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != self.input_size:
            raise VqclipError(f"encode_image expects images of {self.input_size} (resize first); "
                              f"got {tuple(images.shape[-2:])}")
        x = (images - self._mean) / self._std
        with autocast(self.device, self.precision):
            features = self.model.encode_image(x)
        return F.normalize(features.float(), dim=-1)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts)).to(self.device)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """list of N strings -> (N, D) unit vectors."""
        tokens = self.tokenize(texts)
        with autocast(self.device, self.precision):
            features = self.model.encode_text(tokens)
        return F.normalize(features.float(), dim=-1)

    def cli_flags(self) -> str | None:
        """`--clip NAME [--pretrained TAG_OR_FILE]` that load this model again, paths made absolute and quoted."""
        if self.source is None:
            return None
        return clip_flags(*self.source)

    def describe(self) -> dict:
        return {"identity": self.identity, "embed_dim": self.embed_dim, "input_size": list(self.input_size),
                "mean": list(self.mean), "std": list(self.std), "precision": self.precision,
                "quick_gelu": self.quick_gelu}


def create_open_clip(name: str, pretrained: str | None, **kwargs) -> nn.Module:
    """`open_clip.create_model`, built with the activation the pretrained tag was trained with."""
    import warnings

    import open_clip

    build = tag_build_kwargs(name, pretrained)
    with warnings.catch_warnings():
        if build.get("quick_gelu") is False:  # open_clip checks its config before our override: not a mismatch
            warnings.filterwarnings("ignore", message="QuickGELU mismatch", category=UserWarning)
        return open_clip.create_model(name, pretrained=pretrained, **build, **kwargs)


def uses_quick_gelu(model: nn.Module) -> bool:
    """Whether the built model's transformer blocks use QuickGELU (recorded with runs and feature caches)."""
    from open_clip.transformer import QuickGELU

    return any(isinstance(m, QuickGELU) for m in model.modules())


def load_clip(name: str = DEFAULT_CLIP, pretrained: str | None = DEFAULT_PRETRAINED, device: str = "auto",
              precision: str = "auto", cache_dir: str | None = None) -> ClipModel:
    """Load any open_clip model: `NAME` + tag or checkpoint file, `hf-hub:ORG/REPO`, or `local-dir:PATH`.

    `cache_dir` is vqclip's cache root (`--cache-dir`): downloaded CLIP weights then go to `<cache_dir>/clip`;
    without it they go to open_clip's own hub cache.
    """
    import open_clip

    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    check_schema_pretrained(name, pretrained)
    if name.startswith((LOCAL_DIR, HF_HUB)):
        pretrained = None
    cache_dir = str(Path(cache_dir).expanduser() / "clip") if cache_dir else None
    _validate_identifier(name, pretrained)
    try:
        logging.disable(logging.ERROR)  # open_clip logs the failure before raising it; we re-raise it once
        model = create_open_clip(name, pretrained, device=dev, cache_dir=cache_dir)
    except Exception as e:
        user_file = _user_weights(name, pretrained)
        damaged = _damaged_file_error(e)
        if user_file is None and not damaged and not isinstance(e, (RuntimeError, OSError, ValueError)):
            raise  # not a loading problem of a file or a download: a bug worth its traceback
        if user_file is not None:
            arg, path = user_file
            raise VqclipError(f"{arg}: could not load {path} as weights for CLIP {name!r} "
                              f"({quote_error(e, 300)}). {_load_failure_cause(e, name, arg)}") from e
        where = cache_dir or os.environ.get("HF_HUB_CACHE") or "~/.cache/huggingface/hub"
        if damaged:  # the user named a tag; the file that failed is one a download left in the cache
            folder = _hub_folder(name, pretrained, where)
            raise VqclipError(
                f"cached CLIP weights of {name!r}/{pretrained!r} in {folder}: the file is damaged or truncated "
                f"({quote_error(e)}). Delete {folder} and run again to download it anew (or pass a good copy with "
                "--pretrained PATH).") from e
        raise VqclipError(
            f"--clip: could not load {name!r} (pretrained={pretrained!r}): {quote_error(e, 300)}. If this machine is "
            f"offline, download the weights elsewhere and pass the file with --pretrained PATH, "
            f"{_hub_copy_advice(name, pretrained, where)}, or save the model in open_clip's format and use --clip "
            "local-dir:PATH.") from e
    finally:
        logging.disable(logging.NOTSET)
    user = _user_weights(name, pretrained)
    check_weights(model, f"{user[0]} {user[1]}" if user else f"cached CLIP weights of {name!r}/{pretrained!r}")
    tokenizer = open_clip.get_tokenizer(name, cache_dir=cache_dir)
    return ClipModel(model, tokenizer, clip_identity(name, pretrained), dev, prec, source=(name, pretrained))


def _damaged_file_error(error: Exception) -> bool:
    """Whether an exception from loading weights says the file itself is damaged (not missing, not offline)."""
    import pickle
    import zipfile

    from safetensors import SafetensorError

    if isinstance(error, (SafetensorError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(s in text for s in ("PytorchStreamReader", "invalid load key",
                                                                       "failed finding central directory"))


def _hub_copy_advice(name: str, pretrained: str | None, where: str) -> str:
    """How to bring a hub download to an offline machine: the whole `models--ORG--REPO` folder, as
    `preflight.hub_advice` words it (models sits below preflight in the layers, so the words are repeated here)."""
    repo = name[len(HF_HUB):].strip("/") if name.startswith(HF_HUB) else \
        str(_tag_cfg(name, pretrained).get("hf_hub", "")).strip("/")
    if not repo:
        return f"copy the hub cache to {where}"
    hub = Path(where).expanduser()
    return (f"on a machine with network run `hf download {repo} --cache-dir {hub}` and copy the whole folder "
            f"{hub / ('models--' + repo.replace('/', '--'))}/ (its blobs/, refs/ and snapshots/) to the same path here")


def _hub_folder(name: str, pretrained: str | None, where: str) -> str:
    """The hub-cache folder open_clip downloads a tag's weights to (`models--ORG--REPO`), or the cache root."""
    hub = str(_tag_cfg(name, pretrained).get("hf_hub", "")).strip("/")
    return str(Path(where).expanduser() / ("models--" + hub.replace("/", "--"))) if hub else where


def check_weights(model: nn.Module, where: str) -> None:
    """Refuse weights holding NaN or infinity: every embedding would be NaN and every loss too."""
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (+{len(bad) - 4} more)" if len(bad) > 4 else ""
        raise VqclipError(f"{where}: CLIP weights hold NaN or infinite values in {', '.join(sorted(bad)[:4])}{more}; "
                          "the file is damaged or from a diverged training run. Download it again or pass other "
                          "weights.")
