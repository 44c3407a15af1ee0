"""One interface, two back ends: what generation needs from a language model.

A back end completes prompts with the paper's sampling settings and moderates text. How a
model gets fine-tuned differs too much to share one call (a local training loop here, a
hosted job there), so each back end module has its own `finetune_*` function; both take the
same triples and write the same format (`format.py`).

Randomness is per completion, not per call: `complete` takes one seed per prompt, and
generation derives each seed from the run's seed, the caption's place in its source and the
attempt (`completion_seed`). A caption's completion is then the same whatever batch it lands
in and however often the run was killed and resumed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Protocol, Sequence

import numpy as np

from ip2p_lib.infra.errors import UserError
from ip2p_lib.text.format import STOP

BACKENDS: tuple[str, ...] = ("hf", "openai")


@dataclass(frozen=True)
class SamplingSettings:
    """The paper's sampling settings (the authors' `generate_txt_dataset.py`)."""

    temperature: float = 0.7
    top_p: float = 1.0
    frequency_penalty: float = 0.1
    presence_penalty: float = 0.0
    max_tokens: int = 256
    stop: str = STOP

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def completion_seed(seed: int, index: int, attempt: int = 0) -> int:
    """The seed of one completion: a 63-bit hash (numpy's `SeedSequence`) of the run's `seed`,
    the caption's `index` in its source and the `attempt` (0, then 1, 2, ... for retries).
    Neighbouring inputs give unrelated seeds; all three must be >= 0."""
    return int(np.random.SeedSequence([seed, index, attempt]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class TextBackend(Protocol):
    """What `generate.py` needs: completions (stop sequence removed, None on failure) and a
    moderation verdict per text (True = flagged, drop it).

    `seeds`, one per prompt, make each completion a function of its prompt and its seed only
    (a back end that cannot seed its sampling, like a hosted API, ignores them)."""

    name: str

    def complete(self, prompts: Sequence[str], settings: SamplingSettings,
                 seeds: Sequence[int] | None = None) -> list[str | None]: ...

    def moderate(self, texts: Sequence[str]) -> list[bool]: ...


class WordListModeration:
    """The local stand-in for OpenAI's moderation endpoint: flags a text containing any of
    `words` as a whole word (case-insensitive). With no words it flags nothing, which is
    right for the miniature world, whose captions cannot be unsafe; for real captions with a
    local model, pass a word list (or plug in any classifier with the same call)."""

    def __init__(self, words: Sequence[str] = ()) -> None:
        self.words = tuple(w.lower() for w in words)
        self._pattern = re.compile(r"\b(" + "|".join(map(re.escape, self.words)) + r")\b", re.I) if words else None

    def __call__(self, texts: Sequence[str]) -> list[bool]:
        if self._pattern is None:
            return [False] * len(texts)
        return [bool(self._pattern.search(t)) for t in texts]
