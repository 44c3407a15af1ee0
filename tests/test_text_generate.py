"""Generation at scale: the paper's filters, retries, de-duplication, resuming after a kill."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ip2p_lib.infra.errors import UserError
from ip2p_lib.text.backends import WordListModeration
from ip2p_lib.text.generate import make_backend
from ip2p_lib.text.format import PROMPT_END
from ip2p_lib.text.generate import (
    CaptionItem,
    caption_source,
    dataset_captions,
    file_captions,
    generate_triples,
    read_done,
    toy_captions,
)

ROOT = Path(__file__).resolve().parents[1]


class ScriptedBackend:
    """Completions depend on the prompt only (deterministic), with scripted failures."""

    name = "scripted"

    def __init__(self, script=None, flagged_words=("forbidden",)):
        self.script = {k: list(v) for k, v in (script or {}).items()}  # caption -> completions to return first
        self.asked: list[str] = []
        self.moderation = WordListModeration(flagged_words)

    def complete(self, prompts, settings=None, seeds=None):
        out = []
        for p in prompts:
            cap = p[: -len(PROMPT_END)]
            self.asked.append(cap)
            queue = self.script.get(cap)
            out.append(queue.pop(0) if queue else f"make it blue\n%%\n{cap} in blue")
        return out

    def moderate(self, texts):
        return self.moderation(texts)


def _captions(n):
    return [f"caption number {i}" for i in range(n)]


def test_filters_retries_and_moderation(tmp_path):
    script = {
        "caption number 0": ["no delimiter", "a\n%%\nb\n%%\nc", "fixed\n%%\nnew caption"],  # 2 bad, then good
        "caption number 1": ["same\n%%\nCaption number 1."] * 10,  # always unchanged: given up after 1 + 3
        "caption number 2": ["make it forbidden\n%%\nsomething else", "ok\n%%\nsomething else"],  # flagged output
    }
    backend = ScriptedBackend(script)
    caps = _captions(4) + ["a forbidden caption"]  # flagged input: never sent to the model
    stats = generate_triples(backend, caps, tmp_path / "out.jsonl", n=10, retries=3, progress=False)
    records = read_done(tmp_path / "out.jsonl")
    # first tries are written first, retried captions after them
    assert [r["input"] for r in records] == ["caption number 3", "caption number 2", "caption number 0"]
    by_input = {r["input"]: r for r in records}
    assert by_input["caption number 0"] == {"input": "caption number 0", "edit": "fixed", "output": "new caption"}
    assert by_input["caption number 2"]["edit"] == "ok"
    assert backend.asked.count("caption number 1") == 4  # 1 try + 3 retries
    assert "a forbidden caption" not in backend.asked
    assert stats.rejected == {"malformed": 2, "unchanged": 4, "flagged": 2, "gave_up": 1}
    assert stats.written == 3


def test_deduplicates_by_caption_and_stops_at_n(tmp_path):
    caps = ["a", "b", "a", "c", "b", "d", "e"]
    stats = generate_triples(ScriptedBackend(), caps, tmp_path / "o.jsonl", n=4, batch_size=2, progress=False)
    assert [r["input"] for r in read_done(tmp_path / "o.jsonl")] == ["a", "b", "c", "d"]
    assert stats.written == 4


def test_url_is_kept_when_the_source_has_one(tmp_path):
    generate_triples(ScriptedBackend(), [CaptionItem("a photo", "http://x/1.jpg")], tmp_path / "o.jsonl", n=1, progress=False)
    assert read_done(tmp_path / "o.jsonl")[0]["url"] == "http://x/1.jpg"


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_after", [0, 1, 7, 19])
def test_a_killed_run_resumes_without_losing_or_duplicating(tmp_path, kill_after):
    caps = _captions(40)
    reference = tmp_path / "reference.jsonl"
    generate_triples(ScriptedBackend(), caps, reference, n=20, batch_size=6, progress=False)

    out = tmp_path / "killed.jsonl"

    def die(record, seen=[]):
        seen.append(record)
        if len(seen) > kill_after:
            raise Killed

    with pytest.raises(Killed):
        generate_triples(ScriptedBackend(), caps, out, n=20, batch_size=6, progress=False, on_record=die)
    # the kill came mid-write: half a record, no newline, at the end of the file
    with out.open("a") as f:
        f.write('{"input": "caption number 39", "edit": "hal')
    stats = generate_triples(ScriptedBackend(), caps, out, n=20, batch_size=6, progress=False)
    assert stats.already_done == kill_after + 1
    assert out.read_text().endswith("\n") and "hal\"" not in out.read_text() and '"hal' not in out.read_text()
    assert read_done(out) == read_done(reference)
    assert len({r["input"] for r in read_done(out)}) == 20
    # a finished file is left alone
    again = generate_triples(ScriptedBackend(), caps, out, n=20, progress=False)
    assert again.written == 0 and read_done(out) == read_done(reference)


def test_read_done_leaves_out_a_half_written_line_and_reads_the_authors_caption_name(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"caption": "a"}\n{"input": "b"}\n{"inp')
    assert [r["input"] for r in read_done(path)] == ["a", "b"]
    path.write_text('{"input": "a"}\nnot json\n')
    with pytest.raises(UserError, match="f.jsonl:2 is not a JSON object"):
        read_done(path)


def test_toy_captions_are_seeded_distinct_and_avoid_the_seed_set():
    from ip2p_lib.text.seed import load_seed_set

    seed_caps = {t["input"] for t in load_seed_set()}
    first = [c.caption for c, _ in zip(toy_captions(seed=1, exclude=seed_caps), range(2000))]
    assert len(set(first)) == 2000 and not set(first) & seed_caps
    assert first[:50] == [c.caption for c, _ in zip(caption_source("toy", 1, seed_caps), range(50))]


def test_file_sources(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("a dog\n\na cat\n")
    assert [c.caption for c in file_captions(txt)] == ["a dog", "a cat"]
    jl = tmp_path / "c.jsonl"
    jl.write_text(json.dumps({"TEXT": "a bird", "URL": "http://b"}) + "\n" + json.dumps({"caption": "a fish"}) + "\n")
    assert [(c.caption, c.url) for c in caption_source(str(jl))] == [("a bird", "http://b"), ("a fish", None)]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(UserError, match="no captions"):
        file_captions(tmp_path / "empty.txt")
    (tmp_path / "bad.jsonl").write_text(json.dumps({"caption": "a fish"}) + "\n" + json.dumps({"url": "http://c"}) + "\n")
    with pytest.raises(UserError, match="bad.jsonl:2 lacks the field"):
        file_captions(tmp_path / "bad.jsonl")


def test_hub_dataset_offline_is_a_clear_user_error(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="network access"):
        dataset_captions("ChristophSchuhmann/improved_aesthetics_6.5plus")


def test_unknown_backend_is_a_user_error():
    with pytest.raises(UserError, match="unknown backend"):
        make_backend("gpt5", "x")


def _ip2p(*args, env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "ip2p_lib.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_cli_without_an_api_key_says_which_variable_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-m", "ip2p_lib.cli", "text", "generate", "--backend", "openai",
                             "--model", "ft:x", "--captions", "toy", "--n", "2", "--out", str(tmp_path / "o.jsonl")],
                            capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert "OPENAI_API_KEY" in result.stderr and "notebook 01 skips" in result.stderr


def test_max_captions_bounds_a_run_that_never_succeeds(tmp_path):
    class Hopeless(ScriptedBackend):
        def complete(self, prompts, settings=None, seeds=None):
            return ["no delimiter"] * len(prompts)

    stats = generate_triples(Hopeless(), toy_captions(seed=3), tmp_path / "o.jsonl", n=5, max_captions=7,
                             batch_size=3, progress=False)
    assert stats.written == 0 and stats.captions_tried == 7 and stats.rejected["gave_up"] == 7


# ---------------------------------------------------------------- a resumed run writes what an uninterrupted one writes

from ip2p_lib.text.backends import completion_seed  # noqa: E402
from tests.kill_and_resume import BatchSensitiveBackend, generate_with_kills  # noqa: E402

RESUME_OPTIONS = dict(n=40, batch_size=6, retries=2, seed=5)
ON_FILE_BEFORE = [{"input": "caption number 12", "edit": "e", "output": "o"},  # in the source: skipped
                  {"input": "a caption from elsewhere", "edit": "e", "output": "o"}]


def _resume_source():
    caps = _captions(150)
    caps[20:20] = ["caption number 3", "caption number 7"]  # repeats in the source: skipped
    return caps


def _start_file(path):
    path.write_text("".join(json.dumps(r) + "\n" for r in ON_FILE_BEFORE))


@pytest.mark.parametrize("kills", [
    [("record", 1), ("request", 2), ("record", 6), ("request", 1), ("record", 4), ("request", 5)],
    [("request", 1), ("request", 1), ("request", 3), ("record", 30)],  # the last kill: after the final record
    [("record", 2)] * 8,
])
def test_a_run_killed_several_times_writes_what_an_uninterrupted_run_writes(tmp_path, kills):
    caps = _resume_source()
    reference, out = tmp_path / "reference.jsonl", tmp_path / "killed.jsonl"
    _start_file(reference)
    _start_file(out)
    ref = generate_triples(BatchSensitiveBackend(), caps, reference, progress=False, **RESUME_OPTIONS)
    assert ref.written == 38 and ref.rejected["gave_up"] > 0  # retries and given-up captions to reproduce

    backend = BatchSensitiveBackend()
    last = generate_with_kills(backend, caps, out, kills, **RESUME_OPTIONS)
    assert out.read_bytes() == reference.read_bytes()
    # the last run began at the batch the kill interrupted, not at the top of the source:
    # captions given up on before it were not asked again
    assert last.resumed_at is not None
    place = {c: i for i, c in reversed(list(enumerate(caps)))}
    asked_last = backend.asked[len(backend.asked) - last.requests:]
    assert all(place[c] >= last.resumed_at for c in asked_last)
    inputs = {r["input"] for r in read_done(reference)}
    if kills[-1] != ("record", 30):  # (that run had nothing left to do)
        assert any(c not in inputs for c in caps[: last.resumed_at])  # a given-up caption was skipped


def test_each_completion_is_seeded_by_the_run_seed_and_the_captions_place(tmp_path):
    class SeedOnly(BatchSensitiveBackend):
        """Completions from the seed alone (the prompt's caption aside); remembers every seed."""

        def __init__(self):
            super().__init__()
            self.seeds = []

        def complete(self, prompts, settings=None, seeds=None):
            self.seeds += list(seeds)
            return [super(SeedOnly, self).complete([p], settings, [s])[0] for p, s in zip(prompts, seeds)]

        @staticmethod
        def records(path):
            return sorted((r["input"], r["edit"]) for r in read_done(path))

    caps = _resume_source()
    place = {c: i for i, c in reversed(list(enumerate(caps)))}
    runs = {}
    for batch_size, seed in [(1, 5), (7, 5), (7, 6)]:
        backend = SeedOnly()
        path = tmp_path / f"{batch_size}-{seed}.jsonl"
        generate_triples(backend, caps, path, n=1000, batch_size=batch_size, retries=2, seed=seed, progress=False)
        attempts = {}
        for caption, s in zip(backend.asked, backend.seeds):
            attempts[caption] = attempts.get(caption, -1) + 1
            assert s == completion_seed(seed, place[caption], attempts[caption])
        runs[batch_size, seed] = SeedOnly.records(path)
    assert runs[1, 5] == runs[7, 5] != runs[7, 6]  # the batch size changes nothing, the seed everything


SIGKILL_SCRIPT = """
import os, signal, sys
from ip2p_lib.text.generate import generate_triples
from tests.kill_and_resume import BatchSensitiveBackend
from tests.test_text_generate import RESUME_OPTIONS, _resume_source

out, kind, k = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Backend(BatchSensitiveBackend):
    requests = 0

    def complete(self, prompts, settings=None, seeds=None):
        Backend.requests += 1
        if kind == "request" and Backend.requests == k:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().complete(prompts, settings, seeds)

def on_record(record, written=[0]):
    written[0] += 1
    if kind == "record" and written[0] == k:
        os.kill(os.getpid(), signal.SIGKILL)

generate_triples(Backend(), _resume_source(), out, progress=False, on_record=on_record, **RESUME_OPTIONS)
"""


def test_a_process_killed_with_sigkill_resumes_to_the_same_file(tmp_path):
    reference, out = tmp_path / "reference.jsonl", tmp_path / "killed.jsonl"
    _start_file(reference)
    _start_file(out)
    generate_triples(BatchSensitiveBackend(), _resume_source(), reference, progress=False, **RESUME_OPTIONS)
    (tmp_path / "run.py").write_text(SIGKILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for kind, k in [("record", 3), ("request", 4), ("record", 11), ("none", 0)]:
        result = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(out), kind, str(k)], env=env, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == (0 if kind == "none" else -9), result.stderr
    assert out.read_bytes() == reference.read_bytes()
