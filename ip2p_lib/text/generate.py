"""Generation at scale: captions in, filtered triples out, into a file that survives a kill.

For each caption (the authors' `generate_txt_dataset.py`, batched):

1. skip it if the output file already has it (de-duplication by caption, and resuming);
2. skip it if moderation flags it;
3. ask for a completion of `caption + "\\n##\\n"`, up to 1 + `retries` times, until one
   splits into exactly 2 parts on "\\n%%\\n", is not flagged, and changes the caption
   (after strip(), strip(".!?"), lower());
4. append {"input", "edit", "output"} (+ "url" when the source has one) to the JSONL file.

The writer makes each record one `write` of one complete line, flushed and fsynced, so a
kill leaves at worst a partial last line without its newline (`ip2p_lib.infra.records`). On
start, `read_done` reads the complete records only and the writer cuts such a partial line
away, so it is never read as data and its caption is simply generated again: no triple is
lost or written twice.

A resumed run writes exactly what an uninterrupted run with the same arguments writes:

- the randomness of a caption's completions is its own: attempt a at the caption in place i
  of the source samples with seed `completion_seed(seed, i, a)`, whatever else is in the batch
  and however many runs came before;
- before each batch, `<out>.resume.json` records where in the source the batch begins and how
  many records the file held then (`BatchStart`). A resumed run skips the source up to there
  (captions given up on before the kill are not tried again) and recomputes that batch as it
  was, the same captions in the same batch, so even the floating-point sums are the same; of
  its records, those already on file are not written again.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.records import RecordWriter, read_records
from ip2p_lib.text.backends import BACKENDS, SamplingSettings, TextBackend, completion_seed
from ip2p_lib.text.format import TRIPLE_ALIASES, is_unchanged, make_prompt, parse_completion

LAION_AESTHETICS = "ChristophSchuhmann/improved_aesthetics_6.5plus"  # the authors' caption source
CAPTION_ALIASES = {"input": "caption", "text": "caption", "TEXT": "caption", "URL": "url"}  # caption files' field names


@dataclass(frozen=True)
class CaptionItem:
    """A caption to edit, and the image URL when the source has one (LAION)."""

    caption: str
    url: str | None = None


# ---------------------------------------------------------------- caption sources


def toy_captions(seed: int = 1, exclude: Iterable[str] = ()) -> Iterator[CaptionItem]:
    """An endless, seeded stream of distinct world captions, none of them in `exclude`
    (pass the seed set's captions: generation must run on captions never seen in fine-tuning)."""
    from ip2p_lib.toyworld import random_caption, sample_scene

    rng = np.random.default_rng(seed)
    seen = set(exclude)
    misses = 0
    while misses < 10_000:  # the world has tens of thousands of captions; stop if exhausted
        text = random_caption(sample_scene(rng), rng)
        if text in seen:
            misses += 1
            continue
        misses = 0
        seen.add(text)
        yield CaptionItem(text)


def file_captions(path: Path) -> Iterator[CaptionItem]:
    """Captions from a .txt file (one a line) or a .jsonl file (field caption, input, text or
    TEXT, and url/URL if present)."""
    checks.input_file(path, "--captions", "caption file")
    if path.suffix == ".jsonl":
        records = read_records(path, aliases=CAPTION_ALIASES, required=("caption",), what="caption")
        items = [CaptionItem(r["caption"], r.get("url")) for r in records]
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path} is not UTF-8 text (byte {err.start}); give a .txt or .jsonl file of captions") from None
        items = [CaptionItem(line.strip()) for line in text.splitlines() if line.strip()]
    if not items:
        raise UserError(f"{path} holds no captions")
    return iter(items)


def dataset_captions(name: str = LAION_AESTHETICS, split: str = "train", seed: int = 0) -> Iterator[CaptionItem]:
    """Captions (`TEXT`) and URLs (`URL`) of a Hugging Face dataset, LAION-Aesthetics 6.5+ by
    default, streamed in a seeded shuffled order (the authors shuffle with a seed too)."""
    try:
        import datasets

        data = datasets.load_dataset(name, split=split, streaming=True).shuffle(seed=seed, buffer_size=10_000)
        first = next(iter(data))
    except Exception as err:  # offline, unknown id, gated: one clear message
        raise UserError(
            f"cannot stream the dataset {name!r} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). "
            "It needs network access to the Hugging Face hub (unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE); "
            "or pass a local .txt/.jsonl file of captions"
        ) from None
    text = next((k for k in ("TEXT", "text", "caption") if k in first), None)
    if text is None:
        raise UserError(f"dataset {name!r} has no TEXT/text/caption column (columns: {', '.join(first)})")
    return (CaptionItem(r[text], r.get("URL") or r.get("url")) for r in data)


