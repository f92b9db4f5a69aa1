"""The memory one generation needs, estimated from --size, --cutn and the VQGAN's shape before any model or tensor
is built, and the one-line refusal when the device does not have it (issue 28: `--size 4000 4000` tried to
allocate 64 TB and failed in the allocator).

The estimate counts what grows with the image: the decoder's feature maps kept for backward, the attention of the
decoder (taming's AttnBlock builds an (h*w) x (h*w) matrix of floats per block at its resolution, keeps its softmax
for backward and needs about three more in flight: with a small downsampling factor this dominates), the image
and its gradient, and the cutouts CLIP sees. The models' weights and the interpreter are not counted (a few
hundred MB). docs/guarantees.md gives the estimate against measured peaks.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, NamedTuple, Sequence

from ..errors import bad_arg

FLOAT = 4  # bytes: fp32 activations
# the published f16 ImageNet VQGAN (the default model), used when the model's config is not known up front
DEFAULT_DDCONFIG = {"ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16],
                    "resolution": 256}
RESNET_SAVED = 7  # tensors of the block's width a taming ResnetBlock keeps for backward (norms, SiLUs, convs)
ATTN_SAVED = 4  # and an AttnBlock besides its matrix (norm, q, k, v)
IMAGE_BYTES_PER_PIXEL = 3 * FLOAT * 4  # the image, its gradient and two copies
CUTOUT_BYTES = 3 * 224 * 224 * FLOAT * 3  # each cutout at CLIP's input size, augmented, with its gradient


class MemoryEstimate(NamedTuple):
    """Bytes one generation holds at its peak, by part."""

    decoder: int  # convolution feature maps kept for backward
    attention: int  # the decoder's attention matrices
    image: int
    cutouts: int

    @property
    def total(self) -> int:
        return self.decoder + self.attention + self.image + self.cutouts


def ddconfig_for_factor(factor: int) -> dict:
    """A taming decoder config of the published layout with downsampling `factor` (for a registered name)."""
    levels = max(1, int(factor).bit_length())  # 16 -> 5 levels, 8 -> 4
    ch_mult = ([1, 1, 2, 2, 4] + [4] * levels)[:levels]
    return {**DEFAULT_DDCONFIG, "ch_mult": ch_mult, "attn_resolutions": [256 // max(1, int(factor))]}


def estimate_run_memory(size: Sequence[int], cutn: int, ddconfig: Mapping[str, Any] | None = None
                        ) -> MemoryEstimate:
    """The estimate for one image of `size` (width, height) with `cutn` cutouts through a taming decoder of
    `ddconfig` (default: the f16 ImageNet VQGAN's)."""
    cfg = {**DEFAULT_DDCONFIG, **(ddconfig or {})}
    w, h = (max(int(v), 0) for v in size)
    ch, mult, nrb = int(cfg["ch"]), [int(m) for m in cfg["ch_mult"]], int(cfg["num_res_blocks"])
    attn_res = {int(r) for r in cfg.get("attn_resolutions") or ()}
    levels = len(mult)
    decoder = 3 * ch * mult[0] * w * h  # norm_out, SiLU and conv_out at full resolution
    tokens: list[int] = []
    for i in range(levels):  # level i works at 1 / 2**i of the image's side
        pixels = (w // 2**i) * (h // 2**i)
        width = ch * mult[i]
        decoder += (nrb + 1) * RESNET_SAVED * width * pixels
        if i > 0:
            decoder += 2 * width * (w // 2 ** (i - 1)) * (h // 2 ** (i - 1))  # upsampled map and its conv input
        if int(cfg.get("resolution", 256)) // 2**i in attn_res:
            tokens += [pixels] * (nrb + 1)
            decoder += (nrb + 1) * ATTN_SAVED * width * pixels
    low = (w // 2 ** (levels - 1)) * (h // 2 ** (levels - 1))
    decoder += (2 * RESNET_SAVED + ATTN_SAVED) * ch * mult[-1] * low  # the middle: two ResnetBlocks and attention
    tokens.append(low)  # the middle's AttnBlock, always there
    attention = (sum(t * t for t in tokens) + 3 * max(tokens) ** 2) * FLOAT
    return MemoryEstimate(decoder * FLOAT, attention, w * h * IMAGE_BYTES_PER_PIXEL, max(int(cutn), 0) * CUTOUT_BYTES)


def available_memory(device: str | Any) -> tuple[int | None, str]:
    """(bytes free, what) for `device` (auto, cpu, cuda, cuda:N, mps): the GPU's free memory on CUDA, else the
    machine's available RAM (psutil when installed, /proc/meminfo, sysconf); None when it cannot be told."""
    import torch

    from ..devices import resolve_device

    dev = resolve_device(device) if isinstance(device, str) else device
    if getattr(dev, "type", None) == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(dev)
        except Exception:  # noqa: BLE001 - a driver that cannot tell is no reason to refuse
            return None, str(dev)
        return int(free), f"{dev} ({torch.cuda.get_device_name(dev)})"
    try:  # cpu and mps share the machine's memory
        import psutil

        return int(psutil.virtual_memory().available), "cpu memory"
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "cpu memory"
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "cpu memory"
    except (ValueError, OSError, AttributeError):
        return None, str(dev)


def gib(n: int) -> str:
    if n >= 2**40:
        return f"{n / 2**40:,.1f} TiB"
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.0f} MiB"


def check_memory(sizes_cutns: Iterable[tuple[Sequence[int], int, str]], device: str | Any,
                 ddconfig: Mapping[str, Any] | None = None) -> None:
    """Refuse, before any model is loaded, a --size or --cutn whose estimated need exceeds what `device` has free
    (instead of an allocator error later). `sizes_cutns`: (size, cutn, where) per setting; `where` is appended to
    the flag's name (e.g. " (job 3)")."""
    worst = max(((estimate_run_memory(s, c, ddconfig), s, c, where) for s, c, where in sizes_cutns),
                key=lambda t: t[0].total, default=None)
    if worst is None:
        return
    est, size, cutn, where = worst
    free, name = available_memory(device)
    if free is None or est.total <= free:
        return
    arg = "--cutn" if est.cutouts > est.total - est.cutouts else "--size"
    value = cutn if arg == "--cutn" else f"{size[0]} {size[1]}"
    raise bad_arg(f"{arg}{where}", f"a run of {size[0]}x{size[1]} pixels with {cutn} cutouts needs about "
                  f"{gib(est.total)} of memory (decoder {gib(est.decoder)}, its attention {gib(est.attention)}, "
                  f"cutouts {gib(est.cutouts)}), and {name} has {gib(free)} free", value,
                  "Lower --size or --cutn (e.g. --size 480 480 --cutn 32), or use a device with more memory "
                  "(--device).")


def vqgan_ddconfig(vqgan: str | None = None, vqgan_config: str | None = None) -> dict | None:
    """The decoder config of the model a command will load, read cheaply before loading it: the --vqgan-config
    YAML, or a registered name's layout; None (the default f16 layout) when it cannot be told up front. A file
    that cannot be read is left for the loader to refuse with its own message."""
    from ..errors import VqclipError

    try:
        if vqgan_config:
            from ..models.vqgan import read_taming_config

            return dict(read_taming_config(vqgan_config).ddconfig)
        if vqgan:
            from ..models.registry import VQGAN_ASSETS

            asset = VQGAN_ASSETS.get(vqgan)
            return ddconfig_for_factor(asset.factor) if asset else None
    except (VqclipError, OSError, ValueError):
        return None
    return None
