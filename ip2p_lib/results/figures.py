"""The figures, by key, and how one is made and saved.

    ip2p figures --profile toy                 every figure into figures/toy/
    ip2p figures --profile toy --only fig08    one of them
    ip2p figures --profile full --data DIR     on a GPU, SD 1.5 / the authors' model / ViT-L/14

Each figure is saved as `<NAME>.png` with `<NAME>.json` beside it: every number the figure
draws, the settings, the command that made it, its wall time and the machine. Keys of a
figure's data that start with "_" hold pictures: they go into the PNG, not the JSON. The same
command with the same seed gives the same numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

import numpy as np

from ip2p_lib.results import fig04, fig08, fig10, gallery

FIGURES: dict[str, ModuleType] = {"fig04": fig04, "fig08": fig08, "fig10": fig10, "gallery": gallery}


def jsonable(value: Any) -> Any:
    """Plain JSON values from numpy scalars, arrays and tuples (json's `default`)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def saved_numbers(data: Mapping[str, Any]) -> dict[str, Any]:
    """A figure's data without its pictures (the keys starting with "_")."""
    return {k: v for k, v in data.items() if not k.startswith("_")}


def accepted(key: str, options: Mapping[str, Any], profile: str) -> dict[str, Any]:
    """The options a figure takes (its DEFAULTS name them); the others are left to other figures."""
    known = FIGURES[key].DEFAULTS[profile]
    return {k: v for k, v in options.items() if k in known and v is not None}


def make_figure(key: str, profile: str, out_dir: str | Path, command: str = "", progress: bool = True,
                **options: Any) -> dict[str, Any]:
    """Compute figure `key`, save its PNG and JSON into `out_dir`; return the data (pictures included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ip2p_lib.infra.measurements import machine_info

    module = FIGURES[key]
    start = time.perf_counter()
    data = module.compute(profile, progress=progress, **accepted(key, options, profile))
    wall = time.perf_counter() - start
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"figure": module.NAME, "title": module.TITLE, "profile": profile, "command": command,
              "wall_s": round(wall, 1), "machine": machine_info(), **saved_numbers(data)}
    (out / f"{module.NAME}.json").write_text(json.dumps(record, indent=1, default=jsonable) + "\n")
    fig = module.plot(data)
    fig.savefig(out / f"{module.NAME}.png", dpi=110)
    plt.close(fig)
    return data


def load_numbers(key: str, profile: str = "toy", folder: str | Path | None = None) -> dict[str, Any]:
    """The saved numbers of figure `key` (its JSON), from figures/<profile>/ by default."""
    from ip2p_lib.infra.errors import UserError
    from ip2p_lib.infra.paths import figure_dir

    path = Path(folder or figure_dir(profile)) / f"{FIGURES[key].NAME}.json"
    if not path.exists():
        raise UserError(f"{path} is not there yet; make it with `ip2p figures --profile {profile} --only {key}`")
    return json.loads(path.read_text())


# ---------------------------------------------------------------- the README's figures block
README_BEGIN, README_END = "<!-- figures:begin -->", "<!-- figures:end -->"


def _fig04_lines(d: dict[str, Any]) -> list[str]:
    from ip2p_lib.results.fig04 import rate_grid

    if "oracle" not in d["cells"][0]:
        return []
    s_T, s_I = d["settings"]["s_T"], d["settings"]["s_I"]
    grid = rate_grid(d, "success")
    lines = ["Oracle success (edit made, nothing else changed), % of cases per cell:", "",
             "| s_T \\ s_I | " + " | ".join(f"{v:g}" for v in s_I) + " |", "|---|" + "---|" * len(s_I)]
    lines += [f"| {t:g} | " + " | ".join(f"{100 * v:.0f}" for v in row) + " |" for t, row in zip(s_T, grid)]
    return lines


def _fig08_lines(d: dict[str, Any]) -> list[str]:
    from ip2p_lib.results.fig08 import beats, table

    lines = [table(d), ""]
    curves = list(d["curves"])
    for x, y in (("clip_direction", "clip_image"), ("edit_success", "preserved")):
        if x == "edit_success" and "oracle" not in d["curves"][curves[0]][0]:
            continue
        gains = beats(d, curves[0], curves[2], x, y)
        lines.append(f"- {y} of InstructPix2Pix (s_I sweep) minus SDEdit's at SDEdit's {x}: "
                     + (", ".join(f"{g['label']} {g['gain']:+.3f}" for g in gains) or "no SDEdit point in range"))
    if d.get("agreement"):
        a = d["agreement"]
        lines.append(f"- Spearman over all {a['points']} settings: CLIP direction ~ oracle edit success "
                     f"{a['direction_vs_edit_success']:.2f}, CLIP image ~ oracle preserved {a['image_vs_preserved']:.2f}")
    return lines


def _fig10_lines(d: dict[str, Any]) -> list[str]:
    from ip2p_lib.results.fig10 import table

    return [f"Each model: {d['training_steps']} steps of the toy recipe; at s_T {d['settings']['s_T']:g}, s_I 1.5:", "",
            table(d)]


def _gallery_lines(d: dict[str, Any]) -> list[str]:
    from ip2p_lib.results.gallery import reasons_table

    if "reasons" not in d:
        return []
    return [f"Failures and their reasons at s_T {d['settings']['s_T']:g}, s_I {d['settings']['s_I']:g} "
            f"(a failure may have several):", "", reasons_table(d)]


_README_LINES = {"fig04": _fig04_lines, "fig08": _fig08_lines, "fig10": _fig10_lines, "gallery": _gallery_lines}


def readme_block(folder: str | Path, link_prefix: str = "figures/toy") -> str:
    """The README's section of figures: each saved figure with its numbers and the command that
    made it, rendered from the JSON files in `folder` (a figure not made yet is named as such)."""
    parts = []
    for key, module in FIGURES.items():
        path = Path(folder) / f"{module.NAME}.json"
        if not path.exists():
            parts.append(f"**{module.TITLE}**: not made yet (`ip2p figures --profile toy --only {key}`).")
            continue
        d = json.loads(path.read_text())
        head = [f"**{module.TITLE}** ({d['n']} held-out cases per point; `{d['command']}`, {d['wall_s']:.0f} s)", "",
                f"![{key}]({link_prefix}/{module.NAME}.png)", ""]
        parts.append("\n".join(head + _README_LINES[key](d)))
    return "\n\n".join(parts)


def update_readme(readme: str | Path, folder: str | Path) -> None:
    """Rewrite the README's figures block from the JSON files in `folder`."""
    from ip2p_lib.infra.measurements import replace_block

    path = Path(readme)
    path.write_text(replace_block(path.read_text(), README_BEGIN, README_END, readme_block(folder)))
