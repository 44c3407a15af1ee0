"""Measuring pair generators with the oracle: every variant and fraction p on the same caption
pairs, seeds and noise, so that differences come from the attention control alone."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ip2p_lib.p2p.evaluate import oracle_verdicts
from ip2p_lib.p2p.sampler import TOY_STEPS, PairSpec, generate_pairs


def toy_caption_pairs(n: int, seed: int = 0, kinds: Sequence[str] = ("recolor", "reshape", "background", "resize"),
                      p_position: float = 0.5, offset: int = 5) -> list[tuple[str, str]]:
    """`n` (input caption, edited caption) pairs of held-out scenes, edit kinds in turn, one
    wording per pair (a position phrase with probability `p_position`, the same in both; always
    for a move, which the captions could not show otherwise)."""
    from ip2p_lib.toyworld import apply, caption, sample_edit
    from ip2p_lib.toyworld.captions import random_caption_variant
    from ip2p_lib.toyworld.pretrain.data import held_out_scenes

    rng = np.random.default_rng([seed, 11])
    out = []
    for i, scene in enumerate(held_out_scenes(n, offset=offset)):
        edit = sample_edit(scene, rng, kinds=(kinds[i % len(kinds)],))
        wording = random_caption_variant(rng, p_position=p_position)
        if edit.kind == "move":  # a move is only in the captions if both name the place
            wording["with_position"] = True
        out.append((caption(scene, **wording), caption(apply(scene, edit), **wording)))
    return out


def sweep(pipe: Any, scorer: Any, pairs: Sequence[tuple[str, str]], settings: Sequence[tuple[str, float]],
          steps: int = TOY_STEPS, cfg: float = 7.5, seed: int = 0, batch_size: int = 32,
          keep_images: bool = False) -> tuple[Any, dict[tuple[str, float], tuple[np.ndarray, np.ndarray]]]:
    """One row per (variant, p, caption pair): the oracle's verdict (kind, changed, preserved,
    success, faithful_0, position drift) and the four CLIP scores. Pair i has seed `seed + i` in
    every setting. Returns (DataFrame, images by setting if `keep_images`)."""
    import pandas as pd

    rows, images = [], {}
    for variant, p in settings:
        specs = [PairSpec(c0, c1, seed + i, cfg, p, steps, variant) for i, (c0, c1) in enumerate(pairs)]
        out = generate_pairs(pipe, specs, batch_size)
        c0s, c1s = [s.caption_0 for s in specs], [s.caption_1 for s in specs]
        verdict = oracle_verdicts(out.image_0, out.image_1, c0s, c1s)
        scores = scorer.scores(out.image_0, out.image_1, c0s, c1s)
        for i in range(len(specs)):
            rows.append({"variant": variant, "p": p, "pair": i, **{k: v[i] for k, v in verdict.items()},
                         **{k: float(v[i]) for k, v in scores.items()}})
        if keep_images:
            images[(variant, p)] = (out.image_0, out.image_1)
    return pd.DataFrame(rows), images


def summary(frame: Any, by: Sequence[str] = ("variant", "p")) -> Any:
    """Means of the verdicts and scores per setting (and per kind if `by` includes "kind")."""
    cols = ["changed", "preserved", "success", "drift", "sim_direction", "sim_image"]
    return frame.groupby(list(by))[cols].mean().round(3)
