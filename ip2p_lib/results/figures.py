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
