"""Where the repository's data, figures and run outputs live."""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The project root: `$IP2P_ROOT` if set, else the folder holding `ip2p_lib/` (editable
    install), else the current directory.

    It does not depend on the current directory in a checkout, so a notebook opened in Jupyter
    (whose kernel starts in `notebooks/`) and one run by papermill find the same data."""
    env = os.environ.get("IP2P_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2]  # ip2p_lib/infra/paths.py -> the repository
    if (here / "pyproject.toml").exists():
        return here
    return Path.cwd().resolve()


def figure_dir(profile: str) -> Path:
    """`figures/<profile>/`, created if needed: every notebook writes its figures here.

    `$IP2P_FIGURE_ROOT` replaces `figures/` (the tests point it at a temporary folder)."""
    root = os.environ.get("IP2P_FIGURE_ROOT")
    path = (Path(root) if root else repo_root() / "figures") / profile
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """`data/`: seed examples, the toy models and small fixtures that ship with the repo."""
    return repo_root() / "data"


def shown(path: str | Path) -> Path:
    """`path` relative to the repository when it lies inside it (what notebooks and logs print:
    no machine's absolute folders in committed outputs), else as it is."""
    path = Path(path)
    try:
        return path.resolve().relative_to(repo_root())
    except ValueError:
        return path
