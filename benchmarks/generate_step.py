"""Seconds per step and peak memory of vqclip's generation loop vs a plain reference loop.

Full-size, randomly initialised ViT-B/32 and VQGAN f16 (16384 codes) architectures: no download needed, and the
cost per step is the same as with the real weights. The reference loop is the same algorithm written the plain
way (one CLIP call per cutout, fp32 throughout), as the common scripts do.

    python benchmarks/generate_step.py --size 256 256 --cutn 16 --steps 5 --device cpu
    python benchmarks/generate_step.py --size 480 480 --cutn 32 --steps 20 --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch


def build_models(device: torch.device, precision: str):
    import open_clip

    from vqclip.models.clip import ClipModel
    from vqclip.models.tiny import F16_DDCONFIG, make_vqgan

    torch.manual_seed(0)
    clip_net = open_clip.create_model("ViT-B-32", pretrained=None, device=device)
    clip = ClipModel(clip_net, open_clip.get_tokenizer("ViT-B-32"), "ViT-B-32/random", device, precision)
    vqgan = make_vqgan(F16_DDCONFIG, n_embed=16384, embed_dim=256).to(device)
    return clip, vqgan


def reference_loop(settings, clip, vqgan, steps: int, on_step) -> None:
    """The algorithm as plain scripts write it: per-cutout CLIP calls, fp32, no batching."""
    import torch.nn.functional as F

    from vqclip.generation.cutouts import MakeCutouts
    from vqclip.generation.loop import random_codes
    from vqclip.generation.ops import clamp_with_grad, prompt_loss, vector_quantize

    device = clip.device
    gen = torch.Generator().manual_seed(0)
    codebook = vqgan.codebook.detach()
    w, h = settings.size
    z = random_codes(h // vqgan.factor, w // vqgan.factor, codebook, gen).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=0.1)
    cutouts = MakeCutouts(clip.input_size, settings.cutn, 1.0, settings.augment, 0.1)
    mean = torch.tensor(clip.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=device).view(1, 3, 1, 1)
    with torch.no_grad():
        target = F.normalize(clip.model.encode_text(clip.tokenize(["a photo of an apple"])).float(), dim=-1)[0]
    for _ in range(steps):
        opt.zero_grad()
        z_q = vector_quantize(z.movedim(1, 3), codebook).movedim(3, 1)
        image = clamp_with_grad(vqgan.decode(z_q), 0, 1)
        cuts = cutouts(image, gen)
        embeds = torch.cat([clip.model.encode_image((c[None] - mean) / std) for c in cuts])
        loss = prompt_loss(F.normalize(embeds.float(), dim=-1), target, 1.0, float("-inf"))
        loss.backward()
        opt.step()
        on_step()


def timed(fn, warmup: int, device: torch.device) -> tuple[float, float]:
    """Mean seconds per step after `warmup` steps, and peak memory in MiB."""
    stamps: list[float] = []

    def on_step(*_):
        if device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    fn(on_step)
    per_step = (stamps[-1] - stamps[warmup - 1]) / (len(stamps) - warmup)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process high-water mark
    return per_step, peak


def main() -> None:
    from vqclip.devices import resolve_device, resolve_precision
    from vqclip.generation import Settings, parse_prompts, run
    from vqclip.spaces import Space

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", nargs=2, type=int, default=[256, 256])
    ap.add_argument("--cutn", type=int, default=16)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per loop (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    clip, vqgan = build_models(device, precision)
    total = args.steps + args.warmup
    settings = Settings(prompts=parse_prompts("a photo of an apple"), size=tuple(args.size), steps=total,
                        cutn=args.cutn, seed=0)
    settings, _ = settings.resolved(vqgan.factor)
    space = Space("clip")

    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}",
               "size": list(settings.size), "cutn": args.cutn, "precision": precision, "torch": torch.__version__}
    if not args.skip_reference:
        ref_s, ref_mem = timed(lambda cb: reference_loop(settings, clip, vqgan, total, cb), args.warmup, device)
        results["reference"] = {"s_per_step": round(ref_s, 4), "peak_mib": round(ref_mem)}
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the CLI sets it
    sec, mem = timed(lambda cb: run(settings, clip, vqgan, space, cb), args.warmup, device)
    results["vqclip"] = {"s_per_step": round(sec, 4), "peak_mib": round(mem)}
    if "reference" in results:
        results["speedup_vs_reference"] = round(results["reference"]["s_per_step"] / sec, 2)
    print(json.dumps(results, indent=2))
    if args.json:
        from vqclip.io import write_json

        write_json(args.json, results)


if __name__ == "__main__":
    main()