def caption_source(spec: str, seed: int = 1, exclude: Iterable[str] = ()) -> Iterator[CaptionItem]:
    """"toy" (world captions minus `exclude`), a .txt/.jsonl file, or a hub dataset id."""
    if spec == "toy":
        return toy_captions(seed, exclude)
    path = Path(spec)
    if path.suffix in (".txt", ".jsonl") or path.exists():
        return file_captions(path)
    return dataset_captions(spec, seed=seed)


# ---------------------------------------------------------------- the resumable file


def read_done(path: str | Path) -> list[dict]:
    """The complete triples of an output file (a half-written last line, from a kill, is not one)."""
    return read_records(path, aliases=TRIPLE_ALIASES, required=("input",), resume=True)


# ---------------------------------------------------------------- where a run stopped


def resume_path(out: Path) -> Path:
    """`<out>.resume.json`: where the batch that a run was working on began (`BatchStart`)."""
    return out.with_name(out.name + ".resume.json")


@dataclass(frozen=True)
class BatchStart:
    """Where a batch began: the place in the source of the first caption it read (`index`, and
    that caption as a check), how many records the output file held (`records`, and the last
    one's caption), and the source's first caption (a check that a later run reads the same
    source)."""

    index: int
    caption: str
    records: int
    last_input: str | None
    first_caption: str

    def save(self, path: Path) -> None:
        """Write atomically: a kill mid-write leaves the previous file whole."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.__dict__, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, done: Sequence[Mapping[str, object]]) -> BatchStart | None:
        """The saved batch start if it still fits the output file's records `done`, else None
        (no file, an unreadable one, or an output file that was cut or replaced since)."""
        try:
            start = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None
        if start.records > len(done) or (start.records and done[start.records - 1]["input"] != start.last_input):
            return None
        return start


def _skip_to(positions: Iterator[tuple[int, CaptionItem]], start: BatchStart, path: Path
             ) -> tuple[Iterator[tuple[int, CaptionItem]], BatchStart | None, set[str]]:
    """Read the source up to `start.index`. Returns the rest of the source, `start` (None if the
    source is another one than the saved run's: then nothing is skipped) and the captions read."""
    first = next(positions, None)
    if first is None or first[1].caption != start.first_caption:
        return itertools.chain([first] if first else [], positions), None, set()
    skipped: set[str] = set()
    for index, item in itertools.chain([first], positions):
        if index == start.index:
            if item.caption != start.caption:
                break
            return itertools.chain([(index, item)], positions), start, skipped
        skipped.add(item.caption)
    raise UserError(f"{path} says the last run stopped in a batch that begins at caption {start.index} of the source "
                    f"({start.caption!r}), but the source differs there now (another --seed-file or caption file?). "
                    f"Use the same source, or delete {path} to resume by caption only")


# ---------------------------------------------------------------- generation


@dataclass
class GenerationStats:
    """What happened to the captions of one run (this run only, not the resumed part)."""

    written: int = 0
    already_done: int = 0
    captions_tried: int = 0
    requests: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: {"malformed": 0, "unchanged": 0, "flagged": 0, "gave_up": 0})
    seconds: float = 0.0
    resumed_at: int | None = None  # the place in the source where this run began, when it resumed

    @property
    def triples_per_second(self) -> float:
        return self.written / self.seconds if self.seconds else float("nan")


def _accept(item: CaptionItem, completion: str | None, backend: TextBackend, stats: GenerationStats) -> dict | None:
    parts = parse_completion(completion)
    if parts is None:
        stats.rejected["malformed"] += 1
        return None
    edit, output = (p.strip() for p in parts)
    if is_unchanged(item.caption, output):
        stats.rejected["unchanged"] += 1
        return None
    if any(backend.moderate([edit, output])):
        stats.rejected["flagged"] += 1
        return None
    record = {"input": item.caption, "edit": edit, "output": output}
    if item.url is not None:
        record["url"] = item.url
    return record


