"""Pictures and explanations for checking the CLIP filter against the toy world's oracle (notebook 03).

- `oracle_reason`: why the oracle rejects a generated pair, in words, with a category and the
  object's position drift (the failure CLIP barely sees);
- `precision_interval`: a Wilson interval for a precision measured on few kept samples;
- `score_histograms`, `roc_panel`: the four scores of good vs failed pairs;
- `pair_gallery`: image 0 | image 1 with the captions, the four scores and the oracle's verdict.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ip2p_lib.filtering.calibrate import roc_auc, roc_curve
from ip2p_lib.filtering.scores import SCORE_NAMES
from ip2p_lib.p2p.evaluate import edit_from_captions
from ip2p_lib.toyworld import judge, parse_caption
from ip2p_lib.toyworld.edits import EDITED_ATTRIBUTES

# Why a pair fails, most basic first: a pair gets the first category that applies.
REASONS: tuple[str, ...] = (
    "no single edit in the captions",
    "image 0 unlike caption 0",
    "edit not made",
    "another attribute changed",
    "position drift",
)
CATEGORICAL = ("shape", "color", "background", "size")


@dataclass(frozen=True)
class Reason:
    """The oracle's verdict on one pair in words. `category` is "" for a good pair, else one of
    `REASONS`; `drift` is the object's largest move along u or v (fraction of the range its
    centre can move in), None when an image shows no object; `same_region` whether it stayed in
    its named region (one of 9)."""

    category: str
    text: str
    drift: float | None
    same_region: bool | None


def oracle_reason(image_0: np.ndarray, image_1: np.ndarray, caption_0: str, caption_1: str,
                  position_tolerance: float = 0.15) -> Reason:
    """Explain the oracle's verdict (`p2p.evaluate.oracle_verdicts`: good = success and faithful_0)."""
    edit = edit_from_captions(caption_0, caption_1)
    if edit is None:
        return Reason(REASONS[0], REASONS[0], None, None)
    a, b = judge(image_0), judge(image_1)
    said = parse_caption(caption_0)
    drift = same = None
    if a.found and b.found:
        drift = max(abs(b.u - a.u), abs(b.v - a.v))
        same = (a.hpos, a.vpos) == (b.hpos, b.vpos)
    problems: list[tuple[str, str]] = []
    unlike = [f"{k} {a.attributes()[k]} (caption: {said[k]})" for k in CATEGORICAL if a.attributes()[k] != said[k]]
    if unlike:
        problems.append((REASONS[1], "image 0 shows " + ", ".join(unlike)))
    wanted = edit.target_attributes()
    missed = [f"{k} reads {b.attributes()[k]}, wanted {v}" for k, v in wanted.items() if b.attributes()[k] != v]
    if missed:
        problems.append((REASONS[2], "edit not made: " + "; ".join(missed)))
    others = [k for k in CATEGORICAL if k not in EDITED_ATTRIBUTES[edit.kind]]
    changed = [f"{k} {a.attributes()[k]} -> {b.attributes()[k]}" for k in others if a.attributes()[k] != b.attributes()[k]]
    if changed:
        problems.append((REASONS[3], "also changed: " + ", ".join(changed)))
    if edit.kind != "move" and drift is not None and drift > position_tolerance:
        where = "inside its region" if same else f"from {a.hpos}/{a.vpos} to {b.hpos}/{b.vpos}"
        problems.append((REASONS[4], f"object moved {drift:.2f} ({where}; tolerance {position_tolerance})"))
    if not problems:
        return Reason("", "good: edit made, the rest kept", drift, same)
    order = {r: i for i, r in enumerate(REASONS)}
    problems.sort(key=lambda p: order[p[0]])
    return Reason(problems[0][0], "; ".join(t for _, t in problems), drift, same)


def precision_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (95% at z = 1.96) for `hits` good out of `n` kept; (nan, nan) if n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def score_histograms(scores: Mapping[str, np.ndarray], good: np.ndarray, thresholds: Mapping[str, Any] | None = None,
                     bins: int = 30) -> Any:
    """A figure: one histogram per score, good (oracle) vs failed pairs, with optional threshold
    lines ({label: Thresholds}); densities, so the two groups compare whatever their sizes."""
    import matplotlib.pyplot as plt

    good = np.asarray(good, dtype=bool)
    fig, axes = plt.subplots(1, len(SCORE_NAMES), figsize=(3.4 * len(SCORE_NAMES), 3.0))
    for ax, name in zip(axes, SCORE_NAMES):
        values = np.asarray(scores[name], dtype=float)
        edges = np.linspace(values.min(), values.max(), bins + 1)
        ax.hist(values[good], bins=edges, density=True, alpha=0.55, color="tab:green", label=f"good ({good.sum()})")
        ax.hist(values[~good], bins=edges, density=True, alpha=0.55, color="tab:red", label=f"failed ({(~good).sum()})")
        for (label, t), style in zip((thresholds or {}).items(), ("--", ":", "-.")):
            ax.axvline(getattr(t, name), color="k", linestyle=style, linewidth=1, label=label)
        ax.set_title(f"{name}: AUC {roc_auc(values, good):.2f}", fontsize=10)
        ax.set_yticks([])
    axes[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def roc_panel(scores: Mapping[str, np.ndarray], good: np.ndarray, ax: Any = None) -> Any:
    """ROC curves of the four scores as detectors of good pairs, AUC in the legend; returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    for name in SCORE_NAMES:
        fpr, tpr = roc_curve(scores[name], good)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc(scores[name], good):.2f})")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", label="chance (AUC 0.50)")
    ax.set_xlabel("false positive rate (failed pairs that pass)")
    ax.set_ylabel("true positive rate (good pairs that pass)")
    ax.legend(fontsize=8, loc="lower right")
    return ax


def pair_gallery(image_0: np.ndarray, image_1: np.ndarray, caption_0: Sequence[str], caption_1: Sequence[str],
                 scores: Mapping[str, np.ndarray], verdicts: Sequence[str], good: Sequence[bool],
                 indices: Sequence[int], columns: int = 3, title: str = "") -> Any:
    """A figure of pairs `indices`, one panel each: image 0 | image 1, the two captions above, the
    four scores and the oracle's verdict below (green: good, red: failed)."""
    import matplotlib.pyplot as plt

    indices = list(indices)
    if not indices:  # nothing to show: say so in the figure, so that a caller can always save one
        fig, ax = plt.subplots(figsize=(4.8, 1.0))
        ax.axis("off")
        ax.text(0.5, 0.5, f"{title or 'pairs'}: none", ha="center", va="center", fontsize=9)
        return fig
    columns = min(columns, len(indices))
    rows = math.ceil(len(indices) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.7 * columns, 3.5 * rows), squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        a, b = np.asarray(image_0[i]), np.asarray(image_1[i])
        gap = np.full((a.shape[0], max(2, a.shape[1] // 16), 3), 255, dtype=a.dtype)
        ax.axis("on")
        ax.imshow(np.concatenate([a, gap, b], axis=1))
        ax.set_xticks([]); ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(textwrap.fill(f"0: {caption_0[i]}", 44) + "\n" + textwrap.fill(f"1: {caption_1[i]}", 44),
                     fontsize=7, loc="left")
        numbers = "  ".join(f"{n.replace('sim_', '')} {float(scores[n][i]):.2f}" for n in SCORE_NAMES)
        ax.set_xlabel(numbers + "\n" + textwrap.fill(("oracle: " if good[i] else "oracle: failed, ") + verdicts[i], 50),
                      fontsize=7, color="tab:green" if good[i] else "tab:red")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
