"""Publishing executed notebooks: the committed notebook = its source + the outputs of a toy run.

`publish_notebook(executed, source)` keeps the source notebook's cells, ids and tags exactly and
copies in the executed copy's outputs; it drops what changes from run to run and says nothing
about the notebook (papermill's bookkeeping and injected-parameters cell, execution timings,
widget state and widget ids, the Python patch version), and numbers the executed cells 1, 2, ...
So publishing the same executed copy twice writes the same bytes, and a re-run that computes the
same outputs leaves `git diff` empty. `volatile_metadata` names whatever breaks that rule in a
committed notebook (tests/test_repo.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import nbformat

from ip2p_lib.infra.errors import UserError

# What a committed notebook may keep; everything else in metadata is volatile.
NOTEBOOK_METADATA_KEPT = ("kernelspec", "language_info")
LANGUAGE_INFO_VOLATILE = ("version",)  # the machine's Python patch version, not the notebook's
CELL_METADATA_KEPT = ("tags", "jupyter", "editable", "deletable", "slideshow")
VOLATILE_MIMETYPES = ("application/vnd.jupyter.widget-view+json",)  # random model ids
INJECTED_TAG = "injected-parameters"  # papermill's cell holding the injected parameters


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def clean_outputs(outputs: list[dict[str, Any]], execution_count: int | None) -> list[dict[str, Any]]:
    """Outputs without widget ids; execute_result numbered like its cell."""
    cleaned = []
    for out in copy.deepcopy(outputs):
        if "data" in out:
            for mime in VOLATILE_MIMETYPES:
                out["data"].pop(mime, None)
            if not out["data"]:
                continue
        if out.get("output_type") == "execute_result":
            out["execution_count"] = execution_count
        cleaned.append(out)
    return cleaned


def clean_metadata(nb: dict[str, Any]) -> dict[str, Any]:
    """A copy of `nb` with only the kept notebook and cell metadata."""
    nb = copy.deepcopy(nb)
    meta = {k: nb["metadata"][k] for k in NOTEBOOK_METADATA_KEPT if k in nb["metadata"]}
    if "language_info" in meta:
        meta["language_info"] = {k: v for k, v in meta["language_info"].items() if k not in LANGUAGE_INFO_VOLATILE}
    nb["metadata"] = meta
    for cell in nb["cells"]:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in CELL_METADATA_KEPT}
    return nb


def publish_notebook(executed: Path, source: Path, dest: Path | None = None) -> Path:
    """Write `source`'s cells with `executed`'s outputs to `dest` (default: over `source`)."""
    src = json.loads(Path(source).read_text())
    run = json.loads(Path(executed).read_text())
    run_cells = [c for c in run["cells"] if INJECTED_TAG not in c.get("metadata", {}).get("tags", [])]
    if [(c["cell_type"], _source(c)) for c in run_cells] != [(c["cell_type"], _source(c)) for c in src["cells"]]:
        raise UserError(f"{executed} was executed from another version of {source}; run it again, then publish")
    nb = clean_metadata(src)
    count = 0
    for cell, ran in zip(nb["cells"], run_cells):
        if cell["cell_type"] != "code":
            continue
        number = None
        if ran.get("execution_count") is not None:
            count += 1
            number = count
        cell["execution_count"] = number
        cell["outputs"] = clean_outputs(ran.get("outputs", []), number)
    dest = Path(dest or source)
    dest.write_text(nbformat.writes(nbformat.from_dict(nb), version=4))
    return dest


def has_outputs(path: Path) -> bool:
    """Whether the notebook at `path` is committed with outputs."""
    nb = json.loads(Path(path).read_text())
    return any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code")


def volatile_metadata(nb: dict[str, Any]) -> list[str]:
    """What in `nb` would change between two publications of the same run (empty when clean)."""
    problems = [f"notebook metadata {k!r}" for k in nb["metadata"] if k not in NOTEBOOK_METADATA_KEPT]
    problems += [f"language_info {k!r}" for k in nb["metadata"].get("language_info", {}) if k in LANGUAGE_INFO_VOLATILE]
    expected = 0
    for i, cell in enumerate(nb["cells"]):
        meta = cell.get("metadata", {})
        problems += [f"cell {i} metadata {k!r}" for k in meta if k not in CELL_METADATA_KEPT]
        if INJECTED_TAG in meta.get("tags", []):
            problems.append(f"cell {i} is papermill's injected-parameters cell")
        if cell["cell_type"] != "code":
            continue
        for out in cell.get("outputs", []):
            problems += [f"cell {i} output {m}" for m in VOLATILE_MIMETYPES if m in out.get("data", {})]
        if cell.get("execution_count") is not None:
            expected += 1
            if cell["execution_count"] != expected:
                problems.append(f"cell {i} execution_count {cell['execution_count']} (expected {expected}: publish renumbers)")
    return problems
