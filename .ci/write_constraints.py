"""Write constraints.txt: the installed version of every direct dependency of pyproject.toml.

`make venv` installs with `pip install -c constraints.txt -e ".[dev]"`, so a fresh clone gets
the versions of the last green run. Run this with the virtual environment's Python after a
green `make test` on newer versions (see README, "Start here"):

    .venv/bin/python .ci/write_constraints.py
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
HEADER = """\
# The exact version of every direct dependency (pyproject.toml's dependencies and dev extra)
# that the tests last passed with; `make venv` installs with `pip install -c` this file.
# pyproject.toml keeps ranges. Refresh: see README ("Start here"); written by .ci/write_constraints.py.
"""


def main() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    names = sorted({Requirement(r).name for r in requirements}, key=str.lower)
    # the public version: torch 2.14.1+cu130 is pinned as 2.14.1, which any local build satisfies
    pins = [f"{name}=={Version(importlib.metadata.version(name)).public}" for name in names]
    (ROOT / "constraints.txt").write_text(HEADER + "\n".join(pins) + "\n")
    print(f"wrote {len(pins)} pins to {ROOT / 'constraints.txt'}")


if __name__ == "__main__":
    main()
