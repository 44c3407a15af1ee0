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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.records import RecordWriter, read_records
from ip2p_lib.text.backends import BACKENDS, SamplingSettings, TextBackend
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
    progress: bool = True,
    on_record: Callable[[dict], None] | None = None,
    max_captions: int | None = None,
) -> GenerationStats:
    """Append triples to `out` until it holds `n` (see the module docstring).

    Resumes from `out`: its captions are skipped, so a killed run continues where it stopped.
    `on_record` is called after each record is on disk (a progress hook; the tests use it to
    simulate a kill). `max_captions` bounds the captions this run tries, so a model that never
    writes a usable triple cannot loop for ever over an endless source."""
    from tqdm.auto import tqdm

    checks.number(n, "--n", int, minimum=1)
    out = Path(out)
    done = read_done(out)
    seen = {r["input"] for r in done}
    stats = GenerationStats(already_done=len(done))
    count = len(done)
    writer = RecordWriter(out)
    bar = tqdm(total=n, initial=min(count, n), desc="triples", disable=not progress)
    start = time.perf_counter()
    stream = (CaptionItem(c) if isinstance(c, str) else c for c in captions)
    try:
        while count < n and (max_captions is None or stats.captions_tried < max_captions):
            room = min(batch_size, n - count)
            if max_captions is not None:
                room = min(room, max_captions - stats.captions_tried)
            batch: list[CaptionItem] = []
            for item in stream:
                if item.caption in seen:
                    continue
                seen.add(item.caption)
                batch.append(item)
                if len(batch) == room:
                    break
            if not batch:
                break  # the source ran dry
            stats.captions_tried += len(batch)
            flagged = backend.moderate([b.caption for b in batch])
            pending = [b for b, f in zip(batch, flagged) if not f]
            stats.rejected["flagged"] += len(batch) - len(pending)
            for _ in range(1 + retries):
                if not pending:
                    break
                completions = backend.complete([make_prompt(b.caption) for b in pending], settings)
                stats.requests += len(pending)
                again = []
                for item, completion in zip(pending, completions):
                    record = _accept(item, completion, backend, stats)
                    if record is None:
                        again.append(item)
                    elif count < n:
                        writer.write(record)
                        count += 1
                        stats.written += 1
                        bar.update()
                        if on_record:
                            on_record(record)
                pending = again
            stats.rejected["gave_up"] += len(pending)
    finally:
        writer.close()
        bar.close()
        stats.seconds = time.perf_counter() - start
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
