"""The one records reader/writer: atomic files, append-safe resuming at any cut, file:line errors, aliases."""

import json
import re

import pytest

from ip2p_lib.infra import records
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.records import RecordWriter, read_records, write_records

ROWS = [{"input": "a red circle", "edit": "make it blue", "output": "a blue circle"},
        {"input": "ein grüner Kreis", "edit": "mach ihn rot ✓", "output": "ein roter Kreis"},
        {"input": "c", "n": 3, "nested": {"x": [1, 2]}}]


def test_write_then_read_gives_the_same_records_and_leaves_no_temporary_file(tmp_path):
    path = write_records(ROWS, tmp_path / "sub" / "r.jsonl")
    assert read_records(path) == ROWS
    assert "ü" in path.read_text(encoding="utf-8")  # UTF-8, not \u-escaped
    assert len(path.read_text(encoding="utf-8").splitlines()) == 3
    assert [p.name for p in path.parent.iterdir()] == ["r.jsonl"]


def test_a_malformed_middle_line_names_file_and_line_even_when_resuming(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n{not json\n" + json.dumps(ROWS[1]) + "\n", encoding="utf-8")
    for resume in (False, True):
        with pytest.raises(UserError, match=rf"^{re.escape(str(path))}:3 is not a JSON object"):
            read_records(path, resume=resume)


def test_a_line_that_is_json_but_not_an_object_is_an_error(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n[1, 2]\n")
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}:2 is not a JSON object \(a JSON list"):
        read_records(path)


def _cut_file(tmp_path, k):
    """Two complete records, then the first k bytes of the third record's line."""
    last = (json.dumps(ROWS[2], ensure_ascii=False) + "\n").encode("utf-8")
    path = tmp_path / f"cut{k}.jsonl"
    path.write_bytes(b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8") for r in ROWS[:2]) + last[:k])
    return path, len(last)


def test_a_truncated_last_line_is_an_error_unless_resuming(tmp_path):
    path, _ = _cut_file(tmp_path, 10)
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}:3 is not a JSON object"):
        read_records(path)
    assert read_records(path, resume=True) == ROWS[:2]


def test_resuming_after_a_cut_at_any_byte_loses_and_repeats_nothing(tmp_path):
    _, n = _cut_file(tmp_path, 0)
    for k in range(n + 1):
        path, _ = _cut_file(tmp_path, k)
        complete = k >= n - 1  # only the newline is missing: the record is on disk
        done = read_records(path, resume=True)
        assert done == (ROWS if complete else ROWS[:2]), k
        with RecordWriter(path) as writer:  # the resumed run writes what is not done yet, then more
            for row in ROWS[len(done):]:
                writer.write(row)
            writer.write({"input": "after"})
        assert read_records(path) == [*ROWS, {"input": "after"}], k
        assert path.read_bytes().endswith(b"\n")


def test_a_half_written_multibyte_character_counts_as_a_cut(tmp_path):
    path = tmp_path / "utf8.jsonl"
    path.write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + '{"input": "gr\u00fc'.encode("utf-8")[:-1])
    assert read_records(path, resume=True) == ROWS[:1]
    RecordWriter(path).close()
    assert path.read_bytes() == json.dumps(ROWS[0]).encode() + b"\n"


def test_each_record_is_flushed_and_fsynced_before_write_returns(tmp_path, monkeypatch):
    synced = []
    real_fsync = records.os.fsync
    monkeypatch.setattr(records.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    path = tmp_path / "w.jsonl"
    writer = RecordWriter(path)
    for i, row in enumerate(ROWS, 1):
        writer.write(row)
        assert read_records(path) == ROWS[:i]  # visible to another reader while the writer is open
        assert len(synced) == i
    writer.close()


def test_aliases_rename_and_required_fields_name_the_line(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"caption": "x", "edit": "e", "output": "o"}\n{"input": "y", "caption": "z", "edit": "e", "output": "o"}\n')
    got = read_records(path, aliases={"caption": "input"}, required=("input", "edit", "output"))
    assert got == [{"input": "x", "edit": "e", "output": "o"},
                   {"input": "y", "caption": "z", "edit": "e", "output": "o"}]  # the canonical name wins
    path.write_text('{"input": "x", "edit": "e", "output": "o"}\n{"edit": "e"}\n')
    with pytest.raises(UserError, match=rf"{re.escape(str(path))}:2 lacks the field\(s\) input or caption, output"):
        read_records(path, aliases={"caption": "input"}, required=("input", "edit", "output"))


def test_a_missing_file_is_an_error_unless_resuming(tmp_path):
    with pytest.raises(UserError, match="no triples file at"):
        read_records(tmp_path / "none.jsonl", what="triples")
    assert read_records(tmp_path / "none.jsonl", resume=True) == []
