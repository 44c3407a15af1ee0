"""Figure 8: how far does an edit go, and how much of the input does it keep?

The paper plots CLIP image similarity (y: output against input) against CLIP directional
similarity (x: does the image change agree with the caption change?) while sweeping the image
guidance s_I in 1.0, 1.2, ..., 2.2 at s_T = 7.5 (the authors' `compute_metrics.py`), and compares
with SDEdit over its strength. Up and to the right is better; each method trades one for the
other along its curve. We add an s_T sweep at s_I = 1.5 and, in the toy world, the same sweeps
judged by the oracle (edit success against preservation), and ask whether CLIP's ranking of the
settings agrees with the ground truth's (Spearman correlation over all points).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ip2p_lib.results.common import sizes
from ip2p_lib.results.sweep import ORACLE_RATES, ip2p_settings, point_value, profile_sweep, sdedit_settings

NAME = "fig08_clip_tradeoff"
TITLE = "Figure 8: CLIP image similarity against directional similarity, over guidance and SDEdit strength"
S_I_SWEEP = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2)  # the authors' compute_metrics.py, at s_T = 7.5
S_T_SWEEP = (3.0, 5.0, 7.5, 10.0, 12.5)
SDEDIT_STRENGTHS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the paper's range
DEFAULTS: dict[str, dict[str, Any]] = {
    "toy": {"n": 200, "steps": 20, "seed": 0, "rows": 64, "s_I_sweep": S_I_SWEEP, "s_T_fixed": 7.5,
            "s_T_sweep": S_T_SWEEP, "s_I_fixed": 1.5, "strengths": SDEDIT_STRENGTHS, "sdedit_guidance": 7.5,
            "model": None, "data": None},
    "smoke": {"n": 5, "steps": 4, "seed": 0, "rows": 64, "s_I_sweep": (1.0, 2.2), "s_T_fixed": 7.5,
              "s_T_sweep": (3.0,), "s_I_fixed": 1.5, "strengths": (0.5, 0.9), "sdedit_guidance": 7.5,
              "model": None, "data": None},
    "full": {"n": 100, "steps": 100, "seed": 0, "rows": 6, "s_I_sweep": S_I_SWEEP, "s_T_fixed": 7.5,
             "s_T_sweep": S_T_SWEEP, "s_I_fixed": 1.5, "strengths": SDEDIT_STRENGTHS, "sdedit_guidance": 7.5,
             "model": None, "data": None},
}


def spearman(x: list[float], y: list[float]) -> float:
    """Rank correlation of two lists (average ranks for ties)."""
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic) if len(x) > 2 else float("nan")


def agreement(points: list[dict[str, Any]]) -> dict[str, float]:
    """Does CLIP rank the settings as the oracle does? Spearman's rho over all points of
    clip_direction against edit success, and of clip_image against preservation."""
    judged = [p for p in points if "oracle" in p]
    if len(judged) < 3:
        return {}
    edit = [p["oracle"]["all"]["edit_success"] for p in judged]
    kept = [p["oracle"]["all"]["preserved"] for p in judged]
    return {"direction_vs_edit_success": spearman([p["clip_direction"] for p in judged], edit),
            "image_vs_preserved": spearman([p["clip_image"] for p in judged], kept), "points": len(judged)}


def curve_at(points: list[dict[str, Any]], x_key: str, y_key: str, x: float) -> float | None:
    """The curve through `points` (sorted by x), linearly interpolated at `x`; None outside its range."""
    xs, ys = zip(*sorted((point_value(p, x_key), point_value(p, y_key)) for p in points))
    if not xs[0] <= x <= xs[-1]:
        return None
    return float(np.interp(x, xs, ys))


def beats(data: dict[str, Any], curve: str, other: str, x_key: str = "clip_direction",
          y_key: str = "clip_image") -> list[dict[str, Any]]:
    """The paper's claim as numbers: at each point of `other` (SDEdit), the `curve` (InstructPix2Pix)
    interpolated at the same x, minus the other's y. Positive: at the same amount of edit, the
    curve keeps more of the input. Points outside the curve's x range are left out."""
    out = []
    for p in data["curves"][other]:
        y = curve_at(data["curves"][curve], x_key, y_key, point_value(p, x_key))
        if y is not None:
            out.append({"label": p["label"], x_key: point_value(p, x_key), "gain": y - point_value(p, y_key)})
    return out


