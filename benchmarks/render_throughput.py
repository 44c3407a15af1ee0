"""Scenes rendered per second, against a reference: the same scenes drawn with PIL's ImageDraw
(no anti-aliasing) in the same process. Prints both rates and the ratio ours/reference."""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image, ImageDraw

from ip2p_lib.toyworld import BACKGROUNDS, COLORS, render, sample_scenes
from ip2p_lib.toyworld.scene import SIZE_RADIUS


def pil_reference(scene, resolution: int = 64) -> np.ndarray:
    """An aliased PIL drawing of the scene: the simplest renderer one could write."""
    img = Image.new("RGB", (resolution, resolution), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    cx, cy = scene.centre_px(resolution)
    r = SIZE_RADIUS[scene.size] * resolution
    box = (cx - r, cy - r, cx + r, cy + r)
    fill = COLORS[scene.color]
    if scene.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif scene.shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return np.asarray(img)


def rate(fn, scenes) -> float:
    start = time.perf_counter()
    for s in scenes:
        fn(s)
    return len(scenes) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scenes = sample_scenes(args.n, seed=0)
    ours, ref = [], []
    for _ in range(args.repeats):  # alternate, so both see the same machine state
        ours.append(rate(render, scenes))
        ref.append(rate(pil_reference, scenes))
    o, r = float(np.median(ours)), float(np.median(ref))
    print(f"ours (anti-aliased, 4x4 supersampling): {o:,.0f} scenes/s")
    print(f"reference (PIL ImageDraw, aliased):      {r:,.0f} scenes/s")
    print(f"ratio ours/reference: {o / r:.2f}")


if __name__ == "__main__":
    main()
