"""The seed set: 700 hand-written-style triples of the miniature world, and readers of the
authors' released files.

The paper's seed set is 700 LAION captions for which people wrote an instruction and an
edited caption. Here a generator plays those people: it picks a scene and an edit, describes
the scene with a random caption variant, phrases the instruction the way people do (the
world's own `train` phrasings plus the extra everyday wordings below, sometimes with
"please", a capital letter or a full stop), and edits the caption minimally, keeping its
wording. The world's `heldout` phrasings never appear, so later notebooks can still ask
whether a model follows wordings it never saw.

The authors' files are JSON lines: `human-written-prompts.jsonl` has `input`, `edit`,
`output`; the generated `gpt-generated-prompts.jsonl` has the same fields, although their
generation script writes the caption as `caption` (and a `url`). `read_triples` accepts
either name for the caption.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.paths import data_dir
from ip2p_lib.infra.records import read_records, write_records
from ip2p_lib.text.format import TRIPLE_ALIASES, TRIPLE_FIELDS
from ip2p_lib.toyworld import (
    BACKGROUNDS, COLORS, EDIT_KINDS, SHAPES, Edit, Scene, apply, caption, instruction, sample_edit, sample_scene,
)
from ip2p_lib.toyworld.captions import random_caption_variant
from ip2p_lib.toyworld.edits import PHRASINGS, instruction_slots, phrasing_key

SEED_SIZE = 700
SEED_FILE = "toy/seed_edits.jsonl"

# Everyday wordings people use besides the world's own phrasings (same slots as
# `ip2p_lib.toyworld.edits.PHRASINGS`). None of them is, or contains, a held-out phrasing.
EXTRA_PHRASINGS: Mapping[str, tuple[str, ...]] = {
    "recolor": (
        "I want the {shape} to be {color}",
        "change it to {color}",
        "let's make it {color}",
        "{color} {shape} please",
        "the {shape} needs to be {color}",
        "switch the color to {color}",
    ),
    "reshape": (
        "make it into a {new_shape}",
        "I'd like a {new_shape} instead",
        "change the shape to a {new_shape}",
        "use a {new_shape} instead of a {shape}",
        "a {new_shape} would be better",
    ),
    "background": (
        "give it a {bg} background",
        "switch the background to {bg}",
        "let's have a {bg} background",
        "{bg} background please",
        "I want a {bg} background",
    ),
    "resize:large": (
        "make the {shape} a lot bigger",
        "make it larger please",
        "I want a bigger {shape}",
        "increase its size",
        "the {shape} is too small, make it bigger",
    ),
    "resize:small": (
        "make the {shape} a bit smaller",
        "decrease the size of the {shape}",
        "I want a smaller {shape}",
        "the {shape} is too big, make it smaller",
        "shrink the {shape} a little",
    ),
    "move": (
        "put it {at}",
        "I want the {shape} {at}",
        "let's move the {shape} {to}",
        "take the {shape} {to}",
        "move the {shape} over {to}",
    ),
}


@lru_cache(maxsize=1)
def heldout_patterns() -> tuple[re.Pattern, ...]:
    """One regular expression per held-out phrasing of the world, its slots filled by any
    world value or position phrase ("dye the {shape} {color}" -> "dye the (circle|...) (red|...)")."""
    values = "|".join([*SHAPES, *COLORS, *BACKGROUNDS])
    where = r"(?:to |in |at |on )?the (?:top|bottom|left|right|center|middle)(?: (?:left|right))?(?: corner)?"
    slot = rf"(?:{values}|{where})"
    return tuple(re.compile(re.sub(r"\\\{[a-z_]+\\\}", lambda _: slot, re.escape(template.lower())))
                 for table in PHRASINGS.values() for template in table["heldout"])


def uses_heldout_phrasing(text: str) -> bool:
    """True if an instruction contains one of the world's held-out phrasings."""
    return any(p.search(text.lower()) for p in heldout_patterns())


def human_instruction(edit: Edit, scene: Scene, rng: np.random.Generator) -> str:
    """An instruction as a person might type it: a world `train` phrasing (2 times in 3) or
    an everyday wording, then small habits of typing (please, a capital, a full stop)."""
    if rng.uniform() < 2 / 3:
        text = instruction(edit, scene, rng, split="train")
    else:
        templates = EXTRA_PHRASINGS[phrasing_key(edit)]
        pick = int(rng.integers(2))
        text = templates[int(rng.integers(len(templates)))].format(**instruction_slots(edit, scene, pick))
    if rng.uniform() < 0.1 and "please" not in text and not text.endswith("?"):
        text = "please " + text
    if rng.uniform() < 0.3:
        text = text[0].upper() + text[1:]
    if rng.uniform() < 0.2 and not text.endswith("?"):
        text += "."
    return text


def make_seed_triple(rng: np.random.Generator, kind: str) -> dict[str, str]:
    """One seed triple for an edit of `kind`: the caption of a random scene, an instruction,
    and the edited caption in the same wording (a move's captions both name the position)."""
    scene = sample_scene(rng)
    edit = sample_edit(scene, rng, kinds=(kind,))
    variant = random_caption_variant(rng, p_position=1.0 if kind == "move" else 0.5)
    text = human_instruction(edit, scene, rng)
    return {"input": caption(scene, **variant), "edit": text, "output": caption(apply(scene, edit), **variant)}


def make_seed_set(n: int = SEED_SIZE, seed: int = 0) -> list[dict[str, str]]:
    """`n` triples with distinct input captions, edit kinds in turn (every kind equally often)."""
    rng = np.random.default_rng(seed)
    triples: list[dict[str, str]] = []
    seen: set[str] = set()
    while len(triples) < n:
        triple = make_seed_triple(rng, EDIT_KINDS[len(triples) % len(EDIT_KINDS)])
        if triple["input"] not in seen:  # the paper's seed captions are distinct too
            seen.add(triple["input"])
            triples.append(triple)
    return triples


def read_triples(path: str | Path) -> list[dict[str, str]]:
    """Triples from a JSONL file in the authors' format, as dicts with `input`, `edit`, `output`.

    The caption may be named `input` (the released files) or `caption` (what the authors'
    generation script writes); other fields (`url`, ...) are kept."""
    triples = read_records(path, aliases=TRIPLE_ALIASES, required=TRIPLE_FIELDS, what="triples")
    if not triples:
        raise UserError(f"{path} holds no triples")
    return triples


def write_triples(triples: Iterable[Mapping[str, str]], path: str | Path) -> Path:
    """Write triples as JSON lines (`input`, `edit`, `output` first), atomically."""
    return write_records(({**{k: t[k] for k in TRIPLE_FIELDS}, **t} for t in triples), path)


def seed_path() -> Path:
    """`data/toy/seed_edits.jsonl`."""
    return data_dir() / SEED_FILE


def load_seed_set(path: str | Path | None = None) -> list[dict[str, str]]:
    """The committed toy seed set (or the triples at `path`, e.g. the authors' 700)."""
    path = Path(path) if path else seed_path()
    if not path.exists() and path == seed_path():
        raise UserError(f"the seed set {path} is missing; write it with `ip2p text seed`")
    return read_triples(path)
