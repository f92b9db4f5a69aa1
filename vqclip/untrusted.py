"""Readers for files vqclip did not write: images whose header promises more pixels than is safe to decode."""

from __future__ import annotations

import os

# Pillow's own warning threshold (~89.5 M pixels, a 9459 x 9459 image): nothing vqclip reads is near it, and a
# few kilobytes of PNG can declare far more (a decompression bomb).
MAX_PIXELS = 89_478_485


def open_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS):
    """`PIL.Image.open` that refuses, as an OSError, an image larger than `max_pixels` before decoding it.

    Pillow raises DecompressionBombError (not an OSError) only beyond twice its limit and merely warns below;
    callers that already handle unreadable files as OSError then handle bombs too.
    """
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():  # the size is checked below, with a refusal instead of a warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise OSError(f"{path}: too large to decode safely ({e})") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise OSError(f"{path}: {width}x{height} pixels is more than the {max_pixels} vqclip decodes "
                      "(a decompression bomb?)")
    return im
