"""Scenes of the miniature world: one shape, one colour, one background, a size, a position.

The world is small on purpose: every image has a known ground truth, so each stage of the
pipeline can be scored exactly (see `oracle.py`). Palettes are public constants so that
other tools (the oracle, plots, a student's own code) read the same RGB values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

# Foreground and background palettes are disjoint, so a colour word alone says which it is.
COLORS: Mapping[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 30),
    "purple": (150, 60, 190),
    "orange": (245, 140, 20),
}
BACKGROUNDS: Mapping[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "beige": (215, 195, 150),
}

SIZES: tuple[str, ...] = ("small", "large")
# Half-extent of the shape's bounding box as a fraction of the image side. At 64 px these
# are 11 px and 20 px: a small shape still spans ~5 latent cells after a 4x autoencoder.
SIZE_RADIUS: Mapping[str, float] = {"small": 11 / 64, "large": 20 / 64}

# Position is continuous: (u, v) in [0, 1]^2 maps the shape's centre into the range that
# keeps it inside the image. Thirds of each axis give the named regions used in language.
HORIZONTAL: tuple[str, ...] = ("left", "center", "right")
VERTICAL: tuple[str, ...] = ("top", "middle", "bottom")
REGION_CENTRES: tuple[float, ...] = (1 / 6, 1 / 2, 5 / 6)

ATTRIBUTES: tuple[str, ...] = ("shape", "color", "background", "size", "hpos", "vpos")


REGIONS: tuple[tuple[str, str], ...] = tuple((h, v) for v in VERTICAL for h in HORIZONTAL)  # the 9, row by row


def region_of(u: float, v: float) -> tuple[str, str]:
    """The named region (horizontal, vertical) of position (u, v): which third of each axis."""
    return HORIZONTAL[min(int(u * 3), 2)], VERTICAL[min(int(v * 3), 2)]


def region_centre(region: tuple[str, str]) -> tuple[float, float]:
    """The position (u, v) at the centre of a named region (horizontal, vertical)."""
    return REGION_CENTRES[HORIZONTAL.index(region[0])], REGION_CENTRES[VERTICAL.index(region[1])]


@dataclass(frozen=True)
class Scene:
    """One image's ground truth. `u`, `v` in [0, 1]: 0 = left/top, 1 = right/bottom."""

    shape: str
    color: str
    background: str
    size: str
    u: float = 0.5
    v: float = 0.5

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("color", self.color, tuple(COLORS)),
            ("background", self.background, tuple(BACKGROUNDS)),
            ("size", self.size, SIZES),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; the world has {', '.join(allowed)}")
        if not (0.0 <= self.u <= 1.0 and 0.0 <= self.v <= 1.0):
            raise ValueError(f"position (u={self.u}, v={self.v}) must lie in [0, 1]^2")

    @property
    def hpos(self) -> str:
        """Horizontal region name: left, center or right."""
        return region_of(self.u, self.v)[0]

    @property
    def vpos(self) -> str:
        """Vertical region name: top, middle or bottom."""
        return region_of(self.u, self.v)[1]

    def attributes(self) -> dict[str, str]:
        """The categorical attributes by name (what captions, edits and the oracle talk about)."""
        return {name: getattr(self, name) for name in ATTRIBUTES}

    def centre_px(self, resolution: int = 64) -> tuple[float, float]:
        """Centre of the shape in pixel coordinates at `resolution`."""
        r = SIZE_RADIUS[self.size] * resolution
        span = resolution - 2 * r
        return r + self.u * span, r + self.v * span

    def to_dict(self) -> dict[str, object]:
        """Every field plus the derived region names: the JSONL record of `ip2p world`."""
        return {**dataclasses.asdict(self), "hpos": self.hpos, "vpos": self.vpos}

    def replace(self, **changes: object) -> "Scene":
        """A copy with some fields changed (scenes are immutable)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def sample_scene(rng: np.random.Generator) -> Scene:
    """A uniformly random scene: every attribute independent, position uniform."""
    return Scene(
        shape=SHAPES[rng.integers(len(SHAPES))],
        color=tuple(COLORS)[rng.integers(len(COLORS))],
        background=tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))],
        size=SIZES[rng.integers(len(SIZES))],
        u=float(rng.uniform()),
        v=float(rng.uniform()),
    )


def sample_scenes(n: int, seed: int = 0) -> list[Scene]:
    """`n` random scenes from one seeded generator (reproducible)."""
    rng = np.random.default_rng(seed)
    return [sample_scene(rng) for _ in range(n)]


def at_region(scene: Scene, region: tuple[str, str], rng: np.random.Generator | None = None) -> Scene:
    """The scene moved into `region` (horizontal, vertical): uniformly inside that third of each
    axis, or at its centre (`region_centre`) when `rng` is None."""
    if rng is None:
        u, v = region_centre(region)
    else:
        du, dv = rng.uniform(size=2)
        u, v = (HORIZONTAL.index(region[0]) + du) / 3, (VERTICAL.index(region[1]) + dv) / 3
    return scene.replace(u=float(u), v=float(v))
