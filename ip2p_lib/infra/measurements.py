"""The numbers a notebook run measured, in one file that the README quotes.

A notebook cell records a key number where it computes it::

    from ip2p_lib.infra.measurements import record
    record("oracle accuracy, clean renders", acc, fmt=".3f")

Under `ip2p notebooks --profile P` each value lands in `figures/<P>/measurements.json`, beside
the notebook's wall time, the date and the machine (platform, CPU, cores, Python, torch).
Outside the runner (Jupyter, nbval) `record` only returns the value, so an interactive run never
changes the committed file. `ip2p notebooks --measurements-table` renders the file as Markdown;
README.md quotes it between `<!-- measurements:begin -->` and `<!-- measurements:end -->` (and a
one-line summary of the times between the `measurements-summary` markers); every toy run and
`ip2p notebooks --update-readme` rewrite those blocks, and a test keeps them equal to the file.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

# Set by the runner for the kernel of each notebook it executes.
ENV_FILE = "IP2P_MEASUREMENTS"
ENV_NOTEBOOK = "IP2P_NOTEBOOK"

FILE_NAME = "measurements.json"
TABLE_BEGIN, TABLE_END = "<!-- measurements:begin -->", "<!-- measurements:end -->"
SUMMARY_BEGIN, SUMMARY_END = "<!-- measurements-summary:begin -->", "<!-- measurements-summary:end -->"
NOT_YET = "Not measured yet: `make notebooks` (`ip2p notebooks --profile toy`) measures the notebooks and fills this in."


def record(name: str, value: Any, *, notebook: str | None = None, unit: str = "", fmt: str | None = None) -> Any:
    """Record `value` as `name` for this notebook's run and return `value` unchanged.

    `fmt` is a format spec for the README (".3f", ".1%", ",d"); the default prints 3
    significant digits. `unit` is appended ("s", "triples/s"). Writes only under the runner,
    which names the file and the notebook (`notebook=` overrides the latter)."""
    path = os.environ.get(ENV_FILE)
    if not path:
        return value
    notebook = notebook or os.environ.get(ENV_NOTEBOOK)
    if not notebook:
        raise ValueError("record() needs notebook=... when the runner did not name the notebook")
    plain = _plain(value)
    text = format(plain, fmt) if fmt else _default_text(plain)
    data = load(Path(path))
    entry = data["notebooks"].setdefault(notebook, {"values": {}})
    entry.setdefault("values", {})[name] = {"value": plain, "text": f"{text} {unit}".strip()}
    _save(Path(path), data)
    return value


def _plain(value: Any) -> Any:
    """A JSON-ready copy: numpy/torch scalars become Python numbers; NaN and inf become None."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if not isinstance(value, (int, float, str, bool)) and value is not None:
        raise TypeError(f"record() takes a number or a string, not {type(value).__name__}")
    return value