def compute(profile: str = "toy", progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """The three curves (s_I sweep, s_T sweep, SDEdit) on the same cases, each point scored by
    CLIP and (toy) by the oracle; plus CLIP's agreement with the oracle."""
    cfg = sizes(DEFAULTS, profile, overrides)
    curves = {
        f"InstructPix2Pix, s_I sweep (s_T {cfg['s_T_fixed']:g})": ip2p_settings(cfg["s_T_fixed"], cfg["s_I_sweep"]),
        f"InstructPix2Pix, s_T sweep (s_I {cfg['s_I_fixed']:g})": ip2p_settings(cfg["s_T_sweep"], cfg["s_I_fixed"]),
        "SDEdit, strength sweep": sdedit_settings(cfg["strengths"], cfg["sdedit_guidance"]),
    }
    settings = [s for curve in curves.values() for s in curve]
    cases, points, _ = profile_sweep(profile, cfg, settings, progress, "Figure 8")
    out, start = {}, 0
    for name, curve in curves.items():
        out[name] = points[start:start + len(curve)]
        start += len(curve)
    return {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}, "n": len(cases),
            "curves": out, "agreement": agreement(points)}


def swept_value(point: dict[str, Any], curve: str) -> str:
    """The number a point is labelled with on its curve."""
    if point["method"] == "sdedit":
        return f"{point['strength']:g}"
    return f"{point['s_T']:g}" if "s_T sweep" in curve else f"{point['s_I']:g}"


def plot(data: dict[str, Any]) -> Any:
    """Left: the paper's axes (CLIP). Right, when the oracle judged: edit success against preservation."""
    import matplotlib.pyplot as plt

    judged = all("oracle" in p for curve in data["curves"].values() for p in curve)
    fig, axes = plt.subplots(1, 2 if judged else 1, figsize=(11 if judged else 5.6, 4.6), squeeze=False)
    markers = ["o", "s", "^", "D"]
    for j, (name, points) in enumerate(data["curves"].items()):
        panels = [("clip_direction", "clip_image")] + ([("edit_success", "preserved")] if judged else [])
        for ax, (xk, yk) in zip(axes[0], panels):
            x, y = [point_value(p, xk) for p in points], [point_value(p, yk) for p in points]
            ax.plot(x, y, marker=markers[j % 4], label=name, color=f"C{j}")
            for p, a, b in zip(points, x, y):
                ax.annotate(swept_value(p, name), (a, b), fontsize=7, xytext=(3, 3), textcoords="offset points")
    axes[0][0].set(xlabel="CLIP directional similarity  cos(ΔI, ΔT)", ylabel="CLIP image similarity  cos(I_in, I_out)",
                   title=f"the paper's axes (n = {data['n']})")
    axes[0][0].legend(fontsize=7)
    if judged:
        rho = data.get("agreement", {})
        axes[0][1].set(xlabel="oracle: edit success", ylabel="oracle: preserved (nothing else changed)",
                       title="the same edits, judged by the oracle\n"
                       f"Spearman: direction~edit {rho.get('direction_vs_edit_success', float('nan')):.2f}, "
                       f"image~preserved {rho.get('image_vs_preserved', float('nan')):.2f}")
    fig.tight_layout()
    return fig


def per_kind_table(data: dict[str, Any], labels: list[str], rate: str = "success") -> str:
    """Markdown: the oracle's `rate` per edit kind (rows) for the points named `labels` (columns), in %."""
    points = {p["label"]: p for curve in data["curves"].values() for p in curve}
    chosen = [points[label] for label in labels if label in points and "oracle" in points[label]]
    kinds = [k for k in chosen[0]["oracle"] if k != "targets"] if chosen else []
    lines = ["| kind | " + " | ".join(p["label"] for p in chosen) + " |", "|---|" + "---|" * len(chosen)]
    lines += [f"| {k} | " + " | ".join(f"{100 * p['oracle'][k][rate]:.0f}" for p in chosen) + " |" for k in kinds]
    return "\n".join(lines)


def table(data: dict[str, Any]) -> str:
    """A markdown table of every point: CLIP axes and, when judged, the oracle's rates in %."""
    lines = ["| curve | setting | CLIP direction | CLIP image | edit success | preserved | success |",
             "|---|---|---|---|---|---|---|"]
    for name, points in data["curves"].items():
        for p in points:
            o = p.get("oracle", {}).get("all")
            rates = " | ".join(f"{100 * o[k]:.0f}" for k in ORACLE_RATES) if o else "- | - | -"
            lines.append(f"| {name} | {p['label']} | {p['clip_direction']:.3f} | {p['clip_image']:.3f} | {rates} |")
    return "\n".join(lines)

