"""Test helpers for "a resumed run writes what an uninterrupted run writes": simulated and real
kills, and a fake back end that is as sensitive to its batch as a model can be."""

from __future__ import annotations

import json
import os
import signal
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ip2p_lib.text.format import PROMPT_END
from ip2p_lib.text.generate import GenerationStats, generate_triples


class Killed(Exception):
    """A simulated SIGKILL."""


def raise_killed() -> None:
    """A simulated kill: raise `Killed`."""
    raise Killed


def sigkill() -> None:
    """A real kill: SIGKILL to this process, so nothing after it runs (no `finally`, no flush)."""
    os.kill(os.getpid(), signal.SIGKILL)


def dying_at_call(fn: Callable[..., Any], nth: int, die: Callable[[], None] = raise_killed) -> Callable[..., Any]:
    """`fn`, except that its `nth` call (1-based) dies (`die()`) before doing anything."""
    calls = [0]

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == nth:
            die()
        return fn(*args, **kwargs)

    return dying


class BatchSensitiveBackend:
    """Completions that depend on the prompt, its seed and every other prompt of the request.

    A real model's floating-point sums move a little with its batch-mates, which can flip a
    sampled token; here every batch-mate changes every draw. A resumed run gives the same
    records only if each caption gets the same seeds and the same batch-mates as in an
    uninterrupted run. About 30 % of completions are malformed and 15 % leave the caption
    unchanged, so retries and given-up captions happen too."""

    name = "batch-sensitive"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def complete(self, prompts, settings=None, seeds=None):
        batch = zlib.crc32("\x00".join(prompts).encode())
        out = []
        for prompt, seed in zip(prompts, seeds, strict=True):
            caption = prompt[: -len(PROMPT_END)]
            self.asked.append(caption)
            rng = np.random.default_rng([seed, batch])
            u, word = rng.random(), ("blue", "green", "tiny", "huge", "left")[rng.integers(5)]
            if u < 0.30:
                out.append("no delimiter")
            elif u < 0.45:
                out.append(f"make it {word}\n%%\n{caption}")
            else:
                out.append(f"make it {word}\n%%\n{caption} made {word}")
        return out

    def moderate(self, texts):
        return [False] * len(texts)


class Dying:
    """A back end that dies at its `at`-th completion request (a kill in the middle of a batch:
    the batch's start is saved, none of its records are written)."""

    def __init__(self, backend, at: int) -> None:
        self.backend, self.at, self.requests, self.name = backend, at, 0, backend.name

    def complete(self, prompts, settings=None, seeds=None):
        self.requests += 1
        if self.requests == self.at:
            raise Killed
        return self.backend.complete(prompts, settings, seeds=seeds)

    def moderate(self, texts):
        return self.backend.moderate(texts)


def generate_with_kills(backend, captions, out: Path, kills, **options) -> GenerationStats:
    """`generate_triples` on `out`, once for each kill of `kills`, each run dying at its kill,
    then once more to the end; returns the last run's stats.

    ("request", k): the run dies at its k-th completion request; ("record", k): right after
    its k-th record is on disk, it writes half of the next line and dies."""
    for kind, k in kills:
        written = [0]

        def on_record(record, kind=kind, k=k, written=written):
            written[0] += 1
            if kind == "record" and written[0] == k:
                line = json.dumps(record)
                with out.open("a", encoding="utf-8") as f:
                    f.write(line[: len(line) // 2])
                raise Killed

        victim = Dying(backend, k) if kind == "request" else backend
        try:
            generate_triples(victim, captions, out, on_record=on_record, progress=False, **options)
        except Killed:
            continue
        raise AssertionError(f"the run finished before its kill {kind} {k}: choose an earlier kill")
    return generate_triples(backend, captions, out, progress=False, **options)
