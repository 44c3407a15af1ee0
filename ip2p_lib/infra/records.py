"""The one records reader/writer: JSON Lines, one JSON object a line, for every file of records
(seed triples, generated triples, world scenes, fine-tuning files).

- `read_records` reads a file; a line that is not a JSON object is a `UserError` naming
  `file:line`. `aliases` renames fields (another tool's name -> ours) and `required` names
  the fields every record must have, so each caller states its format in one line.
- `write_records` writes a whole file atomically (a temporary file, then a rename).
- `RecordWriter` appends, one record per `write`: the whole line in one call, flushed and
  fsynced, so a kill leaves at worst one half-written last line without its newline.

A record counts once its closing brace is on disk: a prefix of a JSON object never parses
as one, so a last line that parses is complete (only its newline may be missing) and one that
does not is half-written. `read_records(..., resume=True)` leaves a half-written last line out
and `RecordWriter` cuts it off before appending, so resuming neither loses nor repeats a record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType
from typing import Any, Iterable, Mapping, Sequence

from ip2p_lib.infra.errors import UserError


def _parse(line: bytes) -> dict[str, Any] | str:
    """The record on one line, or why it is not one."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except json.JSONDecodeError as err:
        return err.msg
    return record if isinstance(record, dict) else f"a JSON {type(record).__name__}, not an object"


def _rename(record: dict[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
    """Give each aliased field its canonical name, unless the record has that name already
    (the first alias found wins)."""
    for alias, canonical in aliases.items():
        if canonical not in record and alias in record:
            record[canonical] = record.pop(alias)
    return record


def read_records(
    path: str | Path,
    aliases: Mapping[str, str] | None = None,
    required: Sequence[str] = (),
    resume: bool = False,
    what: str = "records",
) -> list[dict[str, Any]]:
    """The records of a JSONL file, in order; blank lines are skipped.

    `aliases` maps a field name to the canonical one (e.g. {"caption": "input"}); `required`
    fields (canonical names) must be in every record. With `resume` the file is one this
    project appends to: a missing file holds no records and a half-written last line (a kill
    mid-write) is left out. Anything else that is not a JSON object is a `UserError` naming
    the file and line; `what` names the file's contents in the error for a missing file."""
    path = Path(path)
    if not path.exists():
        if resume:
            return []
        raise UserError(f"no {what} file at {path}")
    aliases = aliases or {}
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = _parse(line)
        if isinstance(record, str):
            if resume and number == len(lines):  # no newline after it: a record cut short by a kill
                break
            raise UserError(f"{path}:{number} is not a JSON object ({record}); fix or delete that line")
        record = _rename(record, aliases)
        missing = [k for k in required if k not in record]
        if missing:
            names = [" or ".join([k, *(a for a, c in aliases.items() if c == k)]) for k in missing]
            raise UserError(f"{path}:{number} lacks the field(s) {', '.join(names)}")
        records.append(record)
    return records


def _line(record: Mapping[str, Any]) -> str:
    """One record as one line of JSON (UTF-8, not \\u-escaped), newline included."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_records(records: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write `records` as a whole JSONL file, atomically: readers see the old file or the new
    one, never half of it. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(_line(r) for r in records)
    tmp.replace(path)
    return path


def _settle_last_line(path: Path, block: int = 1 << 16) -> None:
    """Make the file end with a newline after its last complete record: a last line that
    parses gets its newline, a half-written one is cut off."""
    if not path.exists():
        return
    with path.open("r+b") as f:
        end = f.seek(0, os.SEEK_END)
        start = end
        while start > 0:  # find the last newline, reading backwards
            step = min(block, start)
            f.seek(start - step)
            chunk = f.read(step)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                start = start - step + cut + 1
                break
            start -= step
        if start == end:
            return
        f.seek(start)
        tail = f.read()
        if not tail.strip():
            f.truncate(start)
        elif isinstance(_parse(tail), dict):
            f.write(b"\n")
        else:
            f.truncate(start)


class RecordWriter:
    """Appends records to a JSONL file, each a single write of one whole line, flushed and
    fsynced before `write` returns. Opening settles the last line first (see the module doc)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _settle_last_line(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: Mapping[str, Any]) -> None:
        """Append one record; it is on disk when this returns."""
        self._file.write(_line(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file (every record is already on disk)."""
        self._file.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
