"""Thresholds for another CLIP, read from its own score distributions; and how to check a filter.

The paper's thresholds (0.2, 0.2, 0.2, 0.75) are numbers on CLIP ViT-L/14's cosine scale.
Another CLIP has another scale (the toy CLIP's matched image-caption cosines sit near 0.9,
ViT-L/14's near 0.3), so the numbers do not carry over; what carries over is what they *mean*.
`null_calibration` states that meaning without labels: a threshold is the score that a chosen
share of *mismatched* pairs (the same generated images and captions, partners shuffled across
caption pairs) still reaches. A real match must beat what chance pairings reach:

    sim_0, sim_1   image vs caption of another sample         (does the image show its caption?)
    sim_direction  image change vs another pair's text change (does it change the asked way?)
    sim_image      image 0 vs image 0 of another caption pair (same scene, or just any scene?)

A user can run this on any CLIP and any generated set. In the toy world the oracle then says
how good the chosen filter is (`filter_report`): notebook 03 does both.
"""

from __future__ import annotations

from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import torch

from ip2p_lib.filtering.filter import Thresholds, select
from ip2p_lib.filtering.scores import similarities


def partner_permutation(groups: Sequence[Hashable], rng: np.random.Generator) -> np.ndarray:
    """A shuffle of the rows in which no row keeps a partner from its own group (caption pair)."""
    groups_arr = np.asarray([hash(g) for g in groups])
    for _ in range(100):
        perm = rng.permutation(len(groups_arr))
        clash = groups_arr[perm] == groups_arr
        tries = 0
        while clash.any() and tries < 50:
            bad = np.flatnonzero(clash)
            perm[bad] = perm[rng.permutation(bad)] if len(bad) > 1 else perm[bad]
            if len(bad) == 1:  # swap the last clash with a random row
                j = int(rng.integers(len(perm)))
                perm[[bad[0], j]] = perm[[j, bad[0]]]
            clash = groups_arr[perm] == groups_arr
            tries += 1
        if not clash.any():
            return perm
    raise ValueError("cannot shuffle partners across groups: are all rows in one caption pair?")


def null_scores(i0: torch.Tensor, i1: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor,
                groups: Sequence[Hashable], seed: int = 0) -> dict[str, np.ndarray]:
    """The four scores with partners from other caption pairs (see the module docstring)."""
    perm = torch.as_tensor(partner_permutation(groups, np.random.default_rng(seed)))
    shuffled_text = similarities(i0, i1, t0[perm], t1[perm])      # sim_0, sim_1, sim_direction vs others' text
    other_scene = similarities(i0, i0[perm], t0, t0)              # sim_image: image 0 vs another pair's image 0
    return {"sim_0": shuffled_text["sim_0"], "sim_1": shuffled_text["sim_1"],
            "sim_direction": shuffled_text["sim_direction"], "sim_image": other_scene["sim_image"]}


def null_calibration(null: Mapping[str, np.ndarray], quantile: float = 0.95, keep_per_pair: int = 4) -> Thresholds:
    """Thresholds at the `quantile` of each score's mismatched-pair distribution."""
    q = {k: round(float(np.quantile(np.asarray(v), quantile)), 3) for k, v in null.items()}
    return Thresholds(sim_image=q["sim_image"], sim_direction=q["sim_direction"], sim_0=q["sim_0"],
                      sim_1=q["sim_1"], keep_per_pair=keep_per_pair)


# ---------------------------------------------------------------- checking a filter against labels


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random good sample outscores a random bad one
    (ties count half). NaN without both classes."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate) as the threshold sweeps from high to low."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=bool)
    order = np.argsort(-scores, kind="mergesort")
    tp = np.concatenate([[0], np.cumsum(labels[order])])
    fp = np.concatenate([[0], np.cumsum(~labels[order])])
    return fp / max(1, (~labels).sum()), tp / max(1, labels.sum())


def random_selection_precision(good: np.ndarray, groups: Sequence[Hashable], kept_per_group: Mapping[Hashable, int],
                               draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """Precision (mean, std over draws) of keeping, per caption pair, as many samples as the filter
    kept there, chosen at random: the baseline a filter must beat at the same yield."""
    rng = np.random.default_rng(seed)
    good = np.asarray(good, dtype=bool)
    members: dict[Hashable, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    values = []
    for _ in range(draws):
        picked = [j for g, k in kept_per_group.items() if k for j in rng.choice(members[g], size=k, replace=False)]
        values.append(good[picked].mean() if picked else float("nan"))
    return float(np.nanmean(values)), float(np.nanstd(values))


def filter_report(scores: Mapping[str, np.ndarray], good: np.ndarray, groups: Sequence[Hashable],
                  thresholds: Thresholds, seed: int = 0) -> dict[str, Any]:
    """How a filter does against labels: yield, precision and recall of the kept samples, the
    share of caption pairs with a kept sample, and random selection at the same yield."""
    keep = select(scores, groups, thresholds)
    good = np.asarray(good, dtype=bool)
    kept_per_group: dict[Hashable, int] = {}
    for g, k in zip(groups, keep):
        kept_per_group[g] = kept_per_group.get(g, 0) + int(k)
    pairs_with_good = {g for g, ok in zip(groups, good) if ok}
    rand_mean, rand_std = random_selection_precision(good, groups, kept_per_group, seed=seed)
    return {
        "samples": int(len(keep)), "kept": int(keep.sum()), "yield": float(keep.mean()),
        "precision": float(good[keep].mean()) if keep.any() else float("nan"),
        "recall": float((keep & good).sum() / max(1, good.sum())),
        "base_rate": float(good.mean()),
        "caption_pairs": len(kept_per_group),
        "caption_pairs_kept": sum(1 for k in kept_per_group.values() if k),
        "caption_pairs_with_a_good_sample": len(pairs_with_good),
        "random_precision": rand_mean, "random_precision_std": rand_std,
        "thresholds": thresholds.to_dict(),
    }
