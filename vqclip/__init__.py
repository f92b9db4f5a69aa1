"""vqclip: VQGAN+CLIP in CLIP, learn-to-spell and forget-to-spell spaces."""
__version__ = "0.1.0"
