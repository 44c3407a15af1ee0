"""Repository conventions: environment files in step, notebooks without volatile metadata, CI runs
the README's command, the README quotes the measurements of the committed run."""

import copy
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from ip2p_lib.infra import measurements
from ip2p_lib.infra.profiles import NOTEBOOK_PARAMS, PROFILES
from ip2p_lib.infra.publish import volatile_metadata
from ip2p_lib.infra.runner import list_notebooks

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


def test_notebooks_follow_the_conventions():
    # Committed outputs are welcome (a student reads the toy run on the web); what changes from
    # run to run without saying anything about the notebook is not (see ip2p_lib/infra/publish.py).
    notebooks = list_notebooks(ROOT / "notebooks")
    assert notebooks, "no notebooks found"
    for path in notebooks:
        nb = json.loads(path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", path
        volatile = volatile_metadata(nb)
        assert not volatile, f"{path.name}: {volatile[:5]}; publish it with `ip2p notebooks --profile toy --publish`"
        errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"] if o["output_type"] == "error"]
        assert not errors, f"{path.name} is committed with an error output"
        source = _parameters_source(nb)
        assert re.search(r"^profile\s*=\s*\"toy\"", source, re.M), f"{path.name}: default profile must be toy"


def test_the_convention_check_catches_volatile_metadata():
    clean = {"metadata": {"kernelspec": {"name": "python3"}, "language_info": {"name": "python"}},
             "cells": [{"cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": 1, "outputs": []},
                       {"cell_type": "code", "metadata": {}, "execution_count": 2, "outputs": []}]}
    assert volatile_metadata(clean) == []
    for change in (
        lambda nb: nb["metadata"].update(papermill={"duration": 1.0}),
        lambda nb: nb["metadata"].update(widgets={"state": {}}),
        lambda nb: nb["metadata"]["language_info"].update(version="3.11.7"),
        lambda nb: nb["cells"][1]["metadata"].update(execution={"iopub.status.idle": "2026-01-01T00:00:00Z"}),
        lambda nb: nb["cells"][1]["metadata"].update(papermill={"duration": 1.0}),
        lambda nb: nb["cells"][1]["metadata"].update(tags=["injected-parameters"]),
        lambda nb: nb["cells"][1].update(execution_count=7),
        lambda nb: nb["cells"][1]["outputs"].append(
            {"output_type": "display_data", "data": {"application/vnd.jupyter.widget-view+json": {}}, "metadata": {}}),
    ):
        nb = copy.deepcopy(clean)
        change(nb)
        assert volatile_metadata(nb), nb


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


def test_readme_quotes_the_measurements_of_the_committed_toy_run():
    readme = (ROOT / "README.md").read_text()
    table = measurements.block(readme, measurements.TABLE_BEGIN, measurements.TABLE_END)
    summary = measurements.block(readme, measurements.SUMMARY_BEGIN, measurements.SUMMARY_END)
    path = ROOT / "figures" / "toy" / measurements.FILE_NAME
    if not path.exists():
        assert table == summary == measurements.NOT_YET
        pytest.skip("figures/toy/measurements.json is not committed yet (`ip2p notebooks --profile toy` writes it)")
    data = measurements.load(path)
    hint = "run `ip2p notebooks --update-readme`"
    assert table == measurements.render_table(data), f"README.md's measurement table is not the committed run's: {hint}"
    assert summary == measurements.render_summary(data), f"README.md's notebook times are not the committed run's: {hint}"


# ---------------------------------------------------------------- the layout follows the paper
# Imports flow one way along the paper (DESIGN.md, "Layout"): a package may import packages of a
# lower or equal rank, never a higher one; `infra` imports no paper package; nothing imports in a circle.
PACKAGE_RANK = {
    "infra": 0, "toyworld": 1, "text": 2, "p2p": 3, "filtering": 4, "dataset": 5,
    "surgery": 6, "guidance": 6, "training": 7, "editor": 8, "results": 9, "cli": 10, "__init__": 10,
}


def _library_imports() -> dict[str, set[str]]:
    """module name -> the ip2p_lib modules it imports (top level and inside functions alike)."""
    import ast

    modules = {}
    for path in sorted((ROOT / "ip2p_lib").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ip2p_lib"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("ip2p_lib")]
            else:
                continue
            found |= {t for t in targets if t in modules and t != name}
        graph[name] = found
    return graph


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_module_belongs_to_a_ranked_package():
    unknown = {_package(m) for m in _library_imports()} - set(PACKAGE_RANK)
    assert not unknown, f"add {unknown} to PACKAGE_RANK (and to DESIGN.md's layout)"


def test_imports_flow_one_way_along_the_paper():
    backward = [f"{m} imports {t}" for m, targets in _library_imports().items() for t in targets
                if PACKAGE_RANK[_package(t)] > PACKAGE_RANK[_package(m)]]
    assert not backward, "backward imports:\n" + "\n".join(backward)


def test_no_import_circles():
    graph = _library_imports()
    # a package's __init__ re-exporting its own modules is not a circle: drop parent -> own child edges
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


# ---------------------------------------------------------------- constraints.txt: the exact versions of the last green run


def _direct_requirements():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def _constraint_pins(text: str) -> dict[str, list]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, list] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pin = Requirement(line)
            pins.setdefault(canonicalize_name(pin.name), []).append(pin)
    return pins


def _pin_problems(requirements, pins) -> list[str]:
    """What is wrong with `pins` for `requirements`: a missing, doubled, inexact or out-of-range
    pin, or a pin of something that is not a direct dependency."""
    from packaging.utils import canonicalize_name

    problems = []
    for req in requirements:
        found = pins.get(canonicalize_name(req.name), [])
        if len(found) != 1:
            problems.append(f"{req.name}: {len(found)} pins (want exactly one)")
            continue
        spec = list(found[0].specifier)
        if len(spec) != 1 or spec[0].operator != "==" or "*" in spec[0].version:
            problems.append(f"{found[0]}: not an exact pin (==X.Y.Z)")
        elif not req.specifier.contains(spec[0].version, prereleases=True):
            problems.append(f"{found[0]}: outside pyproject's range {req}")
    extra = set(pins) - {canonicalize_name(r.name) for r in requirements}
    problems += [f"{name}: pinned but not a direct dependency" for name in sorted(extra)]
    return problems


def test_constraints_pin_every_direct_dependency_exactly_within_its_range():
    requirements = _direct_requirements()
    assert len(requirements) > 20  # dependencies and the dev extra
    assert _pin_problems(requirements, _constraint_pins((ROOT / "constraints.txt").read_text())) == []


def test_the_pin_check_finds_each_kind_of_mistake():
    from packaging.requirements import Requirement

    requirements = [Requirement("torch>=2.4"), Requirement("open_clip_torch>=2.26"), Requirement("tqdm>=4.66")]
    assert _pin_problems(requirements, _constraint_pins("torch==2.14.1\nopen-clip-torch==3.3.0  # ok\ntqdm==4.70.1")) == []
    bad = _constraint_pins("torch==2.3.0\ntorch==2.14.1\nopen_clip_torch>=3.0\nnumpy==2.4.6")
    assert _pin_problems(requirements, bad) == ["torch: 2 pins (want exactly one)",
                                                "open_clip_torch>=3.0: not an exact pin (==X.Y.Z)",
                                                "tqdm: 0 pins (want exactly one)",
                                                "numpy: pinned but not a direct dependency"]
    assert _pin_problems(requirements[:1], _constraint_pins("torch==2.3.0")) == [
        "torch==2.3.0: outside pyproject's range torch>=2.4"]


def test_make_venv_installs_with_the_constraints_and_is_redone_when_they_change():
    makefile = (ROOT / "Makefile").read_text()
    stamp_rule = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.M)
    assert stamp_rule and "constraints.txt" in stamp_rule.group(1).split()
    assert re.search(r"pip install -c constraints\.txt -e \"\.\[dev\]\"", makefile)
