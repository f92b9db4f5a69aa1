"""Seconds per generation step: vqclip against nerdyrodent/VQGAN-CLIP's default loop and against the models alone.

Full-size, randomly initialised ViT-B/32 and VQGAN f16 (16384 codes) architectures: no download needed, and the
cost per step is the same as with the real weights. Three arms, measured in one process, interleaved and repeated
(the best repeat of each is reported):

- `baseline`: nerdyrodent's generate.py default loop, re-stated in benchmarks/nerdyrodent.py (pooled cutouts,
  kornia augmentations, one batched CLIP call, CLIP fp16 on CUDA / fp32 on the CPU, Adam 0.1, z clamped).
- `vqclip`: `vqclip.generation.run` with the CLI's defaults for the device (augmentations, noise, precision).
- `recipe:NAME` (e.g. `recipe:nerdyrodent`, `recipe:paper`): `run` with that recipe's cutouts, augmentations,
  noise and method at the same size and cutn (issue 24: the nerdyrodent recipe within 10 % of the baseline).
- `models`: the VQGAN decoder forward + backward and CLIP's image tower forward + backward on `cutn` random
  224² inputs, nothing else: the floor any loop pays. On CUDA CLIP runs in vqclip's precision.

Each arm runs `warmup` steps, then `steps` timed steps between two device synchronisations. `--group N` also times
N jobs optimised together (`run_many`) against the same N run one after another (throughput in images per hour).

    python benchmarks/generate_step.py --size 128 128 --cutn 8 --steps 4 --device cpu
    python benchmarks/generate_step.py --size 256 256 --cutn 32 --steps 30 --device cuda --group 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build_vqclip_models(device: torch.device, precision: str):
    import open_clip

    from vqclip.models.clip import ClipModel
    from vqclip.models.tiny import F16_DDCONFIG, make_vqgan

    torch.manual_seed(0)
    clip_net = open_clip.create_model("ViT-B-32", pretrained=None, device=device)
    clip = ClipModel(clip_net, open_clip.get_tokenizer("ViT-B-32"), "ViT-B-32/random", device, precision)
    vqgan = make_vqgan(F16_DDCONFIG, n_embed=16384, embed_dim=256).to(device)
    return clip, vqgan


def time_loop(step, warmup: int, steps: int, device: torch.device) -> float:
    """Seconds per call of `step()` over `steps` calls after `warmup` calls."""
    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def time_vqclip(settings_list, clip, vqgan, spaces, warmup: int, steps: int) -> float:
    """Seconds per step of `run_many` (one job or a group): the callback fires at step `warmup` and at the end,
    right after the loop's own read-back of the losses (its one synchronisation per `report_every` steps)."""
    import dataclasses

    from vqclip.generation.loop import run_many

    stamps: dict[int, float] = {}
    jobs = [dataclasses.replace(s, steps=warmup + steps) for s in settings_list]

    def callback(index, info):
        if index == 0:
            stamps[info.step] = time.perf_counter()

    # report_every = gcd-free choice: warmup divides warmup + steps when steps is a multiple of warmup.
    results = run_many(jobs, clip, vqgan, spaces, callback, report_every=warmup)
    assert all(r.status == "finished" for r in results), [r.message for r in results]
    return (stamps[warmup + steps] - stamps[warmup]) / steps


def models_step(clip, vqgan, size, cutn: int):
    """The decoder and CLIP's image tower, forward and backward, nothing else, in the layout vqclip uses."""
    from vqclip.generation.loop import decoder_memory_format

    device = clip.device
    layout = decoder_memory_format(device)
    vqgan.to(memory_format=layout)
    h, w = size[1] // vqgan.factor, size[0] // vqgan.factor
    z = torch.randn(1, vqgan.embed_dim, h, w, device=device).contiguous(memory_format=layout).requires_grad_(True)
    x = torch.rand(cutn, 3, *clip.input_size, device=device, requires_grad=True)

    def step():
        vqgan.decode(z).sum().backward()
        clip.encode_image(x).sum().backward()

    return step