def _default_text(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def machine_info() -> dict[str, Any]:
    """The machine a run used: OS and architecture, CPU model, usable cores, Python, torch."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    return {
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu": cpu,
        "cores": cores,
        "python": platform.python_version(),
        "torch": torch_version,
    }


def measurements_file(figure_root: Path, profile: str) -> Path:
    """`<figure_root>/<profile>/measurements.json`."""
    return Path(figure_root) / profile / FILE_NAME


def load(path: Path) -> dict[str, Any]:
    """The file's content, or an empty record when it does not exist yet."""
    if not Path(path).exists():
        return {"notebooks": {}}
    data = json.loads(Path(path).read_text())
    data.setdefault("notebooks", {})
    return data


def _save(path: Path, data: dict[str, Any]) -> None:
    """Write atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def begin_notebook(path: Path, stem: str) -> None:
    """Forget what an earlier run recorded for `stem`: a run's numbers never mix with older ones."""
    data = load(path)
    data["notebooks"][stem] = {"values": {}}
    _save(path, data)


def end_notebook(path: Path, stem: str, seconds: float, profile: str) -> None:
    """Store `stem`'s wall time with today's date and this machine, beside its recorded values."""
    data = load(path)
    entry = data["notebooks"].setdefault(stem, {"values": {}})
    values = entry.pop("values", {})
    entry.update(
        date=datetime.date.today().isoformat(),
        machine=machine_info(),
        profile=profile,
        seconds=round(seconds, 1),
        values=values,
    )
    data["notebooks"] = dict(sorted(data["notebooks"].items()))
    _save(path, data)


def drop_notebook(path: Path, stem: str) -> None:
    """Remove `stem` (its run failed, so its numbers are not the code's)."""
    data = load(path)
    if data["notebooks"].pop(stem, None) is not None:
        _save(path, data)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _machine_text(machine: dict[str, Any]) -> str:
    cores = machine["cores"]
    return (
        f"{machine['platform']}, {machine['cpu']}, {cores} CPU core{'s' if cores != 1 else ''}, "
        f"Python {machine['python']}, torch {machine['torch']}"
    )


def _runs(data: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(date, machine, notebooks) for each distinct date and machine, in notebook order."""
    runs: dict[tuple[str, str], list[str]] = {}
    for stem, entry in data["notebooks"].items():
        if "seconds" in entry:
            runs.setdefault((entry["date"], _machine_text(entry["machine"])), []).append(stem)
    return [(date, machine, stems) for (date, machine), stems in runs.items()]


def render_table(data: dict[str, Any]) -> str:
    """Markdown: one row per notebook's wall time and per recorded value, then where and when."""
    done = {stem: e for stem, e in data["notebooks"].items() if "seconds" in e}
    if not done:
        return NOT_YET
    rows = ["| notebook | measured | value |", "|---|---|---|"]
    for stem, entry in done.items():
        rows.append(f"| `{stem}` | wall time | {_duration(entry['seconds'])} |")
        for name, value in entry["values"].items():
            rows.append(f"| | {_cell(name)} | {_cell(value['text'])} |")
    profiles = sorted({e.get("profile", "toy") for e in done.values()})
    lines = [f"Measured by `ip2p notebooks --profile {', '.join(profiles)}`:"]
    for date, machine, stems in _runs(data):
        which = "" if len(stems) == len(done) else f" ({', '.join(s.split('_')[0] for s in stems)})"
        lines.append(f"- {date}{which}: {machine}")
    return "\n".join(rows + [""] + lines)


def render_summary(data: dict[str, Any]) -> str:
    """One sentence: how long the notebooks took in all, and on what."""
    done = {stem: e for stem, e in data["notebooks"].items() if "seconds" in e}
    if not done:
        return NOT_YET
    total = sum(e["seconds"] for e in done.values())
    each = ", ".join(f"{stem.split('_')[0]}: {_duration(e['seconds'])}" for stem, e in done.items())
    where = "; ".join(f"{machine}, {date}" for date, machine, _ in _runs(data))
    what = "The notebook took" if len(done) == 1 else f"The {len(done)} notebooks took"
    return f"{what} {_duration(total)} in all ({each}) on {where}."


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def replace_block(text: str, begin: str, end: str, body: str) -> str:
    """`text` with what lies between the markers `begin` and `end` replaced by `body`."""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"markers {begin} ... {end} not found in order")
    return text[: start + len(begin)] + "\n" + body.strip("\n") + "\n" + text[stop:]


def block(text: str, begin: str, end: str) -> str:
    """What lies between the markers `begin` and `end`, without the surrounding newlines."""
    start, stop = text.find(begin), text.find(end)
    if start < 0 or stop < start:
        raise ValueError(f"markers {begin} ... {end} not found in order")
    return text[start + len(begin) : stop].strip("\n")


def update_readme(readme: str, data: dict[str, Any]) -> str:
    """`readme` with its measurement table and its time summary rendered from `data`."""
    readme = replace_block(readme, TABLE_BEGIN, TABLE_END, render_table(data))
    return replace_block(readme, SUMMARY_BEGIN, SUMMARY_END, render_summary(data))