def generate_triples(
    backend: TextBackend,
    captions: Iterable[CaptionItem | str],
    out: str | Path,
    n: int,
    settings: SamplingSettings = SamplingSettings(),
    retries: int = 3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
    max_captions: int | None = None,
) -> GenerationStats:
    """Append triples to `out` until it holds `n` (see the module docstring).

    Resumes from `out`: a killed run continues where it stopped and writes what an uninterrupted
    run would have written; captions already in `out` from elsewhere are skipped. `seed` seeds
    each completion with the caption's place in `captions` (`completion_seed`). `on_record` is
    called after each record is on disk (a progress hook; the tests use it to simulate a kill).
    `max_captions` bounds the captions this run tries, so a model that never writes a usable
    triple cannot loop for ever over an endless source."""
    from tqdm.auto import tqdm

    checks.number(n, "--n", int, minimum=1)
    checks.seed(seed)
    out = Path(out)
    done = read_done(out)
    state = resume_path(out)
    start = BatchStart.load(state, done) if done else None
    positions = enumerate(CaptionItem(c) if isinstance(c, str) else c for c in captions)
    skipped: set[str] = set()
    if start is not None:
        positions, start, skipped = _skip_to(positions, start, state)
    before = start.records if start else len(done)  # records on file when the current batch began
    seen = {r["input"] for r in done[:before]} | skipped
    redo = {r["input"] for r in done[before:]}  # written by the batch a kill interrupted
    first_caption = start.first_caption if start else None
    stats = GenerationStats(already_done=len(done), resumed_at=start.index if start else None)
    count = len(done)
    writer = RecordWriter(out)
    bar = tqdm(total=n, initial=min(count, n), desc="triples", disable=not progress)
    clock = time.perf_counter()
    try:
        while count < n and (max_captions is None or stats.captions_tried < max_captions):
            room = min(batch_size, n - before)
            if max_captions is not None:
                room = min(room, max_captions - stats.captions_tried)
            batch: list[tuple[int, CaptionItem]] = []  # (place in the source, caption)
            begins: tuple[int, str] | None = None
            for index, item in positions:
                begins = begins or (index, item.caption)
                first_caption = item.caption if first_caption is None else first_caption
                if item.caption in seen:
                    continue
                seen.add(item.caption)
                batch.append((index, item))
                if len(batch) == room:
                    break
            if not batch:
                break  # the source ran dry
            assert begins is not None and first_caption is not None
            BatchStart(begins[0], begins[1], before, done[before - 1]["input"] if before else None,
                       first_caption).save(state)
            stats.captions_tried += len(batch)
            flagged = backend.moderate([item.caption for _, item in batch])
            pending = [b for b, f in zip(batch, flagged) if not f]
            stats.rejected["flagged"] += len(batch) - len(pending)
            for attempt in range(1 + retries):
                if not pending:
                    break
                completions = backend.complete([make_prompt(item.caption) for _, item in pending], settings,
                                               seeds=[completion_seed(seed, index, attempt) for index, _ in pending])
                stats.requests += len(pending)
                again = []
                for (index, item), completion in zip(pending, completions):
                    record = _accept(item, completion, backend, stats)
                    if record is None:
                        again.append((index, item))
                    elif item.caption in redo:
                        redo.discard(item.caption)  # on file already: written before the kill
                    elif count < n:
                        writer.write(record)
                        done.append(record)
                        count += 1
                        stats.written += 1
                        bar.update()
                        if on_record:
                            on_record(record)
                pending = again
            stats.rejected["gave_up"] += len(pending)
            before = count
    finally:
        writer.close()
        bar.close()
        stats.seconds = time.perf_counter() - clock
    return stats


def make_backend(name: str, model: str, **options: object) -> TextBackend:
    """The back end `name` ("hf" or "openai") serving `model` (a folder or a model id)."""
    if name == "hf":
        from ip2p_lib.text.hf_backend import HFBackend

        return HFBackend(model, **options)  # type: ignore[arg-type]
    if name == "openai":
        from ip2p_lib.text.openai_backend import OpenAIBackend

        return OpenAIBackend(model, **options)  # type: ignore[arg-type]
    raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
