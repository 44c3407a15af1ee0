"""`record` writes only under the runner; the table and README blocks render what was recorded."""

import json

import numpy as np
import pytest

from ip2p_lib.infra import measurements as m


@pytest.fixture
def under_runner(tmp_path, monkeypatch):
    path = tmp_path / "toy" / m.FILE_NAME
    monkeypatch.setenv(m.ENV_FILE, str(path))
    monkeypatch.setenv(m.ENV_NOTEBOOK, "04_unet_surgery")
    return path


def test_record_outside_the_runner_writes_nothing_and_returns_the_value(tmp_path, monkeypatch):
    monkeypatch.delenv(m.ENV_FILE, raising=False)
    monkeypatch.setenv("IP2P_FIGURE_ROOT", str(tmp_path))  # where a write would land if it wrote
    monkeypatch.chdir(tmp_path)
    assert m.record("x", 1.5) == 1.5
    assert list(tmp_path.rglob("*")) == []


def test_record_under_the_runner(under_runner):
    m.begin_notebook(under_runner, "04_unet_surgery")
    assert m.record("max difference", np.float32(0.0), fmt=".1e") == 0.0
    m.record("accuracy", 0.9364, fmt=".1%")
    m.record("throughput", 99.84, unit="triples/s")
    m.record("before fine-tuning", float("nan"))
    m.record("accuracy", 0.5, fmt=".1%")  # recorded again: replaced in place
    m.record("other notebook", 3, notebook="06_dual_guidance")
    m.end_notebook(under_runner, "04_unet_surgery", 34.56, "toy")
    data = json.loads(under_runner.read_text())
    values = data["notebooks"]["04_unet_surgery"]["values"]
    assert list(values) == ["max difference", "accuracy", "throughput", "before fine-tuning"]
    assert values["max difference"] == {"value": 0.0, "text": "0.0e+00"}
    assert values["accuracy"]["text"] == "50.0%"
    assert values["throughput"]["text"] == "99.8 triples/s"
    assert values["before fine-tuning"] == {"value": None, "text": "n/a"}
    assert data["notebooks"]["04_unet_surgery"]["seconds"] == 34.6
    assert data["notebooks"]["06_dual_guidance"]["values"]["other notebook"]["value"] == 3
    with pytest.raises(TypeError):
        m.record("a list", [1, 2])


def test_begin_forgets_the_previous_run(under_runner):
    m.record("stale", 1)
    m.begin_notebook(under_runner, "04_unet_surgery")
    m.end_notebook(under_runner, "04_unet_surgery", 1.0, "toy")
    assert m.load(under_runner)["notebooks"]["04_unet_surgery"]["values"] == {}


def _data(**seconds):
    machine = {"platform": "Linux x86_64", "cpu": "CPU", "cores": 2, "python": "3.11.7", "torch": "2.4.0"}
    return {"notebooks": {
        stem: {"date": "2026-01-02", "machine": machine, "profile": "toy", "seconds": s,
               "values": {"acc | top": {"value": 0.9, "text": "90.0%"}} if stem.startswith("00") else {}}
        for stem, s in seconds.items()
    }}


def test_table_and_summary():
    data = _data(**{"00_overview": 42.0, "01_instructions_and_captions": 620.0})
    table = m.render_table(data)
    assert table.splitlines()[:5] == [
        "| notebook | measured | value |",
        "|---|---|---|",
        "| `00_overview` | wall time | 42 s |",
        "| | acc \\| top | 90.0% |",
        "| `01_instructions_and_captions` | wall time | 10.3 min |",
    ]
    assert "2026-01-02: Linux x86_64, CPU, 2 CPU cores, Python 3.11.7, torch 2.4.0" in table
    assert m.render_summary(data) == (
        "The 2 notebooks took 11.0 min in all (00: 42 s, 01: 10.3 min) on "
        "Linux x86_64, CPU, 2 CPU cores, Python 3.11.7, torch 2.4.0, 2026-01-02."
    )
    assert m.render_table({"notebooks": {}}) == m.NOT_YET


def test_update_readme_replaces_only_the_blocks():
    readme = f"# T\n{m.SUMMARY_BEGIN}\nold\n{m.SUMMARY_END}\nmiddle\n{m.TABLE_BEGIN}\nold table\n{m.TABLE_END}\nend\n"
    data = _data(**{"00_overview": 42.0})
    new = m.update_readme(readme, data)
    assert m.block(new, m.TABLE_BEGIN, m.TABLE_END) == m.render_table(data)
    assert m.block(new, m.SUMMARY_BEGIN, m.SUMMARY_END) == m.render_summary(data)
    assert new.startswith("# T\n") and "\nmiddle\n" in new and new.endswith(f"{m.TABLE_END}\nend\n")
    assert m.update_readme(new, data) == new
    with pytest.raises(ValueError, match="markers"):
        m.update_readme("no markers", data)
