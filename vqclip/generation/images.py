"""Image files in and out of the loop: init images, image prompts, results."""

from __future__ import annotations

import os

import torch
from PIL import Image

from ..errors import bad_arg, quote_error
from ..untrusted import open_image


def check_image_file(path: str, arg: str) -> None:
    """Refuse a missing or unreadable image before any output is written (decoding it fully, as the run will)."""
    if not os.path.isfile(path):
        raise bad_arg(arg, "image file not found", path, "Check the path.")
    try:
        with open_image(path) as im:
            im.load()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise bad_arg(arg, "could not read the image", path, f"Use a PNG or JPEG file ({quote_error(e)}).") from e


def whole_picture_size(picture: tuple[int, int], run: tuple[int, int]) -> tuple[int, int]:
    """(W, H) of an image prompt as Crowson's notebook and nerdyrodent size it: the picture's aspect ratio, its area
    at most the run's (never upscaled)."""
    ratio = picture[0] / picture[1]
    area = min(picture[0] * picture[1], run[0] * run[1])
    return max(1, round((area * ratio) ** 0.5)), max(1, round((area / ratio) ** 0.5))


def load_image(path: str, size: tuple[int, int], device: torch.device, arg: str, fit: str = "fit") -> torch.Tensor:
    """Read an image file as a (1, 3, H, W) tensor in [0, 1], sized for `size` (W, H): `fit` resizes and
    centre-crops to it, `stretch` resizes to it, `whole` keeps the whole picture (`whole_picture_size`)."""
    from PIL import ImageOps

    try:
        with open_image(path) as im:
            im = im.convert("RGB")
            if fit == "fit":
                im = ImageOps.fit(im, tuple(size), Image.Resampling.LANCZOS)
            else:
                target = tuple(size) if fit == "stretch" else whole_picture_size(im.size, tuple(size))
                im = im.resize(target, Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise bad_arg(arg, "could not read the image", path, f"Use a PNG or JPEG file ({quote_error(e)}).") from e
    x = torch.from_numpy(__import__("numpy").asarray(im).copy()).float().div(255)
    return x.permute(2, 0, 1).unsqueeze(0).to(device)


def to_pil(image: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) in [0, 1] -> PIL image."""
    array = image[0].detach().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array)
