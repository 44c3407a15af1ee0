"""Figure 10: ablations. What does each part of the data recipe buy?

Each ablation is a small toy training (the toy recipe of notebook 05, 3,000 steps, seed 0) on a
different training set, evaluated on the same held-out cases over s_I at s_T = 7.5, on Figure 8's
axes and on the oracle's:
- dataset size: 10%, 30% and 100% of the CLIP-filtered caption pairs (the paper: 1%, 10%, 100%);
- CLIP filter: every generated sample (off) against the four-threshold filter (on);
- beyond the paper, where generated data loses: generated pairs filtered by CLIP (the paper's
  recipe), the same pairs filtered by the oracle (a perfect filter), and oracle pairs of the same
  caption pairs (a perfect generator). The gap between the first two is the filter's share of
  the loss, between the last two the generator's.

The trainings are commands (`ABLATIONS[*].commands`, data/toy/DATASETS.md); `compute` only
evaluates the models they leave, and names the command of any that is missing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.paths import repo_root
from ip2p_lib.results.common import load_profile_editor, load_profile_scorer, profile_cases, sizes
from ip2p_lib.results.sweep import ORACLE_RATES, ip2p_settings, point_value, run_sweep

NAME = "fig10_ablations"
TITLE = "Figure 10: ablations of the training data (dataset size, CLIP filter, filter against generator)"
STEPS = 3000
GEN = "data/generated/toy"
TRAIN = (f"ip2p train --init data/toy/models/sd --recipe toy --steps {STEPS} --snapshot-every 1000 --threads 1 "
         "--data {data} --out {out} --run-dir {out}.run")


@dataclass(frozen=True)
class Ablation:
    """One trained model of the ablation: its name, the folder evaluated (an InstructPix2Pix
    folder, or a bare UNet snapshot with toy SD's other parts), its training set, and the
    commands that make both."""

    name: str
    model: str
    data: str
    commands: tuple[str, ...]


def _made_by(data: str, out: str, *make_data: str) -> tuple[str, ...]:
    return (*make_data, TRAIN.format(data=data, out=out))


_A, _R = f"{GEN}/ablations", f"{GEN}/runs/ablations"
_GENERATED = Ablation("generated, CLIP filter (100%)", f"{GEN}/runs/ip2p-generated.run/snapshots/unet-003000",
                      f"{GEN}/train", ("the generated run of data/toy/DATASETS.md (its 3,000-step snapshot)",))
ABLATIONS: dict[str, Ablation] = {a.name: a for a in (
    Ablation("10% of the caption pairs", f"{_R}/size-10", f"{_A}/size-10", _made_by(
        f"{_A}/size-10", f"{_R}/size-10", f"ip2p pairs subset --data {GEN}/train --fraction 0.1 --out {_A}/size-10")),
    Ablation("30% of the caption pairs", f"{_R}/size-30", f"{_A}/size-30", _made_by(
        f"{_A}/size-30", f"{_R}/size-30", f"ip2p pairs subset --data {GEN}/train --fraction 0.3 --out {_A}/size-30")),
    _GENERATED,
    Ablation("generated, no filter", f"{_R}/no-filter", f"{_A}/no-filter", _made_by(
        f"{_A}/no-filter", f"{_R}/no-filter",
        f"ip2p pairs filter --data {GEN}/pairs --out {_A}/no-filter --by none --keep-per-pair 8")),
    Ablation("generated, oracle filter", f"{_R}/oracle-filter", f"{_A}/oracle-filter", _made_by(
        f"{_A}/oracle-filter", f"{_R}/oracle-filter",
        f"ip2p pairs filter --data {GEN}/pairs --out {_A}/oracle-filter --by oracle")),
    Ablation("oracle pairs", f"{GEN}/runs/ip2p-oracle.run/snapshots/unet-003000", f"{GEN}/oracle-matched",
             ("the oracle run of data/toy/DATASETS.md (its 3,000-step snapshot)",)),
)}
GROUPS: dict[str, tuple[str, ...]] = {
    "dataset size": ("10% of the caption pairs", "30% of the caption pairs", _GENERATED.name),
    "CLIP filter": ("generated, no filter", _GENERATED.name),
    "filter or generator?": (_GENERATED.name, "generated, oracle filter", "oracle pairs"),
}
S_I = (1.0, 1.5, 2.2)
CACHE = f"{GEN}/figure-cache/fig10"  # one JSON per evaluated model: a killed run resumes with the next model
DEFAULTS: dict[str, dict[str, Any]] = {
    "toy": {"n": 300, "s_T": 7.5, "s_I": S_I, "steps": 20, "seed": 0, "rows": 64, "models": None, "cache": CACHE},
    "smoke": {"n": 5, "s_T": 7.5, "s_I": (1.5,), "steps": 4, "seed": 0, "rows": 64, "models": None, "cache": None},
    "full": {"n": 0, "s_T": 7.5, "s_I": S_I, "steps": 100, "seed": 0, "rows": 6, "models": None, "cache": None},
}


def missing(ablations: dict[str, Ablation]) -> list[Ablation]:
    """The ablations whose model folder is not there yet."""
    return [a for a in ablations.values() if not (repo_root() / a.model / "config.json").exists()
            and not (repo_root() / a.model / "model_index.json").exists()]


def compute(profile: str = "toy", progress: bool = True, **overrides: Any) -> dict[str, Any]:
    """Each ablation model over s_I on the same held-out cases (no scene any of their training sets
    describes): CLIP axes and oracle rates per point."""
    from ip2p_lib.training.evaluate import training_captions

    cfg = sizes(DEFAULTS, profile, overrides)
    if profile == "full":
        raise UserError("Figure 10 is measured in the toy world only: its ablations are trainings of the toy model "
                        "(see ip2p_lib/results/fig10.py); run `ip2p figures --profile toy --only fig10`")
    ablations = cfg["models"] or ABLATIONS
    absent = missing(ablations)
    if absent:
        steps = "\n".join(f"  {a.name}:\n" + "\n".join(f"    {c}" for c in a.commands) for a in absent)
        raise UserError(f"Figure 10 needs {len(absent)} trained ablation model(s) that are not there yet; make them "
                        f"with (each resumable, about 25 minutes on one core):\n{steps}")
    root = repo_root()
    exclude: set[str] = set()
    for a in ablations.values():
        exclude |= training_captions(root / a.data)
    cases = profile_cases(profile, cfg["n"], seed=cfg["seed"], exclude_captions=exclude)
    settings = ip2p_settings(cfg["s_T"], cfg["s_I"])
    scorer = load_profile_scorer(profile)
    curves = {}
    for a in ablations.values():
        cached = cache_file(cfg, a, cases)
        if cached is not None and cached.exists():
            curves[a.name] = json.loads(cached.read_text())
            continue
        editor = load_profile_editor(profile, str(root / a.model))
        curves[a.name], _ = run_sweep(cases, settings, editor=editor, scorer=scorer, steps=cfg["steps"],
                                      seed=cfg["seed"], rows=cfg["rows"], progress=progress, desc=a.name)
        curves[a.name][0]["training_examples"] = training_examples(root / a.data)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(curves[a.name]))
    groups = {g: [m for m in names if m in curves] for g, names in GROUPS.items()}
    if not any(groups.values()):
        groups = {"models": list(curves)}
    return {"settings": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k not in ("models", "cache")},
            "n": len(cases), "training_steps": STEPS, "curves": curves, "groups": groups,
            "models": {a.name: {"model": a.model, "data": a.data, "commands": list(a.commands)}
                       for a in ablations.values()}}


def cache_file(cfg: dict[str, Any], ablation: Ablation, cases: list[Any]) -> Path | None:
    """Where one model's points are kept between runs: named by everything they depend on (the
    model's folder and the time its weights were written, the cases and the settings)."""
    if not cfg.get("cache"):
        return None
    model = repo_root() / ablation.model
    weights = sorted(model.rglob("*.safetensors"))
    key = json.dumps([ablation.model, [w.stat().st_mtime_ns for w in weights], [c.instruction + c.caption for c in cases],
                      {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k not in ("models", "cache", "rows")}])
    return repo_root() / cfg["cache"] / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def training_examples(data: Path) -> int:
    """Samples in a training set's train split (what the model saw)."""
    from ip2p_lib.dataset.training import open_source, split_range

    source = open_source(data)
    lo, hi = split_range(len(source.groups), "train")
    return sum(len(g) for g in source.groups[lo:hi])


def at_default(data: dict[str, Any], s_I: float = 1.5) -> dict[str, dict[str, Any]]:
    """Each model's point at s_I (the paper's 1.5), for the table."""
    return {name: next(p for p in points if abs(p["s_I"] - s_I) < 1e-9) for name, points in data["curves"].items()
            if any(abs(p["s_I"] - s_I) < 1e-9 for p in points)}


def binomial_se(rate: float, n: int) -> float:
    """The standard error of a rate measured on n cases."""
    return (rate * (1 - rate) / max(n, 1)) ** 0.5


def table(data: dict[str, Any], s_I: float = 1.5) -> str:
    """Markdown: each model at s_T 7.5, s_I `s_I`: training examples, CLIP axes, oracle rates in %."""
    lines = ["| model | train examples | CLIP direction | CLIP image | edit success | preserved | success |",
             "|---|---|---|---|---|---|---|"]
    for name, p in at_default(data, s_I).items():
        o = p["oracle"]["all"]
        rates = " | ".join(f"{100 * o[k]:.0f} ± {100 * binomial_se(o[k], o['n']):.0f}"
                           for k in ORACLE_RATES)
        lines.append(f"| {name} | {data['curves'][name][0].get('training_examples', '')} | "
                     f"{p['clip_direction']:.3f} ± {p['clip_direction_sem']:.3f} | "
                     f"{p['clip_image']:.3f} ± {p['clip_image_sem']:.3f} | {rates} |")
    lines.append("")
    lines.append("± one standard error (rates: binomial, over the cases)")
    return "\n".join(lines)


def plot(data: dict[str, Any]) -> Any:
    """One column per ablation group: the paper's CLIP axes (top) and the oracle's (bottom), each
    model a curve over s_I."""
    import matplotlib.pyplot as plt

    groups = {g: names for g, names in data["groups"].items() if names}
    fig, axes = plt.subplots(2, len(groups), figsize=(4.4 * len(groups), 8), squeeze=False)
    for col, (group, names) in enumerate(groups.items()):
        for j, name in enumerate(names):
            points = data["curves"][name]
            for row, (xk, yk) in enumerate((("clip_direction", "clip_image"), ("edit_success", "preserved"))):
                x, y = [point_value(p, xk) for p in points], [point_value(p, yk) for p in points]
                axes[row][col].plot(x, y, marker="o", color=f"C{j}", label=name)
                for p, a, b in zip(points, x, y):
                    axes[row][col].annotate(f"{p['s_I']:g}", (a, b), fontsize=6, xytext=(2, 2), textcoords="offset points")
        axes[0][col].set(title=group, xlabel="CLIP directional similarity", ylabel="CLIP image similarity")
        axes[1][col].set(xlabel="oracle: edit success", ylabel="oracle: preserved")
        axes[0][col].legend(fontsize=7)
    fig.suptitle(f"toy ablations, {data['training_steps']} training steps each; points: s_I at s_T "
                 f"{data['settings']['s_T']:g} (n = {data['n']})", fontsize=9)
    fig.tight_layout()
    return fig
