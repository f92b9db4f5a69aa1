"""How many jobs to optimise together in one batched latent: the `--group-size` / `group_size` value and the
automatic size that fills a GPU's free memory (`vqclip batch`, `generation.api` and the OCR reproduction share it)."""

from __future__ import annotations

from ..errors import bad_arg


def parse_group_size(value: int | str | None, arg: str = "--group-size") -> int | str | None:
    """`auto`, a whole number of at least 1, or None (the caller's default)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise bad_arg(arg, "must be auto or a whole number of at least 1", value,
                      "Use --group-size auto (as many as the GPU's memory holds), or e.g. --group-size 4 "
                      "(1 runs the jobs one at a time).")
    return n


# Measured bytes per job of one generation step (fp32 VQGAN f16 decoder at 256², ViT-B/32 on 32 cutouts, with
# the autograd graph), scaled linearly by pixels and cutouts; the group is sized to 70 % of the free memory.
AUTO_GROUP_MAX = 16


def auto_group_size(device, size, cutn: int) -> int:
    """How many jobs to optimise together: on a CUDA GPU as many as 70 % of the free memory holds (at most
    AUTO_GROUP_MAX); elsewhere one (on the CPU the models' arithmetic sets the pace, and grouping measured no
    faster there: README, Speed)."""
    import torch

    from .memory import estimate_run_memory

    if getattr(device, "type", str(device)) != "cuda":
        return 1
    try:
        free, _ = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001 - a driver that cannot tell: no grouping
        return 1
    per_job = estimate_run_memory(size, cutn).total  # decoder, its attention, image and cutouts (default VQGAN)
    return max(1, min(AUTO_GROUP_MAX, int(0.7 * free) // max(per_job, 1)))
