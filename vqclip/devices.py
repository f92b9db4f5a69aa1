"""Device and precision choices shared by every entry point."""

from __future__ import annotations

import contextlib

import torch

from .errors import bad_arg

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device that is absent is an error."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    base = name.split(":")[0]
    if base not in DEVICES:
        raise bad_arg("--device", "must be auto, cuda, cuda:N, mps or cpu", name, "Pick one of those.")
    if base == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if base == "cuda" and not torch.cuda.is_available():
        raise bad_arg("--device", "CUDA was asked for but torch sees no CUDA GPU", name, "Use --device cpu or auto.")
    if base == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise bad_arg("--device", "MPS was asked for but is not available", name, "Use --device cpu or auto.")
    return torch.device(name)


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """`auto` is bf16 autocast on CUDA GPUs that support it, fp16 on other CUDA GPUs, fp32 elsewhere."""
    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise bad_arg("--precision", "must be one of " + ", ".join(PRECISIONS), precision, "Pick one of those.")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if device.type == "cpu" and precision != "fp32":
        # CPU autocast is slower than fp32 for these models and changes results; keep CPU exact.
        raise bad_arg("--precision", "reduced precision is for GPUs; CPU runs in fp32", precision,
                      "Use --precision fp32 (or auto) on the CPU.")
    return precision


def autocast(device: torch.device, precision: str):
    """An autocast context for `precision` (bf16/fp16) on `device`, or a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
