"""The notebooks: every one runs in the smoke profile with its figures inline; the runner names a
failing cell, records measurements, publishes deterministically; nbval checks committed outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from ip2p_lib.infra import measurements
from ip2p_lib.infra.paths import data_dir, repo_root
from ip2p_lib.infra.profiles import NBVAL_IN_TESTS
from ip2p_lib.infra.publish import has_outputs, publish_notebook, volatile_metadata
from ip2p_lib.infra.runner import list_notebooks, run_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p.stem for p in list_notebooks(ROOT / "notebooks")]


def cells_missing_their_figure(nb: dict) -> list[int]:
    """Indices of code cells that save a figure but show none (no image/png output)."""
    return [
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code"
        and "savefig" in "".join(c["source"])
        and not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))
    ]


@pytest.mark.notebook
@pytest.mark.xdist_group("notebooks")
@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_notebook_runs_in_smoke_profile(stem, tmp_path):
    results = run_notebooks("smoke", only=[stem], out_dir=tmp_path / "out", figure_root=tmp_path / "fig", log=lambda _: None)
    assert len(results) == 1
    assert results[0].error is None, results[0].error
    executed = json.loads(results[0].output.read_text())
    assert any(c.get("outputs") for c in executed["cells"] if c["cell_type"] == "code")
    assert list((tmp_path / "fig" / "smoke").glob("*.png")), "the notebook saved no figure"
    assert not cells_missing_their_figure(executed), "these cells save a figure but do not show it inline"
    recorded = measurements.load(tmp_path / "fig" / "smoke" / "measurements.json")["notebooks"][stem]
    assert recorded["seconds"] > 0


def _fixture_notebook(folder: Path, stem: str, cells: list[str], tags: dict[int, list[str]] | None = None) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "toy"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {stem}"), params] + [nbformat.v4.new_code_cell(c) for c in cells]
    for i, t in (tags or {}).items():
        nb.cells[i].metadata["tags"] = t
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, path)
    return path


def test_runner_stops_at_the_first_failure_and_names_the_cell(tmp_path):
    folder = tmp_path / "notebooks"
    for stem, body in [("00_ok", "x = 1"), ("01_broken", "raise ValueError('planted failure')"), ("02_never", "y = 2")]:
        _fixture_notebook(folder, stem, [body])
    lines = []
    results = run_notebooks("smoke", out_dir=tmp_path / "out", figure_root=tmp_path / "fig", log=lines.append, notebooks_dir=folder)
    assert [r.stem for r in results] == ["00_ok", "01_broken"]
    assert results[0].error is None
    assert "01_broken" in results[1].error and "planted failure" in results[1].error
    assert "code cell" in results[1].error
    assert any("FAILED" in line for line in lines)
    recorded = measurements.load(tmp_path / "fig" / "smoke" / "measurements.json")["notebooks"]
    assert list(recorded) == ["00_ok"], "a failed notebook's numbers must not stay in measurements.json"


def test_the_repo_root_does_not_depend_on_the_working_directory(tmp_path, monkeypatch):
    # Jupyter and nbval start the kernel in notebooks/; the notebooks must still find data/.
    monkeypatch.delenv("IP2P_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert repo_root() == ROOT
    assert data_dir() == ROOT / "data"


# A key number (checked by nbval), a figure (shown inline and saved), a measurement, and a line
# that differs on every run (not checked: nbval's lax mode compares only tagged cells).
FIXTURE_CELLS = [
    "import matplotlib.pyplot as plt\nfrom ip2p_lib.infra.paths import figure_dir\nfrom ip2p_lib.infra.measurements import record",
    "answer = record('answer', 6 * 7, fmt='d', unit='widgets')\nprint(f'answer = {answer}')",
    "fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1], [0, answer])\nfig.savefig(figure_dir(profile) / '00_fixture.png'); plt.show()",
    "import time, ipywidgets; print(time.time()); ipywidgets.IntSlider(answer)",
]
CHECKED_CELL = 3  # markdown title, parameters, imports, then the answer


def _nbval(paths: list[Path], figure_root: Path) -> subprocess.CompletedProcess:
    """`pytest --nbval-lax` on `paths` in a fresh process, as `make verify-notebooks` runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "MPLBACKEND"}
    env["IP2P_FIGURE_ROOT"] = str(figure_root)
    cmd = [sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
           "-p", "no:xdist", "-q", *map(str, paths)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.notebook
@pytest.mark.xdist_group("nbval")
def test_run_record_publish_and_nbval_cycle(tmp_path):
    source = _fixture_notebook(tmp_path / "notebooks", "00_fixture", FIXTURE_CELLS, {CHECKED_CELL: ["nbval-check-output"]})
    original = source.read_text()
    fig = tmp_path / "fig"
    before = {k: os.environ.get(k) for k in ("MPLBACKEND", measurements.ENV_FILE, measurements.ENV_NOTEBOOK)}
    results = run_notebooks("toy", out_dir=tmp_path / "out", figure_root=fig, log=lambda _: None, notebooks_dir=source.parent)
    assert results[0].error is None, results[0].error
    assert {k: os.environ.get(k) for k in before} == before, "the kernel's settings must not leak into this process"
    executed = json.loads(results[0].output.read_text())
    assert not cells_missing_their_figure(executed)
    assert (fig / "toy" / "00_fixture.png").exists()

    # record() reached the runner's file, with the wall time, date and machine beside it
    entry = measurements.load(fig / "toy" / "measurements.json")["notebooks"]["00_fixture"]
    assert entry["values"]["answer"] == {"value": 42, "text": "42 widgets"}
    assert entry["seconds"] > 0 and entry["profile"] == "toy"
    assert {"platform", "cpu", "cores", "python", "torch"} <= set(entry["machine"])
    assert "| | answer | 42 widgets |" in measurements.render_table(measurements.load(fig / "toy" / "measurements.json"))

    # publishing: outputs kept, volatile metadata gone, the same bytes every time
    assert volatile_metadata(executed), "papermill's copy should carry volatile metadata (the test would prove nothing)"
    assert not has_outputs(source)
    publish_notebook(results[0].output, source)
    assert has_outputs(source)
    first = source.read_bytes()
    publish_notebook(results[0].output, source)
    assert source.read_bytes() == first
    published = json.loads(first)
    assert volatile_metadata(published) == []
    assert [c["cell_type"] for c in published["cells"]] == [c["cell_type"] for c in json.loads(original)["cells"]]
    assert [c["execution_count"] for c in published["cells"] if c["cell_type"] == "code"] == [1, 2, 3, 4, 5]
    assert "answer = 42" in "".join(published["cells"][CHECKED_CELL]["outputs"][0]["text"])
    assert not cells_missing_their_figure(published)

    # nbval re-executes the published notebook: passes though an unchecked cell changed and a
    # figure is attached; fails once the checked output is not what the code computes
    passed = _nbval([source], tmp_path / "nbval-fig")
    assert passed.returncode == 0, passed.stdout[-3000:] + passed.stderr[-2000:]
    assert (tmp_path / "nbval-fig" / "toy" / "00_fixture.png").exists(), "nbval must draw into IP2P_FIGURE_ROOT"
    assert not (tmp_path / "nbval-fig" / "toy" / "measurements.json").exists(), "record() outside the runner writes nothing"
    tampered = json.loads(first)
    tampered["cells"][CHECKED_CELL]["outputs"][0]["text"] = ["answer = 41\n"]
    source.write_text(json.dumps(tampered))
    failed = _nbval([source], tmp_path / "nbval-fig")
    assert failed.returncode != 0 and "answer = 41" in failed.stdout, failed.stdout[-3000:]


def test_publish_refuses_an_executed_copy_of_another_version(tmp_path):
    source = _fixture_notebook(tmp_path / "notebooks", "00_a", ["x = 1"])
    other = _fixture_notebook(tmp_path / "other", "00_a", ["x = 2"])
    from ip2p_lib.infra.errors import UserError

    with pytest.raises(UserError, match="another version"):
        publish_notebook(other, source)


@pytest.mark.notebook
@pytest.mark.xdist_group("nbval")
@pytest.mark.parametrize("stem", NBVAL_IN_TESTS)
def test_committed_outputs_are_what_the_code_computes(stem, tmp_path):
    path = ROOT / "notebooks" / f"{stem}.ipynb"
    if not has_outputs(path):
        pytest.skip(f"{path.name} is committed without outputs: `ip2p notebooks --profile toy --publish` adds them, then nbval checks them")
    result = _nbval([path], tmp_path / "fig")
    assert result.returncode == 0, result.stdout[-4000:]


@pytest.mark.notebook
@pytest.mark.xdist_group("nbval")
def test_cli_publishes_and_keeps_the_readme_in_step(tmp_path, monkeypatch, capsys):
    from ip2p_lib.cli import main

    monkeypatch.setenv("IP2P_ROOT", str(tmp_path))  # a repository of one fixture notebook
    monkeypatch.delenv("IP2P_FIGURE_ROOT", raising=False)
    cells = ["from ip2p_lib.infra.measurements import record", "print(record('answer', 42))"]
    source = _fixture_notebook(tmp_path / "notebooks", "00_fixture", cells)
    m = measurements
    (tmp_path / "README.md").write_text(f"# R\n{m.SUMMARY_BEGIN}\n{m.NOT_YET}\n{m.SUMMARY_END}\n{m.TABLE_BEGIN}\n{m.NOT_YET}\n{m.TABLE_END}\n")
    assert main(["notebooks", "--profile", "smoke", "--publish"]) == 2, "--publish is for the toy profile only"
    assert main(["notebooks", "--profile", "toy", "--publish", "--no-progress"]) == 0
    data = measurements.load(tmp_path / "figures" / "toy" / "measurements.json")
    readme = (tmp_path / "README.md").read_text()
    assert m.block(readme, m.TABLE_BEGIN, m.TABLE_END) == m.render_table(data)
    assert "| | answer | 42 |" in readme and m.render_summary(data) in readme
    assert has_outputs(source) and volatile_metadata(json.loads(source.read_text())) == []
    capsys.readouterr()
    assert main(["notebooks", "--measurements-table"]) == 0
    assert capsys.readouterr().out.strip() == m.render_table(data)
