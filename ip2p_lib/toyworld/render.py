"""Deterministic, anti-aliased rendering of scenes.

Each pixel's colour is the background blended with the shape colour by the fraction of
the pixel the shape covers, estimated on a fixed `SUPERSAMPLE` x `SUPERSAMPLE` grid of
sample points inside the pixel. Same scene, same resolution -> same bytes, on any machine.
"""

from __future__ import annotations

from functools import lru_cache
import numpy as np

from ip2p_lib.toyworld.scene import BACKGROUNDS, COLORS, SIZE_RADIUS, Scene

SUPERSAMPLE = 4


@lru_cache(maxsize=8)
def _subpixel_offsets() -> np.ndarray:
    """Sample offsets inside one pixel, shape (S,), in pixel units."""
    return ((np.arange(SUPERSAMPLE) + 0.5) / SUPERSAMPLE).astype(np.float32)


def coverage(scene: Scene, resolution: int = 64) -> np.ndarray:
    """Fraction of each pixel covered by the shape, float32 array (R, R) in [0, 1].

    Only the pixels of the shape's bounding box are sampled; the rest are zero."""
    cx, cy = scene.centre_px(resolution)
    r = SIZE_RADIUS[scene.size] * resolution
    x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)), resolution)
    y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)), resolution)
    off = _subpixel_offsets()
    xs = (np.arange(x0, x1, dtype=np.float32)[:, None] + off).reshape(-1) - cx
    ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + off).reshape(-1) - cy
    dx, dy = xs[None, :], ys[:, None]
    if scene.shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif scene.shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    elif scene.shape == "triangle":
        # Upright isosceles triangle in the box [cx-r, cx+r] x [cy-r, cy+r]: apex at the top
        # centre, base along the bottom; its half-width grows from 0 to r going down.
        inside = (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
    else:  # pragma: no cover - Scene validates shapes
        raise ValueError(scene.shape)
    s = SUPERSAMPLE
    out = np.zeros((resolution, resolution), dtype=np.float32)
    out[y0:y1, x0:x1] = inside.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
    return out


def render(scene: Scene, resolution: int = 64) -> np.ndarray:
    """The scene as a uint8 RGB array of shape (resolution, resolution, 3)."""
    alpha = coverage(scene, resolution)[..., None]
    fg = np.asarray(COLORS[scene.color], dtype=np.float32)
    bg = np.asarray(BACKGROUNDS[scene.background], dtype=np.float32)
    return np.rint(bg + alpha * (fg - bg)).astype(np.uint8)

