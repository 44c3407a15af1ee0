"""Figure 8's two axes, and the cases they are measured on.

    CLIP image similarity      cos(I_in, I_out)                   did the output stay the input's picture?
    CLIP directional similarity cos(I_out - I_in, T_out - T_in)   did it change the way the caption changed?

I are CLIP image embeddings, T text embeddings of the input caption and the edited caption (the
authors' `compute_metrics.py` uses the same pair of captions). They are `sim_image` and
`sim_direction` of the pair filter (`ip2p_lib.filtering.scores`), applied to (input, output)
instead of a generated pair: the same scorer, so the same model and preprocessing.

A case is anything with `image` (uint8 H x W x 3), `instruction`, `caption` and
`edited_caption`: a toy `EditCase` (which the oracle can also judge, having a scene and an edit)
or a `PhotoCase` read from a dataset folder (the full profile: CLIP only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True, eq=False)
class PhotoCase:
    """A test example without ground truth: an input picture, its caption, an instruction and the
    caption of the wanted result (a row of a dataset's test split)."""

    image: np.ndarray = field(repr=False)  # uint8 (H, W, 3)
    instruction: str
    caption: str
    edited_caption: str
    kind: str = "photo"


def judgeable(cases: Sequence[Any]) -> bool:
    """Whether the toy oracle can judge these cases (each has a scene and an edit)."""
    return bool(cases) and all(hasattr(c, "scene") and hasattr(c, "edit") for c in cases)


def dataset_cases(folder: str | Path, n: int, split: str = "test", resolution: int | None = None) -> list[PhotoCase]:
    """The first `n` caption pairs of `split` (the contiguous split of `ip2p_lib.dataset.training`)
    of a dataset folder of shards, one sample each, as cases: the full profile's test set (the authors evaluate on
    their dataset's held-out examples). `resolution` resizes each input square (the editor's
    size), else it is kept."""
    from PIL import Image

    from ip2p_lib.dataset.shards import decode_png, read_table
    from ip2p_lib.dataset.training import split_range

    frame = read_table(folder, columns=["original_image", "edit_prompt", "original_prompt", "edited_prompt"])
    if len(frame) == 0:
        raise FileNotFoundError(f"no shards in {folder}")
    pairs = frame["triple_index"].unique()  # caption pairs, in order: the splits cut these
    lo, hi = split_range(len(pairs), split)
    chosen = set(pairs[lo:min(hi, lo + n)].tolist())
    rows = frame[frame["triple_index"].isin(chosen)].groupby("triple_index").head(1)  # one sample per pair
    cases = []
    for _, r in rows.iterrows():
        image = decode_png(r["original_image"])
        if resolution is not None and image.shape[:2] != (resolution, resolution):
            image = np.asarray(Image.fromarray(image).resize((resolution, resolution), Image.LANCZOS))
        cases.append(PhotoCase(image, r["edit_prompt"], r["original_prompt"], r["edited_prompt"]))
    return cases


def clip_edit_scores(scorer: Any, cases: Sequence[Any], outputs: np.ndarray) -> dict[str, np.ndarray]:
    """Per case: `clip_image` = cos(I_in, I_out) and `clip_direction` = cos(I_out - I_in, T_out - T_in),
    `clip_output` = cos(I_out, T_out); `scorer` is a `ClipScorer`, `outputs` uint8 (N, H, W, 3)."""
    inputs = np.stack([c.image for c in cases])
    s = scorer.scores(inputs, np.asarray(outputs), [c.caption for c in cases], [c.edited_caption for c in cases])
    return {"clip_image": s["sim_image"], "clip_direction": s["sim_direction"], "clip_output": s["sim_1"]}


def mean_and_sem(values: np.ndarray) -> tuple[float, float]:
    """The mean and its standard error (0 for one value)."""
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0
