"""The oracle: reads a scene's attributes off any image of the world, rendered or generated.

No learned parts, so it cannot share a model's blind spots:
1. background = palette colour nearest to the median of the border pixels;
2. each pixel's coverage alpha = its projection on the segment from the background to the
   object colour (so a blurred edge still splits at alpha = 0.5);
3. the object = the largest connected component of alpha > 0.5 (stray pixels are ignored);
4. shape from two numbers of that component: how full its bounding box is (square 1.0,
   circle pi/4, triangle 1/2) and how much of its mass lies in the top half (triangle 1/4);
5. size from the bounding box's extent; position from the bounding box's centre.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
from scipy import ndimage

from ip2p_lib.toyworld.edits import EDITED_ATTRIBUTES, Edit, apply
from ip2p_lib.toyworld.render import render
from ip2p_lib.toyworld.scene import BACKGROUNDS, COLORS, SIZE_RADIUS, Scene, region_of

_FG_NAMES = tuple(COLORS)
_FG_RGB = np.array([COLORS[c] for c in _FG_NAMES], dtype=np.float32)
_BG_NAMES = tuple(BACKGROUNDS)
_BG_RGB = np.array([BACKGROUNDS[c] for c in _BG_NAMES], dtype=np.float32)

# Decision thresholds, each halfway between the values the renderer produces.
SIZE_THRESHOLD = float(SIZE_RADIUS["small"] + SIZE_RADIUS["large"])  # bbox extent / image side
SQUARE_FILL = 0.89  # square 1.0, circle 0.785
TRIANGLE_TOP_MASS = 0.375  # triangle 0.25, circle and square 0.5
MIN_OBJECT_PIXEL_FRACTION = 0.01


@dataclass(frozen=True)
class Judgement:
    """What the oracle reads off one image. Attributes are None when no object was found."""

    shape: str | None
    color: str | None
    background: str
    size: str | None
    hpos: str | None
    vpos: str | None
    u: float | None
    v: float | None
    fill: float | None
    top_mass: float | None

    @property
    def found(self) -> bool:
        """Whether an object was found at all."""
        return self.shape is not None

    def attributes(self) -> dict[str, str | None]:
        """The categorical attributes by name, as `Scene.attributes()` gives them."""
        return {k: getattr(self, k) for k in ("shape", "color", "background", "size", "hpos", "vpos")}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_rgb_array(image: Any) -> np.ndarray:
    """float32 (H, W, 3) in [0, 255] from a PIL image, a uint8 array, or a float array in [0, 1]."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # PIL.Image
        return np.asarray(image.convert("RGB"), dtype=np.float32)
    if hasattr(image, "detach"):  # torch tensor
        image = image.detach().cpu().numpy()
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ValueError(f"expected an RGB image of shape (H, W, 3), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32)
    arr = arr.astype(np.float32)
    if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
        raise ValueError("float images must lie in [0, 1]; pass uint8 for [0, 255]")
    return arr * 255.0


def _nearest(rgb: np.ndarray, palette: np.ndarray, names: tuple[str, ...]) -> str:
    return names[int(np.argmin(((palette - rgb) ** 2).sum(axis=1)))]


def judge(image: Any) -> Judgement:
    """Read shape, colour, background, size and position off an image of the world."""
    img = as_rgb_array(image)
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg_rgb = np.median(border, axis=0)
    background = _nearest(bg_rgb, _BG_RGB, _BG_NAMES)
    nothing = Judgement(None, None, background, None, None, None, None, None, None, None)

    # First pass, on a 3x3-median-denoised copy: clearly-not-background pixels give the colour.
    smooth = ndimage.median_filter(img, size=(3, 3, 1))
    dist = np.linalg.norm(smooth - bg_rgb, axis=-1)
    core = _largest_component(dist > 40.0)
    if core is None or core.sum() < MIN_OBJECT_PIXEL_FRACTION * h * w:
        return nothing
    core_pixels = smooth[core & (dist >= np.quantile(dist[core], 0.5))]
    color = _nearest(np.median(core_pixels, axis=0), _FG_RGB, _FG_NAMES)

    # Second pass: coverage alpha by projection onto the segment background -> object colour.
    direction = _FG_RGB[_FG_NAMES.index(color)] - bg_rgb
    alpha = ((img - bg_rgb) @ direction) / float(direction @ direction)
    obj = _largest_component(ndimage.median_filter(alpha, size=3) > 0.5)
    if obj is None:
        return nothing
    ys, xs = np.nonzero(obj)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    # Mass: unclipped alpha (noise averages out) in the box grown by a pixel (soft edges).
    gy0, gy1, gx0, gx1 = max(y0 - 1, 0), min(y1 + 1, h), max(x0 - 1, 0), min(x1 + 1, w)
    mass = alpha[gy0:gy1, gx0:gx1]
    total = max(float(mass.sum()), 1e-6)
    fill = total / float((y1 - y0) * (x1 - x0))
    row_centres = np.arange(gy0, gy1) + 0.5
    top_mass = float(mass[row_centres < (y0 + y1) / 2.0].sum() / total)
    if top_mass < TRIANGLE_TOP_MASS:
        shape = "triangle"
    elif fill > SQUARE_FILL:
        shape = "square"
    else:
        shape = "circle"

    extent = max(y1 - y0, x1 - x0) / float(w)
    size = "small" if extent < SIZE_THRESHOLD else "large"
    r = SIZE_RADIUS[size] * w
    # Centre = the alpha-weighted centroid (sub-pixel); a triangle's centroid lies r/3 below
    # the centre of its bounding box.
    cx = float((mass.sum(axis=0) * (np.arange(gx0, gx1) + 0.5)).sum() / total)
    cy = float((mass.sum(axis=1) * row_centres).sum() / total)
    if shape == "triangle":
        cy -= r / 3.0
    u = float(np.clip((cx - r) / (w - 2 * r), 0.0, 1.0))
    v = float(np.clip((cy - r) / (h - 2 * r), 0.0, 1.0))
    hpos, vpos = region_of(u, v)
    return Judgement(
        shape=shape,
        color=color,
        background=background,
        size=size,
        hpos=hpos,
        vpos=vpos,
        u=u,
        v=v,
        fill=fill,
        top_mass=top_mass,
    )


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 4-connected component of a boolean mask, or None if the mask is empty."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))


@dataclass(frozen=True)
class EditScore:
    """How well an output image carries out an edit of an input image.

    `changed`: the edited attribute(s) now read as the edit's target. `preserved`: every other
    attribute reads as it did in the input (position within `position_tolerance`). `target_l1`:
    mean absolute difference to the oracle target in [0, 1] (None without the input scene)."""

    changed: bool
    preserved: bool
    before: Mapping[str, str | None]
    after: Mapping[str, str | None]
    target_l1: float | None

    @property
    def success(self) -> bool:
        return self.changed and self.preserved


POSITION_TOLERANCE = 0.15  # how far (a fraction of the image) an object may drift and still count as kept


def edit_score(
    input_image: Any,
    output_image: Any,
    edit: Edit,
    input_scene: Scene | None = None,
    position_tolerance: float = POSITION_TOLERANCE,
) -> EditScore:
    """Judge both images and check the edit: asked change made, everything else kept."""
    return score_judgements(judge(input_image), judge(output_image), edit, output_image, input_scene,
                            position_tolerance)


def score_judgements(
    before: Judgement,
    after: Judgement,
    edit: Edit,
    output_image: Any = None,
    input_scene: Scene | None = None,
    position_tolerance: float = POSITION_TOLERANCE,
) -> EditScore:
    """`edit_score` from judgements already made (each image judged once when scoring many ways)."""
    targets = edit.target_attributes()
    changed = after.found and all(after.attributes()[k] == val for k, val in targets.items())
    kept = [k for k in ("shape", "color", "background", "size") if k not in EDITED_ATTRIBUTES[edit.kind]]
    preserved = after.found and all(after.attributes()[k] == before.attributes()[k] for k in kept)
    if edit.kind != "move" and preserved and before.found:
        preserved = abs(after.u - before.u) <= position_tolerance and abs(after.v - before.v) <= position_tolerance
    target_l1 = None
    if input_scene is not None:
        out = as_rgb_array(output_image)
        target = render(apply(input_scene, edit), out.shape[0]).astype(np.float32)
        target_l1 = float(np.abs(out - target).mean() / 255.0)
    return EditScore(bool(changed), bool(preserved), before.attributes(), after.attributes(), target_l1)


def degrade(image: np.ndarray, noise_std: float = 0.0, blur_sigma: float = 0.0, seed: int = 0) -> np.ndarray:
    """A rendered image with Gaussian blur then Gaussian pixel noise (std in 0-255 units), uint8.

    Used to measure how the oracle holds up on imperfect, generated-looking images."""
    out = as_rgb_array(image)
    if blur_sigma > 0:
        out = ndimage.gaussian_filter(out, sigma=(blur_sigma, blur_sigma, 0))
    if noise_std > 0:
        out = out + np.random.default_rng(seed).normal(0.0, noise_std, out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def attribute_accuracy(scenes: list[Scene], images: Any) -> dict[str, float]:
    """Fraction of images whose judged attribute equals the scene's, per attribute, plus
    `all` (shape, colour, background and size all right) and the mean position error `uv_error`."""
    judged = [judge(img) for img in images]
    out: dict[str, float] = {}
    for name in ("shape", "color", "background", "size", "hpos", "vpos"):
        out[name] = float(np.mean([getattr(j, name) == getattr(s, name) for s, j in zip(scenes, judged)]))
    out["all"] = float(np.mean([
        all(getattr(j, k) == getattr(s, k) for k in ("shape", "color", "background", "size"))
        for s, j in zip(scenes, judged)
    ]))
    errors = [max(abs(j.u - s.u), abs(j.v - s.v)) if j.found else 1.0 for s, j in zip(scenes, judged)]
    out["uv_error"] = float(np.mean(errors))
    return out


def degradation_curve(
    n: int = 500,
    blur_sigmas: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0),
    noise_stds: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0),
    seed: int = 0,
    resolution: int = 64,
) -> list[dict[str, float]]:
    """Oracle accuracy on `n` random renders, for every (blur, noise) pair: one row each."""
    from ip2p_lib.toyworld.scene import sample_scenes

    scenes = sample_scenes(n, seed=seed)
    clean = [render(s, resolution) for s in scenes]
    rows = []
    for blur in blur_sigmas:
        for noise in noise_stds:
            images = [degrade(img, noise, blur, seed=seed + k) for k, img in enumerate(clean)]
            rows.append({"blur_sigma": blur, "noise_std": noise, **attribute_accuracy(scenes, images)})
    return rows
