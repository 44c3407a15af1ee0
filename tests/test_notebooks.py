"""Every notebook runs end to end in the smoke profile; the runner names a failing cell."""

import json
from pathlib import Path

import nbformat
import pytest

from ip2p_lib.infra.runner import list_notebooks, run_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = [p.stem for p in list_notebooks(ROOT / "notebooks")]


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


def test_runner_stops_at_the_first_failure_and_names_the_cell(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    for stem, body in [("00_ok", "x = 1"), ("01_broken", "raise ValueError('planted failure')"), ("02_never", "y = 2")]:
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell('profile = "toy"')
        params.metadata["tags"] = ["parameters"]
        nb.cells = [params, nbformat.v4.new_code_cell(body)]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{stem}.ipynb")
    lines = []
    results = run_notebooks("smoke", out_dir=tmp_path / "out", figure_root=tmp_path / "fig", log=lines.append, notebooks_dir=folder)
    assert [r.stem for r in results] == ["00_ok", "01_broken"]
    assert results[0].error is None
    assert "01_broken" in results[1].error and "planted failure" in results[1].error
    assert "code cell" in results[1].error
    assert any("FAILED" in line for line in lines)
