"""VQGAN adapter built from taming.modules (never taming.models: that pulls in pytorch-lightning and LPIPS)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import torch
from torch import nn

from ..errors import bad_arg

KINDS = ("vq", "gumbel")


class VQGAN(nn.Module):
    """Encoder, decoder, quant convs and codebook of a taming VQModel or GumbelVQ; images are in [0, 1]."""

    def __init__(self, ddconfig: Mapping[str, Any], n_embed: int, embed_dim: int, kind: str = "vq"):
        super().__init__()
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.ddconfig = dict(ddconfig)
        self.n_embed = int(n_embed)
        self.embed_dim = int(embed_dim)
        z_channels = int(ddconfig["z_channels"])
        self.encoder = Encoder(**ddconfig)
        with contextlib.redirect_stdout(io.StringIO()):  # taming's Decoder prints its latent shape
            self.decoder = Decoder(**ddconfig)
        self.quant_conv = nn.Conv2d(z_channels, embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, z_channels, 1)
        if kind == "vq":
            self.quantize = VectorQuantizer(n_embed, embed_dim, beta=0.25)
        else:
            self.quantize = GumbelQuantize(z_channels, embed_dim, n_embed=n_embed)
        self.requires_grad_(False).eval()

    @property
    def factor(self) -> int:
        """Pixels per latent token along each side (16 for f16 models, 8 for f8)."""
        return 2 ** (len(self.ddconfig["ch_mult"]) - 1)

    @property
    def codebook(self) -> torch.Tensor:
        """(n_embed, embed_dim) codebook vectors."""
        return (self.quantize.embedding if self.kind == "vq" else self.quantize.embed).weight

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, embed_dim, H/f, W/f) latent before quantization."""
        h = self.quant_conv(self.encoder(images * 2 - 1))
        if self.kind == "gumbel":
            # Gumbel models pick codes from logits rather than by distance; take the most likely code.
            idx = self.quantize.proj(h).argmax(dim=1)  # (B, h, w)
            h = self.codebook[idx].permute(0, 3, 1, 2)
        return h

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, h, w) quantized latent -> (B, 3, h*f, w*f) image, about [0, 1] (not clamped)."""
        return (self.decoder(self.post_quant_conv(z_q)) + 1) / 2

    def describe(self) -> dict:
        return {"kind": self.kind, "factor": self.factor, "n_embed": self.n_embed, "embed_dim": self.embed_dim}


# ---------------------------------------------------------------------------------------------------------------
# Loading taming-format files (YAML config + Lightning .ckpt / state dict / .safetensors) and converting them.

DDCONFIG_KEYS = ("z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult", "num_res_blocks",
                 "attn_resolutions")
TARGET_KINDS = {"VQModel": "vq", "GumbelVQ": "gumbel"}  # taming.models.vqgan class name -> codebook kind
TRAINING_ONLY_PREFIXES = ("loss.",)  # LPIPS + discriminator: needed to train, never to generate
CONVERTED_FORMAT = "vqclip.vqgan"
CONVERTED_VERSION = "1"


class VQGANConfig(NamedTuple):
    """What building a VQGAN needs: taming's `ddconfig`, codebook size and width, and "vq" or "gumbel"."""

    ddconfig: dict
    n_embed: int
    embed_dim: int
    kind: str


# Upper bounds far above every published VQGAN (ch 128, ch_mult up to 5 levels, 16384 codes): a config beyond them
# would only allocate until memory runs out.
_INT_LIMITS = {"z_channels": 4096, "resolution": 65536, "in_channels": 64, "out_ch": 64, "ch": 4096,
               "num_res_blocks": 64, "n_embed": 1 << 22, "embed_dim": 4096}


# The largest model a config may describe, counted before anything is allocated: published taming VQGANs have
# 50-100 M parameters (f16 16384: ~72 M); 500 M parameters are 2 GB of float32 weights.
MAX_PARAMETERS = 500_000_000


def estimate_parameters(ch: int, ch_mult: list[int], num_res_blocks: int, z_channels: int, n_attn: int,
                        in_channels: int = 3, out_ch: int = 3) -> int:
    """Roughly the weights of the encoder and decoder a ddconfig builds (3x3 convolutions dominate), in integer
    arithmetic so that any config is counted in microseconds."""
    widths = [ch * m for m in ch_mult]
    total = 9 * ch * (in_channels + out_ch)
    prev = ch
    for w in widths:  # encoder: num_res_blocks blocks per level, each two 3x3 convolutions (+ a 1x1 shortcut)
        total += num_res_blocks * 9 * (prev * w + w * w) + prev * w + 9 * w * w
        prev = w
    top = widths[-1]
    total += 2 * 2 * 9 * top * top + (n_attn + 2) * 4 * top * top + 2 * 9 * top * 2 * z_channels
    prev = top
    for w in reversed(widths):  # decoder: one block more per level
        total += (num_res_blocks + 1) * 9 * (prev * w + w * w) + prev * w + 9 * w * w
        prev = w
    return total


