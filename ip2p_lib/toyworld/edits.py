"""Typed edits of scenes and the many ways people phrase them.

An `Edit` is a kind plus a target value; `apply(scene, edit)` gives the edited scene, so the
oracle target of any edit is `render(apply(scene, edit))` and its edited caption is
`caption(apply(scene, edit))`. Each kind has at least 10 phrasings in the `train` split and
a few more in the `heldout` split, which the default sampler never uses: later notebooks
measure whether a model follows wordings it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ip2p_lib.toyworld.captions import POSITION_PHRASES
from ip2p_lib.toyworld.scene import BACKGROUNDS, COLORS, HORIZONTAL, SHAPES, SIZES, VERTICAL, Scene, region_centre

EDIT_KINDS: tuple[str, ...] = ("recolor", "reshape", "background", "resize", "move")

# Which scene attributes each kind of edit changes.
EDITED_ATTRIBUTES: Mapping[str, tuple[str, ...]] = {
    "recolor": ("color",),
    "reshape": ("shape",),
    "background": ("background",),
    "resize": ("size",),
    "move": ("hpos", "vpos"),
}

# Slots: {shape} current shape, {new_shape}, {color} target colour, {old_color},
# {bg} target background, {old_bg}, {to} "to the top left", {at} "in the top left".
PHRASINGS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "recolor": {
        "train": (
            "make the {shape} {color}",
            "turn it {color}",
            "what if the {shape} were {color}?",
            "paint the {shape} {color}",
            "color it {color}",
            "change the color of the {shape} to {color}",
            "make it {color} instead of {old_color}",
            "recolor the {shape} {color}",
            "the {shape} should be {color}",
            "give the {shape} a {color} color",
            "swap the {old_color} for {color}",
            "turn the {old_color} {shape} {color}",
        ),
        "heldout": ("dye the {shape} {color}", "can you make it {color}?", "let the {shape} turn {color}"),
    },
    "reshape": {
        "train": (
            "turn the {shape} into a {new_shape}",
            "make it a {new_shape}",
            "change the {shape} to a {new_shape}",
            "what if it were a {new_shape}?",
            "replace the {shape} with a {new_shape}",
            "make the {shape} a {new_shape} instead",
            "transform the {shape} into a {new_shape}",
            "it should be a {new_shape}",
            "swap the {shape} for a {new_shape}",
            "draw a {new_shape} instead of the {shape}",
        ),
        "heldout": (
            "morph the {shape} into a {new_shape}",
            "can it be a {new_shape}?",
            "reshape it into a {new_shape}",
        ),
    },
    "background": {
        "train": (
            "make the background {bg}",
            "change the background to {bg}",
            "put it on a {bg} background",
            "what if the background were {bg}?",
            "paint the background {bg}",
            "use a {bg} background",
            "turn the background {bg}",
            "set it against {bg}",
            "the background should be {bg}",
            "swap the {old_bg} background for a {bg} one",
        ),
        "heldout": (
            "give it a {bg} backdrop",
            "recolor the background {bg}",
            "can the background be {bg}?",
        ),
    },
    "resize:large": {
        "train": (
            "make the {shape} bigger",
            "enlarge the {shape}",
            "make it larger",
            "grow the {shape}",
            "scale it up",
            "what if the {shape} were bigger?",
            "increase the size of the {shape}",
            "make it big",
            "the {shape} should be larger",
            "blow up the {shape}",
        ),
        "heldout": ("can you make it bigger?", "double the size of the {shape}", "make the {shape} huge"),
    },
    "resize:small": {
        "train": (
            "make the {shape} smaller",
            "shrink the {shape}",
            "make it smaller",
            "scale it down",
            "what if the {shape} were smaller?",
            "reduce the size of the {shape}",
            "make it small",
            "the {shape} should be smaller",
            "make the {shape} tiny",
            "shrink it down",
        ),
        "heldout": ("can you make it smaller?", "halve the size of the {shape}", "make the {shape} little"),
    },
    "move": {
        "train": (
            "move the {shape} {to}",
            "move it {to}",
            "shift the {shape} {to}",
            "put the {shape} {at}",
            "what if the {shape} were {at}?",
            "slide the {shape} {to}",
            "push it {to}",
            "drag the {shape} {to}",
            "place the {shape} {at}",
            "the {shape} should be {at}",
            "relocate the {shape} {to}",
        ),
        "heldout": ("nudge the {shape} {to}", "can you move it {to}?", "have the {shape} sit {at}"),
    },
}

# Region -> "to the ..." phrases for move instructions: each position phrase with "to" for its
# preposition ("in the top left" -> "to the top left", "at the top" -> "to the top").
MOVE_TO_PHRASES: Mapping[tuple[str, str], tuple[str, ...]] = {
    region: tuple("to " + phrase.split(" ", 1)[1] for phrase in phrases) for region, phrases in POSITION_PHRASES.items()
}

SPLITS: tuple[str, ...] = ("train", "heldout", "all")


@dataclass(frozen=True)
class Edit:
    """A typed edit: `kind` in EDIT_KINDS, `value` the target (a move's is "h/v", e.g. "left/top")."""

    kind: str
    value: str

    def __post_init__(self) -> None:
        allowed: Mapping[str, tuple[str, ...]] = {
            "recolor": tuple(COLORS),
            "reshape": SHAPES,
            "background": tuple(BACKGROUNDS),
            "resize": SIZES,
            "move": tuple(f"{h}/{v}" for h in HORIZONTAL for v in VERTICAL),
        }
        if self.kind not in allowed:
            raise ValueError(f"unknown edit kind {self.kind!r}; kinds are {', '.join(EDIT_KINDS)}")
        if self.value not in allowed[self.kind]:
            raise ValueError(f"{self.value!r} is not a target of a {self.kind} edit: {', '.join(allowed[self.kind])}")

    @property
    def region(self) -> tuple[str, str]:
        """A move's target region (horizontal, vertical)."""
        h, v = self.value.split("/")
        return h, v

    def target_attributes(self) -> dict[str, str]:
        """The attributes this edit sets, with their target values."""
        if self.kind == "move":
            h, v = self.region
            return {"hpos": h, "vpos": v}
        return {EDITED_ATTRIBUTES[self.kind][0]: self.value}


def apply(scene: Scene, edit: Edit) -> Scene:
    """The edited scene. A move puts the shape at the centre of its target region."""
    if edit.kind == "recolor":
        return scene.replace(color=edit.value)
    if edit.kind == "reshape":
        return scene.replace(shape=edit.value)
    if edit.kind == "background":
        return scene.replace(background=edit.value)
    if edit.kind == "resize":
        return scene.replace(size=edit.value)
    u, v = region_centre(edit.region)
    return scene.replace(u=u, v=v)


def possible_edits(scene: Scene, kind: str) -> list[Edit]:
    """Every edit of `kind` that changes `scene`."""
    if kind == "recolor":
        return [Edit(kind, c) for c in COLORS if c != scene.color]
    if kind == "reshape":
        return [Edit(kind, s) for s in SHAPES if s != scene.shape]
    if kind == "background":
        return [Edit(kind, b) for b in BACKGROUNDS if b != scene.background]
    if kind == "resize":
        return [Edit(kind, s) for s in SIZES if s != scene.size]
    if kind == "move":
        here = (scene.hpos, scene.vpos)
        return [Edit(kind, f"{h}/{v}") for h in HORIZONTAL for v in VERTICAL if (h, v) != here]
    raise ValueError(f"unknown edit kind {kind!r}; kinds are {', '.join(EDIT_KINDS)}")


def sample_edit(scene: Scene, rng: np.random.Generator, kinds: tuple[str, ...] = EDIT_KINDS) -> Edit:
    """A random edit that changes the scene: kind uniform over `kinds`, then target uniform."""
    options = possible_edits(scene, kinds[int(rng.integers(len(kinds)))])
    return options[int(rng.integers(len(options)))]


def phrasing_key(edit: Edit) -> str:
    """The key of `PHRASINGS` for this edit: its kind, and the direction for a resize."""
    return f"resize:{edit.value}" if edit.kind == "resize" else edit.kind


def phrasings(edit: Edit, split: str = "train") -> tuple[str, ...]:
    """The instruction templates for this edit's kind (and direction, for resize)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    table = PHRASINGS[phrasing_key(edit)]
    return table["train"] + table["heldout"] if split == "all" else table[split]


def instruction_slots(edit: Edit, scene: Scene, pick: int = 0) -> dict[str, str]:
    """What fills each slot of a phrasing (see `PHRASINGS`) for `edit` on `scene`; `pick`
    chooses among a region's position phrases ("in the top left" or "... corner")."""
    region = edit.region if edit.kind == "move" else (scene.hpos, scene.vpos)
    return {
        "shape": scene.shape,
        "new_shape": edit.value if edit.kind == "reshape" else scene.shape,
        "color": edit.value if edit.kind == "recolor" else scene.color,
        "old_color": scene.color,
        "bg": edit.value if edit.kind == "background" else scene.background,
        "old_bg": scene.background,
        "to": MOVE_TO_PHRASES[region][pick % len(MOVE_TO_PHRASES[region])],
        "at": POSITION_PHRASES[region][pick % len(POSITION_PHRASES[region])],
    }


def instruction(
    edit: Edit, scene: Scene, rng: np.random.Generator | None = None, split: str = "train", index: int | None = None
) -> str:
    """An English instruction for `edit` on `scene`, a template drawn at random from `split`
    (or number `index`). Held-out phrasings appear only with split="heldout" or "all"."""
    templates = phrasings(edit, split)
    if index is None:
        index = int((rng or np.random.default_rng()).integers(len(templates)))
    template = templates[index % len(templates)]
    pick = 0 if rng is None else int(rng.integers(2))
    return template.format(**instruction_slots(edit, scene, pick))
