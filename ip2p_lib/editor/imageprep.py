"""Input images for the editor: read any common file as 8-bit RGB, then size it.

Reading (`load_rgb`, `to_rgb`):
- RGBA, LA and palette images with transparency are composited onto white (what a viewer
  shows), not cut to RGB, which would reveal whatever colour hides under alpha = 0;
- 16-bit and 32-bit integer images (modes I;16, I) are scaled to 8 bits by their bit depth
  (PIL's own `convert("RGB")` clips them, turning most 16-bit photos white);
- float images (mode F) are taken as [0, 1] and clipped; grayscale, CMYK, YCbCr -> RGB.

Sizing (`target_size`), two selectable rules:
- "authors" (instruct-pix2pix `edit_cli.py`): scale so the long side is `resolution`, round
  the short side UP and then both sides DOWN to multiples of `multiple` (64 for SD: the
  VAE's 8x times the UNet's three 2x down-samplings), then centre-crop to that aspect
  ratio (`ImageOps.fit`, Lanczos). Small inputs are scaled up; because the short side is
  rounded up first, the long side can end above `resolution` (3000x2000 at 512 -> 576x384).
- "diffusers" (`VaeImageProcessor.preprocess`): keep the size, round each side DOWN to a
  multiple of `multiple` (8 for SD: the VAE factor) and resize (Lanczos, no crop). We add
  one rule diffusers lacks: an input whose long side exceeds `resolution` is first scaled
  down (aspect kept) so its long side is `resolution`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ip2p_lib.infra.errors import UserError

SIZING_RULES: tuple[str, ...] = ("authors", "diffusers")


def load_rgb(path: str | Path) -> Image.Image:
    """Open an image file as 8-bit RGB; `UserError` if it is missing or not an image."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"input image {path} does not exist")
    if not path.is_file():
        raise UserError(f"input image {path} is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise UserError(f"{path} is not an image that Pillow can read ({err.__class__.__name__})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB (alpha composited on white, high bit depths scaled)."""
    if img.mode == "RGB":
        return img.copy()
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit files open as I;16 or (PNG) I; values above 65535 mean a true 32-bit image
        top = 65535.0 if arr.max(initial=0) <= 65535 else 4294967295.0
        img = Image.fromarray(np.round(np.clip(arr / top, 0, 1) * 255).astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def target_size(width: int, height: int, resolution: int, rule: str = "authors", multiple: int = 64) -> tuple[int, int]:
    """The (width, height) the editor uses for a `width` x `height` input (see module doc)."""
    if rule not in SIZING_RULES:
        raise UserError(f"unknown sizing rule {rule!r}; choose one of {', '.join(SIZING_RULES)}")
    if rule == "authors":
        factor = resolution / max(width, height)  # long side -> resolution
        factor = math.ceil(min(width, height) * factor / multiple) * multiple / min(width, height)  # short side up
        w = int((width * factor) // multiple) * multiple  # both sides down to multiples
        h = int((height * factor) // multiple) * multiple
        return max(w, multiple), max(h, multiple)
    if max(width, height) > resolution:  # too large: long side down to the resolution
        scale = resolution / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    w, h = width - width % multiple, height - height % multiple
    return max(w, multiple), max(h, multiple)


def resize_for_model(img: Image.Image, resolution: int, rule: str = "authors", multiple: int = 64) -> Image.Image:
    """Resize (and for "authors", centre-crop) `img` to `target_size`."""
    size = target_size(img.width, img.height, resolution, rule, multiple)
    if rule == "authors":
        return ImageOps.fit(img, size, method=Image.Resampling.LANCZOS)
    if max(img.width, img.height) > resolution:
        scale = resolution / max(img.width, img.height)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.LANCZOS)
    # PIL returns a plain copy when the size is unchanged, as diffusers relies on
    return img.resize(size, resample=Image.Resampling.LANCZOS)


def to_model_tensor(img: Image.Image | Sequence[Image.Image]):
    """8-bit RGB image(s) of one size -> float tensor (B, 3, H, W) in [-1, 1], the VAE's input
    convention (B = 1 for a single image)."""
    import torch

    images = [img] if isinstance(img, Image.Image) else list(img)
    arr = np.stack([np.asarray(i) for i in images]).astype(np.float32) / 255.0  # (B, H, W, 3), as diffusers' pil_to_numpy
    # a channels-last view, the same memory layout as diffusers' `numpy_to_pt`: convolution
    # kernels are chosen by layout, and a contiguous copy would differ in the last bits
    return 2.0 * torch.from_numpy(arr.transpose(0, 3, 1, 2)) - 1.0