def check_config_values(ddconfig: Mapping, n_embed: Any, embed_dim: Any, source: str, arg: str) -> VQGANConfig | None:
    """Refuse ddconfig values the model cannot be built from (`ch_mult: []`, `ch: "abc"`, zero or negative sizes)."""
    fix = "Use the model.yaml published with the checkpoint, or fix the value in the file."

    def whole(name: str, value: Any, low: int = 1) -> int:
        high = _INT_LIMITS.get(name, 1 << 16)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise bad_arg(arg, f"`{name}` must be a whole number from {low} to {high} (got {value!r})", source, fix)
        return value

    sizes = {k: whole(k, ddconfig[k]) for k in ("z_channels", "resolution", "in_channels", "out_ch", "ch")}
    sizes["num_res_blocks"] = whole("num_res_blocks", ddconfig["num_res_blocks"])
    mult = ddconfig["ch_mult"]
    if not isinstance(mult, (list, tuple)) or not 1 <= len(mult) <= 8:
        raise bad_arg(arg, f"`ch_mult` must be a list of 1 to 8 channel multipliers (got {mult!r})", source, fix)
    for m in mult:
        whole("ch_mult entry", m)
        if m * sizes["ch"] > _INT_LIMITS["ch"]:
            raise bad_arg(arg, f"`ch` x `ch_mult` must stay at most {_INT_LIMITS['ch']} channels (got "
                               f"{sizes['ch']} x {m})", source, fix)
    attn = ddconfig["attn_resolutions"]
    if not isinstance(attn, (list, tuple)) or any(isinstance(a, bool) or not isinstance(a, int) or a < 1
                                                  for a in attn):
        raise bad_arg(arg, f"`attn_resolutions` must be a list of positive whole numbers (got {attn!r})", source, fix)
    params = estimate_parameters(sizes["ch"], list(mult), sizes["num_res_blocks"], sizes["z_channels"],
                                 len(attn), sizes["in_channels"], sizes["out_ch"])
    if n_embed is not None and isinstance(n_embed, int) and isinstance(embed_dim, int):
        params += n_embed * embed_dim
    if params > MAX_PARAMETERS:
        raise bad_arg(arg, f"the config describes a VQGAN of about {params / 1e6:,.0f} M parameters, more than the "
                      f"{MAX_PARAMETERS // 10**6:,} M vqclip builds (the largest published taming VQGANs have "
                      "under 100 M)", source, fix)
    dropout = ddconfig.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise bad_arg(arg, f"`dropout` must be a number in [0, 1) (got {dropout!r})", source, fix)
    return None if n_embed is None else VQGANConfig(dict(ddconfig), whole("n_embed", n_embed),
                                                     whole("embed_dim", embed_dim), "")


def parse_taming_config(cfg: Any, source: str = "<config>", arg: str = "--vqgan-config") -> VQGANConfig:
    """Validate a taming config dict (`model.target`, `model.params.{ddconfig,n_embed,embed_dim}`)."""
    fix = ("Use the model.yaml published with the checkpoint (taming-transformers format: model.target and "
           "model.params with ddconfig, n_embed and embed_dim).")
    model = cfg.get("model") if isinstance(cfg, Mapping) else None
    if not isinstance(model, Mapping):
        raise bad_arg(arg, "the config has no `model` section", source, fix)
    params = model.get("params")
    if not isinstance(params, Mapping):
        raise bad_arg(arg, "the config has no `model.params` section", source, fix)
    missing = [k for k in ("ddconfig", "n_embed", "embed_dim") if k not in params]
    if missing:
        raise bad_arg(arg, f"`model.params` lacks {', '.join(missing)}", source, fix)
    ddconfig = params["ddconfig"]
    if not isinstance(ddconfig, Mapping):
        raise bad_arg(arg, "`model.params.ddconfig` must be a mapping", source, fix)
    missing = [k for k in DDCONFIG_KEYS if k not in ddconfig]
    if missing:
        raise bad_arg(arg, f"`model.params.ddconfig` lacks {', '.join(missing)}", source, fix)
    target = str(model.get("target", ""))
    cls = target.rsplit(".", 1)[-1]
    if cls not in TARGET_KINDS:
        raise bad_arg(arg, f"`model.target` must name one of {', '.join(TARGET_KINDS)} (got {target!r})", source,
                      "vqclip loads taming VQModel and GumbelVQ checkpoints; other model classes are not supported.")
    checked = check_config_values(ddconfig, params["n_embed"], params["embed_dim"], source, arg)
    return VQGANConfig(dict(ddconfig), checked.n_embed, checked.embed_dim, TARGET_KINDS[cls])


