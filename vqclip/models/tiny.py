"""Tiny and randomly initialised model builders for tests, benchmarks and the testbed (no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_PREPROCESS = {"size": 32, "mean": [0.48145466, 0.4578275, 0.40821073],
                   "std": [0.26862954, 0.26130258, 0.27577711]}

TINY_VQGAN_DDCONFIG = {"double_z": False, "z_channels": 8, "resolution": 32, "in_channels": 3, "out_ch": 3,
                       "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}

# The published f16 ImageNet VQGAN architecture, for benchmarks with random weights.
F16_DDCONFIG = {"double_z": False, "z_channels": 256, "resolution": 256, "in_channels": 3, "out_ch": 3,
                "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "attn_resolutions": [16], "dropout": 0.0}


def make_clip_dir(path: str | os.PathLike, model_cfg: dict | None = None, preprocess_cfg: dict | None = None,
                  seed: int = 0) -> str:
    """Build a randomly initialised open_clip CLIP, save it as a local-dir, return the `local-dir:` identifier."""
    import open_clip

    from .clip import save_local_dir

    model_cfg = model_cfg or TINY_CLIP_CFG
    torch.manual_seed(seed)
    model = open_clip.CLIP(**model_cfg)
    save_local_dir(model, model_cfg, path, preprocess_cfg or TINY_PREPROCESS)
    return f"local-dir:{Path(path)}"


def make_vqgan(ddconfig: dict | None = None, n_embed: int = 64, embed_dim: int = 8, kind: str = "vq",
               seed: int = 0):
    """A randomly initialised VQGAN (tiny by default)."""
    from .vqgan import VQGAN

    torch.manual_seed(seed)
    model = VQGAN(ddconfig or TINY_VQGAN_DDCONFIG, n_embed=n_embed, embed_dim=embed_dim, kind=kind)
    with torch.no_grad():  # spread the codebook so nearest-code lookups are not degenerate
        model.codebook.normal_(0, 1)
    return model


def taming_config(ddconfig: dict, n_embed: int, embed_dim: int, kind: str = "vq") -> dict:
    """A taming-format config dict (as in the published YAML files) for these settings."""
    target = "taming.models.vqgan.VQModel" if kind == "vq" else "taming.models.vqgan.GumbelVQ"
    return {"model": {"base_learning_rate": 4.5e-6, "target": target,
                      "params": {"embed_dim": embed_dim, "n_embed": n_embed, "ddconfig": dict(ddconfig),
                                 "lossconfig": {"target": "taming.modules.losses.vqperceptual.DummyLoss"}}}}


def _fake_lightning_callback():
    """An object whose class pickles as pytorch_lightning's ModelCheckpoint, built without pytorch_lightning."""
    import sys
    import types

    name = "pytorch_lightning.callbacks.model_checkpoint"
    module = types.ModuleType(name)
    cls = type("ModelCheckpoint", (), {"__module__": name})
    module.ModelCheckpoint = cls
    obj = cls()
    obj.monitor, obj.best_model_score, obj.dirpath = "val/rec_loss", torch.tensor(0.5), "logs/checkpoints"
    return obj, {name: module, "pytorch_lightning": types.ModuleType("pytorch_lightning"),
                 "pytorch_lightning.callbacks": types.ModuleType("pytorch_lightning.callbacks")}, sys.modules


def write_lightning_ckpt(state_dict: dict, path: str | os.PathLike, hyper_parameters: dict | None = None) -> Path:
    """Save `state_dict` the way a 2020 Lightning run did: under "state_dict", beside callbacks, optimizer
    states and an omegaconf hyper-parameter config (non-tensor objects a weights-only loader refuses)."""
    from omegaconf import OmegaConf

    callback, fake_modules, sys_modules = _fake_lightning_callback()
    ckpt = {"epoch": 3, "global_step": 1234, "pytorch-lightning_version": "1.0.8",
            "state_dict": dict(state_dict),
            "callbacks": {type(callback): {"best_model_score": callback.best_model_score, "object": callback}},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 4.5e-6, "params": [0, 1]}]}],
            "lr_schedulers": [],
            "hyper_parameters": OmegaConf.create(hyper_parameters or {"embed_dim": 8, "ddconfig": {"ch": 32}})}
    saved = {k: sys_modules.get(k) for k in fake_modules}
    sys_modules.update(fake_modules)  # pickle checks that the class is importable by name while saving
    try:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, path)
    finally:
        for k, v in saved.items():
            if v is None:
                sys_modules.pop(k, None)
            else:
                sys_modules[k] = v
    return path


def write_taming_files(directory: str | os.PathLike, model=None, kind: str = "vq", with_loss: bool = True,
                       name: str = "tiny") -> tuple[Path, Path]:
    """Write a tiny taming-format pair (`NAME.yaml`, Lightning `NAME.ckpt`) for `model` (default: make_vqgan)."""
    import yaml

    model = model or make_vqgan(kind=kind)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = taming_config(model.ddconfig, model.n_embed, model.embed_dim, model.kind)
    config_path = directory / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    state = dict(model.state_dict())
    if with_loss:  # published checkpoints carry the LPIPS/discriminator weights used in training
        state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 3, 3)
        state["loss.perceptual_loss.net.slice1.0.weight"] = torch.randn(4, 3, 3, 3)
    return config_path, write_lightning_ckpt(state, directory / f"{name}.ckpt")


def make_file_asset(directory: str | os.PathLike, name: str = "tiny_vq", kind: str = "vq", with_hash: bool = True,
                    mirrors: tuple[str, ...] = (), seed: int = 0):
    """A registry entry (VQGANAsset) whose file:// mirrors hold a tiny taming pair, for offline download tests."""
    from ..io import sha256_file
    from ..downloads import RemoteFile
    from .registry import VQGANAsset

    model = make_vqgan(kind=kind, seed=seed)
    config, ckpt = write_taming_files(Path(directory), model, kind=kind, name=name)

    def remote(path: Path, suffix: str) -> RemoteFile:
        return RemoteFile(f"{name}{suffix}", tuple(m + path.name for m in mirrors) + (path.resolve().as_uri(),),
                          sha256=sha256_file(path) if with_hash else None,
                          size=path.stat().st_size if with_hash else None)

    asset = VQGANAsset(name, f"tiny random {kind} VQGAN for tests", kind, model.factor, model.n_embed,
                       remote(config, ".yaml"), remote(ckpt, ".ckpt"), "file://")
    return asset, model
