"""vqclip: VQGAN+CLIP in the original CLIP space or in learn-to-spell / forget-to-spell subspaces."""

__version__ = "0.1.0"

_LAZY = {"generate": "generation", "generate_many": "generation", "load_models": "generation", "Settings": "generation", "Result": "generation",
         "Space": "spaces", "load_clip": "models.clip"}


def __getattr__(name):  # keep `import vqclip` light: heavy modules load on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'vqclip' has no attribute {name!r}")
