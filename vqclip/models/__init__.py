"""Thin adapters over foreign models (open_clip CLIP, taming VQGAN) and the registry of named checkpoints."""