def main() -> None:
    from vqclip.devices import resolve_device, resolve_precision
    from vqclip.generation import Settings, parse_prompts
    from vqclip.spaces import Space

    from nerdyrodent import Baseline, build_clip

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("W", "H"))
    ap.add_argument("--cutn", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per repeat (a multiple of --warmup)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every arm; the best is kept")
    ap.add_argument("--group", type=int, default=0, help="also time N jobs optimised together vs one at a time")
    ap.add_argument("--group-steps", type=int, default=4, help="timed steps for the group comparison")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--arms", default="baseline,vqclip,models")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args()
    if args.steps % args.warmup:
        ap.error("--steps must be a multiple of --warmup")

    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the CLI sets it
    clip, vqgan = build_vqclip_models(device, precision)
    settings = Settings(prompts=parse_prompts("a photo of an apple"), size=tuple(args.size), steps=1,
                        cutn=args.cutn, seed=0)
    settings, _ = settings.resolved(vqgan.factor)
    space = Space("clip")
    arms = args.arms.split(",")
    timings: dict[str, list[float]] = {arm: [] for arm in arms}
    peaks: dict[str, float] = {}
    baseline = None
    if "baseline" in arms:
        import copy

        base_clip, tokenizer = build_clip(device)
        # its own VQGAN copy: vqclip switches the decoder's memory layout (channels_last on the CPU) in place
        baseline = Baseline(base_clip, tokenizer, copy.deepcopy(vqgan), settings.size, args.cutn, "a photo of an apple")
    for _ in range(args.repeats):
        for arm in arms:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if arm == "baseline":
                sec = time_loop(baseline.step, args.warmup, args.steps, device)
            elif arm == "vqclip":
                sec = time_vqclip([settings], clip, vqgan, [space], args.warmup, args.steps)
            elif arm.startswith("recipe:"):
                recipe = Settings(prompts=settings.prompts, size=settings.size, steps=1, cutn=args.cutn, seed=0,
                                  recipe=arm.split(":", 1)[1]).resolved(vqgan.factor)[0]
                sec = time_vqclip([recipe], clip, vqgan, [space], args.warmup, args.steps)
            else:
                sec = time_loop(models_step(clip, vqgan, settings.size, args.cutn), args.warmup, args.steps, device)
            timings[arm].append(sec)
            if device.type == "cuda":
                peaks[arm] = max(peaks.get(arm, 0.0), torch.cuda.max_memory_allocated(device) / 2**30)

    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
               f"cpu x{torch.get_num_threads()} threads", "size": list(settings.size), "cutn": args.cutn,
               "precision": precision, "torch": torch.__version__, "steps": args.steps, "repeats": args.repeats}
    for arm in arms:
        results[arm] = {"s_per_step": round(min(timings[arm]), 4), "all": [round(t, 4) for t in timings[arm]]}
        if arm in peaks:
            results[arm]["peak_gib"] = round(peaks[arm], 2)
    if "baseline" in arms and "vqclip" in arms:
        results["vqclip_over_baseline"] = round(results["vqclip"]["s_per_step"] / results["baseline"]["s_per_step"], 3)
    for arm in arms:
        if arm.startswith("recipe:") and "baseline" in arms:
            results[arm]["over_baseline"] = round(results[arm]["s_per_step"] / results["baseline"]["s_per_step"], 3)
    if "models" in arms and "vqclip" in arms:
        results["vqclip_over_models"] = round(results["vqclip"]["s_per_step"] / results["models"]["s_per_step"], 3)
    if args.group:
        import dataclasses

        jobs = [dataclasses.replace(settings, seed=i) for i in range(args.group)]
        one = min(time_vqclip([s], clip, vqgan, [space], args.warmup, args.group_steps) for s in jobs[:2])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        grouped = time_vqclip(jobs, clip, vqgan, [space] * args.group, args.warmup, args.group_steps)
        results["group"] = {"jobs": args.group, "one_at_a_time_s_per_image_step": round(one, 4),
                            "grouped_s_per_step": round(grouped, 4),
                            "grouped_s_per_image_step": round(grouped / args.group, 4),
                            "throughput_gain": round(one * args.group / grouped, 2)}
        if device.type == "cuda":
            results["group"]["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        if "baseline" in arms:
            results["group"]["gain_vs_baseline"] = round(results["baseline"]["s_per_step"] * args.group / grouped, 2)
    print(json.dumps(results, indent=2))
    if args.json:
        from vqclip.io import write_json

        write_json(args.json, results)


if __name__ == "__main__":
    main()
