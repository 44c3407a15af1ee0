"""Repository conventions: environment files in step, notebooks stripped, CI runs the README's command."""

import json
import re
import tomllib
from pathlib import Path

import yaml

from ip2p_lib.profiles import NOTEBOOK_PARAMS, PROFILES
from ip2p_lib.runner import list_notebooks

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_states_the_same_dependencies_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(_name(r) for r in pip_reqs) == sorted(_name(r) for r in conda_pip)
    # Same version bounds too, not only the same names.
    assert {_name(r): r.replace(" ", "") for r in pip_reqs} == {_name(r): r.replace(" ", "") for r in conda_pip}


def test_no_pin_forces_another_torch_build():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        if _name(dep) in ("torch", "torchvision"):
            assert "==" not in dep and "+" not in dep, dep


def _parameters_source(nb: dict) -> str:
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code_cells[0] is cells[0], "the parameters cell must be the first code cell"
    return "".join(cells[0]["source"])


def test_notebooks_are_stripped_and_follow_the_conventions():
    notebooks = list_notebooks(ROOT / "notebooks")
    assert notebooks, "no notebooks found"
    for path in notebooks:
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name} has outputs"
        source = _parameters_source(nb)
        assert re.search(r"^profile\s*=\s*\"toy\"", source, re.M), f"{path.name}: default profile must be toy"


def test_profile_overrides_name_real_parameters():
    stems = {p.stem for p in list_notebooks(ROOT / "notebooks")}
    for stem, by_profile in NOTEBOOK_PARAMS.items():
        assert stem in stems, f"NOTEBOOK_PARAMS names a missing notebook {stem}"
        assert set(by_profile) <= set(PROFILES)
        source = _parameters_source(json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text()))
        for profile, overrides in by_profile.items():
            for key in overrides:
                assert re.search(rf"^{key}\s*=", source, re.M), f"{stem}: {profile} overrides unknown {key}"


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "make notebooks" in readme
    assert re.search(r"^make test$", ci, re.M)