def read_taming_config(path: str | os.PathLike, arg: str = "--vqgan-config") -> VQGANConfig:
    """Read a taming-format YAML file -> (ddconfig, n_embed, embed_dim, kind)."""
    from ..untrusted import UntrustedFileError, read_yaml

    path = Path(path).expanduser()
    if not path.is_file():
        raise bad_arg(arg, "config file not found", str(path), "Check the path (or download the model).")
    try:  # a regular UTF-8 file of at most 1 MiB, nested at most 32 deep, no alias bomb
        cfg = read_yaml(path, arg)
    except UntrustedFileError as e:
        raise bad_arg(arg, f"not a readable model YAML file ({e.rule})", str(path),
                      "Pass the model.yaml published with the checkpoint.") from None
    except OSError as e:
        raise bad_arg(arg, f"cannot be read ({e.strerror})", str(path), "Check the path.") from None
    return parse_taming_config(cfg, str(path), arg)


def generation_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state-dict entries a VQGAN keeps: drop training-only modules and wrapper prefixes."""
    from .checkpoints import strip_prefix

    return {k: v for k, v in strip_prefix(state).items() if not k.startswith(TRAINING_ONLY_PREFIXES)}


def check_finite(state: Mapping[str, torch.Tensor], source: str, arg: str) -> None:
    """Refuse weights holding NaN or infinity: every decoded image would be NaN, and no step could fix it."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" (+{len(bad) - 4} more)" if len(bad) > 4 else ""
        raise bad_arg(arg, f"the checkpoint holds NaN or infinite weights in {', '.join(sorted(bad)[:4])}{more}",
                      source, "The file is damaged or from a diverged training run: download it again or pass "
                              "another checkpoint.")


def load_state_strict(model: VQGAN, state: Mapping[str, torch.Tensor], source: str,
                      arg: str = "--vqgan-checkpoint") -> None:
    """Load every weight the model has from `state`; missing, unexpected or misshapen keys are an error."""
    from .checkpoints import describe_key_mismatch

    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    fix = "Check that the config and the checkpoint belong to the same model (same n_embed, ddconfig, kind)."
    if missing or unexpected:
        raise bad_arg(arg, "checkpoint keys do not match the VQGAN built from the config ("
                      + describe_key_mismatch(missing, unexpected) + ")", source, fix)
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        more = f" (+{len(wrong) - 6} more)" if len(wrong) > 6 else ""
        raise bad_arg(arg, "checkpoint tensor shapes do not match the config (checkpoint vs config: "
                      + "; ".join(wrong[:6]) + more + ")", source, fix)
    # load_state_dict casts silently: integer weights would become a model whose every weight was rounded
    kinds = [f"{k} ({str(state[k].dtype).replace('torch.', '')})" for k, v in expected.items()
             if v.is_floating_point() and not state[k].is_floating_point()]
    if kinds:
        more = f" (+{len(kinds) - 4} more)" if len(kinds) > 4 else ""
        raise bad_arg(arg, "checkpoint weights must be floating-point numbers, and these are not: "
                      + ", ".join(kinds[:4]) + more, source,
                      "The file is not a trained VQGAN's checkpoint: pass the original .ckpt or its .safetensors.")
    model.load_state_dict(state, strict=True)


