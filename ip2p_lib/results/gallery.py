"""Galleries: edits of each kind with the oracle's verdict, and failure cases with why they fail.

A failure's reasons are read off the oracle's judgements of the input and the output:
- "no object": the judge finds no object in the output;
- "edit not made (color: red, wanted blue)": the edited attribute does not read as the target;
- "color changed (red -> green)": an attribute the instruction did not mention changed;
- "moved 0.21": the object moved by more than the judge's tolerance (a fraction of the image).
Counting the reasons over all failures says what the model gets wrong most often.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from typing import Any

import numpy as np

from ip2p_lib.results.common import load_profile_scorer, sizes
from ip2p_lib.results.metrics import judgeable
from ip2p_lib.results.sweep import ip2p_settings, profile_sweep

NAME = "gallery"
TITLE = "Galleries: edits per kind with the oracle's verdict, and failure cases with their reasons"
DEFAULTS: dict[str, dict[str, Any]] = {
    "toy": {"n": 100, "per_kind": 4, "failures": 8, "s_T": 7.5, "s_I": 1.5, "steps": 20, "seed": 0, "rows": 64,
            "model": None, "data": None},
    "smoke": {"n": 10, "per_kind": 1, "failures": 2, "s_T": 7.5, "s_I": 1.5, "steps": 4, "seed": 0, "rows": 64,
              "model": None, "data": None},
    "full": {"n": 24, "per_kind": 8, "failures": 4, "s_T": 7.5, "s_I": 1.5, "steps": 100, "seed": 0, "rows": 6,
             "model": None, "data": None},
}


def reasons(case: Any, output: np.ndarray) -> list[str]:
    """Why the oracle does not call this edit a success (empty when it does)."""
    from ip2p_lib.toyworld import judge
    from ip2p_lib.toyworld.edits import EDITED_ATTRIBUTES
    from ip2p_lib.toyworld.oracle import POSITION_TOLERANCE, score_judgements

    before, after = judge(case.image), judge(output)
    if not after.found:
        return ["no object"]
    score = score_judgements(before, after, case.edit)
    out: list[str] = []
    seen = after.attributes()
    if not score.changed:
        wrong = [f"{k}: {seen[k]}, wanted {v}" for k, v in case.edit.target_attributes().items() if seen[k] != v]
        out.append(f"edit not made ({'; '.join(wrong)})")
    edited = EDITED_ATTRIBUTES[case.kind]
    was = before.attributes()
    out += [f"{k} changed ({was[k]} -> {seen[k]})" for k in ("shape", "color", "background", "size")
            if k not in edited and seen[k] != was[k]]
    if case.kind != "move" and before.found:
        drift = max(abs(after.u - before.u), abs(after.v - before.v))
        if drift > POSITION_TOLERANCE:
            out.append(f"moved {drift:.2f}")
    return out


def category(reason: str) -> str:
    """A reason without its particulars: "edit not made", "color changed", "moved", "no object"."""
    return reason.split(" (")[0].split(" 0")[0].split(" 1")[0]


def compute(profile: str = "toy", progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """The model at one guidance setting on `n` cases: `per_kind` of each kind with their verdicts,
    `failures` failed ones (kinds in turn) with their reasons, and the reasons counted per kind.
    Without an oracle (full profile): the first cases, and the lowest CLIP directional similarity
    as "failures"."""
    cfg = sizes(DEFAULTS, profile, overrides)
    cases, points, outputs = profile_sweep(profile, cfg, ip2p_settings(cfg["s_T"], cfg["s_I"]), progress, "gallery")
    outputs = outputs[0]
    data: dict[str, Any] = {"settings": {k: v for k, v in cfg.items()}, "n": len(cases), "point": points[0]}
    if judgeable(cases):
        why = [reasons(c, o) for c, o in zip(cases, outputs)]
        kinds = list(dict.fromkeys(c.kind for c in cases))
        shown = [i for k in kinds for i in [j for j, c in enumerate(cases) if c.kind == k][:cfg["per_kind"]]]
        failed = {k: [i for i, c in enumerate(cases) if c.kind == k and why[i]] for k in kinds}
        picks: list[int] = []
        while len(picks) < cfg["failures"] and any(failed.values()):
            for k in kinds:
                if failed[k] and len(picks) < cfg["failures"]:
                    picks.append(failed[k].pop(0))
        data["reasons"] = {k: dict(Counter(category(r) for i, c in enumerate(cases) if c.kind == k for r in why[i]))
                           for k in kinds}
        data["failed"] = {k: sum(1 for i, c in enumerate(cases) if c.kind == k and why[i]) for k in kinds}
        data["per_kind_n"] = {k: sum(1 for c in cases if c.kind == k) for k in kinds}
    else:
        from ip2p_lib.results.metrics import clip_edit_scores

        direction = clip_edit_scores(load_profile_scorer(profile), cases, outputs)["clip_direction"]
        why = [[f"CLIP direction {d:.2f}"] for d in direction]
        shown = list(range(min(len(cases), cfg["per_kind"])))
        picks = [int(i) for i in np.argsort(direction)[:cfg["failures"]]]
    data["shown"] = [{"instruction": cases[i].instruction, "kind": cases[i].kind, "reasons": why[i]} for i in shown]
    data["failures"] = [{"instruction": cases[i].instruction, "kind": cases[i].kind, "reasons": why[i]} for i in picks]
    data["_shown"] = np.stack([np.stack([cases[i].image, outputs[i]]) for i in shown])
    data["_failures"] = np.stack([np.stack([cases[i].image, outputs[i]]) for i in picks]) if picks else None
    return data


def reasons_table(data: dict[str, Any]) -> str:
    """Markdown: per kind, failures out of cases and the reasons counted (a failure may have several)."""
    cats = sorted({c for counts in data.get("reasons", {}).values() for c in counts})
    lines = ["| kind | failed | " + " | ".join(cats) + " |", "|---|---|" + "---|" * len(cats)]
    for kind, counts in data.get("reasons", {}).items():
        lines.append(f"| {kind} | {data['failed'][kind]} / {data['per_kind_n'][kind]} | "
                     + " | ".join(str(counts.get(c, 0)) for c in cats) + " |")
    return "\n".join(lines)


def plot(data: dict[str, Any]) -> Any:
    """Pairs (input | output) with their verdicts: the gallery on top, the failures below."""
    import matplotlib.pyplot as plt

    blocks = [("gallery", data["shown"], data["_shown"])]
    if data.get("_failures") is not None:
        blocks.append(("failures", data["failures"], data["_failures"]))
    per_row = 4
    rows = sum(-(-len(items) // per_row) for _, items, _ in blocks)
    fig, axes = plt.subplots(rows, 2 * per_row, figsize=(2 * per_row * 1.35, rows * 2.1), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    r = 0
    for title, items, pictures in blocks:
        for j, (item, pair) in enumerate(zip(items, pictures)):
            row, col = r + j // per_row, 2 * (j % per_row)
            axes[row][col].imshow(pair[0]), axes[row][col + 1].imshow(pair[1])
            verdict = "success" if not item["reasons"] else "; ".join(item["reasons"])
            axes[row][col].set_title(textwrap.fill(f"{item['kind']}: \"{item['instruction']}\"", 30), fontsize=6,
                                     loc="left")
            axes[row][col + 1].text(0.5, -0.04, textwrap.fill(verdict, 26), transform=axes[row][col + 1].transAxes,
                                    ha="center", va="top", fontsize=5.5, color="green" if not item["reasons"] else "red")
        axes[r][0].text(-0.15, 0.5, title, transform=axes[r][0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=9, weight="bold")
        r += -(-len(items) // per_row)
    fig.tight_layout()
    return fig
