"""Figure 4: one input, one instruction, a grid of outputs over the two guidance scales.

Rows raise s_T (follow the instruction harder), columns raise s_I (stay closer to the input).
The paper shows the grid for a few photographs; the toy world adds the oracle's rates over the
same grid for many held-out cases, so the trade the pictures suggest can be read as numbers:
edit success should climb with s_T and fall with s_I; preservation the other way round.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ip2p_lib.results.common import sizes
from ip2p_lib.results.sweep import ip2p_settings, point_value, profile_sweep

NAME = "fig04_guidance_grid"
TITLE = "Figure 4: outputs over text guidance s_T (rows) and image guidance s_I (columns)"
S_T = (1.0, 3.0, 5.0, 7.5, 12.5)
S_I = (0.5, 1.0, 1.5, 2.0, 3.0)
DEFAULTS: dict[str, dict[str, Any]] = {
    "toy": {"n": 60, "examples": 3, "s_T": S_T, "s_I": S_I, "steps": 20, "seed": 0, "rows": 64, "model": None,
            "data": None},
    "smoke": {"n": 5, "examples": 2, "s_T": (3.0, 7.5), "s_I": (1.0, 1.5), "steps": 4, "seed": 0, "rows": 64,
              "model": None, "data": None},
    "full": {"n": 20, "examples": 2, "s_T": (3.0, 5.0, 7.5, 10.0), "s_I": (1.0, 1.2, 1.6, 2.0), "steps": 100,
             "seed": 0, "rows": 6, "model": None, "data": None},
}
EXAMPLE_KINDS = ("recolor", "background", "reshape", "resize", "move")  # the toy examples: one of each, in this order


def pick_examples(cases: list[Any], k: int) -> list[int]:
    """Indices of the cases to draw: the first of each toy edit kind in EXAMPLE_KINDS order (or the
    first k cases when they have no kind)."""
    chosen: list[int] = []
    for kind in EXAMPLE_KINDS:
        chosen += [i for i, c in enumerate(cases) if c.kind == kind][:1]
    chosen = chosen or list(range(len(cases)))
    return chosen[:k]


def compute(profile: str = "toy", progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Every case at every (s_T, s_I): the example grids (pictures, not saved in JSON) and per
    cell the CLIP axes and (toy) the oracle's rates over all cases."""
    cfg = sizes(DEFAULTS, profile, overrides)
    cases, points, outputs = profile_sweep(profile, cfg, ip2p_settings(cfg["s_T"], cfg["s_I"]), progress, "Figure 4")
    chosen = pick_examples(cases, cfg["examples"])
    shape = (len(cfg["s_T"]), len(cfg["s_I"]))
    return {
        "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}, "n": len(cases),
        "cells": points,
        "examples": [{"instruction": cases[i].instruction, "caption": cases[i].caption, "kind": cases[i].kind}
                     for i in chosen],
        "_inputs": np.stack([cases[i].image for i in chosen]),
        "_grids": outputs[:, chosen].reshape(*shape, len(chosen), *outputs.shape[2:]).transpose(2, 0, 1, 3, 4, 5),
    }


def rate_grid(data: dict[str, Any], key: str) -> np.ndarray:
    """(len(s_T), len(s_I)) of a cell value: an oracle rate over all cases, or a CLIP axis."""
    rows, cols = len(data["settings"]["s_T"]), len(data["settings"]["s_I"])
    return np.asarray([point_value(c, key) for c in data["cells"]], dtype=float).reshape(rows, cols)


def plot(data: dict[str, Any]) -> Any:
    """Top: each example's grid (its input at the left). Bottom: the rates over the grid."""
    import matplotlib.pyplot as plt

    s_T, s_I = data["settings"]["s_T"], data["settings"]["s_I"]
    grids, inputs = data.get("_grids"), data.get("_inputs")
    judged = all("oracle" in c for c in data["cells"])
    keys = ["edit_success", "preserved", "success"] if judged else ["clip_direction", "clip_image"]
    n_ex = 0 if grids is None else len(grids)
    fig = plt.figure(figsize=(max(3.2 * len(keys), 2.1 * n_ex * (len(s_I) + 1) / 3), 1.3 * len(s_T) + 3.8))
    top, bottom = fig.subfigures(2, 1, height_ratios=[1.3 * len(s_T), 3.2]) if n_ex else (None, fig)
    for e in range(n_ex):
        sub = top.subfigures(1, n_ex)[e] if n_ex > 1 else top
        axes = sub.subplots(len(s_T), len(s_I) + 1, squeeze=False)
        for r in range(len(s_T)):
            for c in range(len(s_I) + 1):
                ax = axes[r][c]
                ax.imshow(inputs[e] if c == 0 else grids[e][r][c - 1])
                ax.set_xticks([]), ax.set_yticks([])
                if c == 0 and r > 0:
                    ax.set_visible(False)
                if r == 0:
                    ax.set_title("input" if c == 0 else f"s_I {s_I[c - 1]:g}", fontsize=7)
                if c == 1:
                    ax.set_ylabel(f"s_T {s_T[r]:g}", fontsize=7)
        sub.suptitle(f"\"{data['examples'][e]['instruction']}\"", fontsize=8)
    axes = bottom.subplots(1, len(keys), squeeze=False)[0]
    for ax, key in zip(axes, keys):
        grid = rate_grid(data, key)
        im = ax.imshow(grid, cmap="viridis", aspect="auto", **({"vmin": 0.0, "vmax": 1.0} if judged else {}))
        for (r, c), v in np.ndenumerate(grid):
            ax.text(c, r, f"{100 * v:.0f}" if judged else f"{v:.2f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(s_I)), [f"{v:g}" for v in s_I], fontsize=7)
        ax.set_yticks(range(len(s_T)), [f"{v:g}" for v in s_T], fontsize=7)
        ax.set(xlabel="s_I", ylabel="s_T", title=f"{key.replace('_', ' ')} (n = {data['n']})")
        bottom.colorbar(im, ax=ax, fraction=0.05)
    return fig