def _converted_config(path: Path, arg: str) -> VQGANConfig | None:
    """The config stored in a converted .safetensors file's metadata, if it has one."""
    from .checkpoints import is_safetensors, safetensors_metadata

    damaged = bad_arg(arg, "could not read the .safetensors file (truncated or damaged)", str(path),
                      "Convert or download it again.")
    if not is_safetensors(path):
        if path.suffix == ".safetensors":
            raise damaged
        return None
    try:
        meta = safetensors_metadata(path)
    except Exception as e:  # safetensors raises its own error type for a damaged header
        raise damaged from e
    if meta.get("format") != CONVERTED_FORMAT or "config" not in meta:
        return None
    try:
        from ..untrusted import parse_json

        c = parse_json(meta["config"], str(path), arg)
        cfg = VQGANConfig(dict(c["ddconfig"]), c["n_embed"], c["embed_dim"], str(c["kind"]))
        missing = [k for k in DDCONFIG_KEYS if k not in cfg.ddconfig]
        if missing or cfg.kind not in TARGET_KINDS.values():
            raise KeyError(missing or cfg.kind)
        check_config_values(cfg.ddconfig, cfg.n_embed, cfg.embed_dim, str(path), arg)
        return cfg
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise bad_arg(arg, "the converted file's config metadata is damaged", str(path),
                      "Convert the original checkpoint again with `vqclip models convert`.") from e


def load_vqgan(config: str | os.PathLike | Mapping | VQGANConfig | None, checkpoint: str | os.PathLike,
               device: str | torch.device = "cpu", config_arg: str = "--vqgan-config",
               checkpoint_arg: str = "--vqgan-checkpoint") -> VQGAN:
    """Build a VQGAN from a taming YAML (or the config inside a converted .safetensors) and load its weights.

    `config_arg` / `checkpoint_arg` are the option names that error messages point the user at."""
    from ..devices import resolve_device
    from .checkpoints import read_checkpoint, safetensors_metadata, state_dict_of

    ckpt = Path(checkpoint).expanduser()
    if not ckpt.is_file():
        raise bad_arg(checkpoint_arg, "checkpoint file not found", str(ckpt),
                      "Check the path, or use a registered name (`vqclip models list`).")
    if isinstance(config, VQGANConfig):
        cfg = config
    elif isinstance(config, Mapping):
        cfg = parse_taming_config(config, arg=config_arg)
    elif config is not None:
        cfg = read_taming_config(config, arg=config_arg)
    else:
        cfg = _converted_config(ckpt, checkpoint_arg)
        if cfg is None:
            raise bad_arg(config_arg, "is needed: this checkpoint carries no config of its own (only files written "
                          "by `vqclip models convert` do)", str(ckpt),
                          f"Pass the taming model.yaml that belongs to it: {config_arg} FILE.yaml.")
    state = generation_state(state_dict_of(read_checkpoint(ckpt, checkpoint_arg), checkpoint_arg, ckpt))
    check_finite(state, str(ckpt), checkpoint_arg)
    model = VQGAN(cfg.ddconfig, cfg.n_embed, cfg.embed_dim, cfg.kind)
    load_state_strict(model, state, str(ckpt), checkpoint_arg)
    meta = safetensors_metadata(ckpt) if ckpt.suffix == ".safetensors" else {}
    model.origin = {"checkpoint": str(ckpt), "config": None if config is None or isinstance(config, Mapping)
                    else str(config), "name": meta.get("name"), "source_sha256": meta.get("source_sha256")}
    return model.to(resolve_device(device))


def save_converted(model: VQGAN, out_path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write the model's weights and its config to one self-describing .safetensors file, atomically."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    out_path = Path(out_path).expanduser()
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = {"ddconfig": model.ddconfig, "n_embed": model.n_embed, "embed_dim": model.embed_dim,
              "kind": model.kind}
    meta = {"format": CONVERTED_FORMAT, "format_version": CONVERTED_VERSION, "config": json.dumps(config)}
    meta.update({k: str(v) for k, v in (metadata or {}).items() if v is not None})
    with atomic_path(out_path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return out_path


def convert_checkpoint(config: str | os.PathLike | Mapping | VQGANConfig | None, checkpoint: str | os.PathLike,
                       out_path: str | os.PathLike, name: str | None = None, config_arg: str = "--vqgan-config",
                       checkpoint_arg: str = "--vqgan-checkpoint",
                       check: Callable[[VQGAN], None] | None = None) -> Path:
    """Turn a taming checkpoint (Lightning .ckpt, state dict, .safetensors) into a compact pickle-free file.

    `check` sees the loaded model before anything is written (the registry refuses a model converted under a
    registered name that is not that model: `registry.convert_named`)."""
    from ..io import sha256_file

    model = load_vqgan(config, checkpoint, "cpu", config_arg, checkpoint_arg)
    if check is not None:
        check(model)
    meta = {"name": name, "source_file": Path(checkpoint).name, "source_sha256": sha256_file(checkpoint)}
    return save_converted(model, out_path, meta)
