"""Shared helpers for the batch and grid tests: a stand-in generator whose image colour encodes the job."""

from __future__ import annotations

import hashlib

import torch
from PIL import Image

from vqclip.batch import BatchSpec, load_prompt_files, make_plan, open_batch_dir, run_batch
from vqclip.batch.plan import base_settings_record
from vqclip.generation import Result, Settings
from vqclip.spaces import Space


def job_color(prompt: str, space: str, seed: int) -> tuple[int, int, int]:
    """A colour that tells (prompt, space, seed) apart."""
    d = hashlib.sha256(f"{prompt}|{space}|{seed}".encode()).digest()
    return d[0], d[1], d[2]


class FakeModels:
    """What the runner needs of `generation.Models`, without loading anything."""

    clip = vqgan = None
    load_seconds = 0.0

    def describe(self) -> dict:
        return {"clip": {"identity": "fake"}, "vqgan": {"factor": 1}, "device": "cpu"}

    def space(self, name: str, projection=None) -> Space:
        return Space(name, None if name == "clip" else torch.eye(4)[:2])


def fake_generate(settings, clip, vqgan, space, callback=None, status: str = "finished"):
    """A solid image in the job's colour, after `settings.steps` callback calls."""
    settings, _ = settings.resolved(1)
    for step in range(settings.steps):
        if callback:
            callback(type("Info", (), {"step": step + 1, "steps": settings.steps, "loss": 0.5})())
    image = Image.new("RGB", tuple(settings.size), job_color(settings.prompts[0].text, space.name, settings.seed))
    return Result(image=image, latent=torch.zeros(1), loss=0.5, losses={p.text: 0.5 for p in settings.prompts},
                  history=[0.5] * settings.steps, settings=settings, steps_done=settings.steps, status=status,
                  message=None if status == "finished" else "the loss became nan at step 1", seconds=0.01)


def make_batch(tmp_path, prompt_text: str = "apple\npear\n", spaces=("clip", "learn", "forget"), seeds=(0, 1),
               size=(8, 8), steps=1, name="p.txt"):
    """A prompt file, base settings and the BatchSpec of a batch over it."""
    path = tmp_path / name
    path.write_text(prompt_text)
    items = load_prompt_files([path])
    base = Settings(prompts=[], size=size, steps=steps, cutn=2)
    jobs = make_plan(items, spaces, seeds)
    spec = BatchSpec(base_settings_record(base), {"clip": "fake"}, items, tuple(spaces), tuple(seeds), jobs,
                     {s: None for s in spaces})
    return spec, base


def run_fake(spec, base, folder, jobs=None, generate=fake_generate, **kw):
    """Open the folder and run `jobs` (default all) with the stand-in generator."""
    open_batch_dir(folder, spec.to_record(), "new" if not (folder / "batch.json").exists() else "resume")
    return run_batch(spec.jobs if jobs is None else jobs, spec, base, FakeModels(), folder, generate=generate, **kw)
