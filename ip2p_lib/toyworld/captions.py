"""English captions of scenes, and a strict parser that reads them back.

Captions come in a few natural variants (templates, synonyms for sizes, an optional
position phrase) so that the world's language models see language, not one template.
`parse_caption` accepts exactly the world's vocabulary and says why it rejects a text:
that is what lets notebook 01 score generated captions exactly.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from ip2p_lib.toyworld.scene import BACKGROUNDS, COLORS, HORIZONTAL, SHAPES, SIZES, VERTICAL, Scene, region_centre

SIZE_WORDS: Mapping[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}

# "{obj}" is "a <size> <colour> <shape>" followed by the position phrase, if any.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{obj} on a {bg} background",
    "{obj} against {bg}",
    "a {bg} background with {obj}",
    "a picture of {obj} on {bg}",
    "there is {obj} on a {bg} background",
    "{obj} in front of a {bg} background",
)

# Region (horizontal, vertical) -> phrases that place an object there ("in the top left").
POSITION_PHRASES: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("left", "top"): ("in the top left", "in the top left corner"),
    ("center", "top"): ("at the top",),
    ("right", "top"): ("in the top right", "in the top right corner"),
    ("left", "middle"): ("on the left",),
    ("center", "middle"): ("in the center", "in the middle"),
    ("right", "middle"): ("on the right",),
    ("left", "bottom"): ("in the bottom left", "in the bottom left corner"),
    ("center", "bottom"): ("at the bottom",),
    ("right", "bottom"): ("in the bottom right", "in the bottom right corner"),
}


class CaptionParseError(ValueError):
    """A text that is not a caption of the miniature world; the message says why."""


def caption(
    scene: Scene,
    template: int = 0,
    with_position: bool = False,
    size_synonym: int = 0,
    position_variant: int = 0,
) -> str:
    """The scene in English. Variant 0 of everything is the canonical caption."""
    size_word = SIZE_WORDS[scene.size][size_synonym % 2]
    obj = f"a {size_word} {scene.color} {scene.shape}"
    if with_position:
        phrases = POSITION_PHRASES[(scene.hpos, scene.vpos)]
        obj += " " + phrases[position_variant % len(phrases)]
    return CAPTION_TEMPLATES[template % len(CAPTION_TEMPLATES)].format(obj=obj, bg=scene.background)


def random_caption_variant(rng: np.random.Generator, p_position: float = 0.5) -> dict[str, Any]:
    """The keyword arguments of `caption` drawn at random (the position phrase with `p_position`):
    keep them to describe several scenes in one wording."""
    return dict(
        template=int(rng.integers(len(CAPTION_TEMPLATES))),
        with_position=bool(rng.uniform() < p_position),
        size_synonym=int(rng.integers(2)),
        position_variant=int(rng.integers(2)),
    )


def random_caption(scene: Scene, rng: np.random.Generator, p_position: float = 0.5) -> str:
    """A caption with every variant drawn at random; the position phrase with `p_position`."""
    return caption(scene, **random_caption_variant(rng, p_position))


def _vocabulary() -> frozenset[str]:
    words: set[str] = set(SHAPES) | set(COLORS) | set(BACKGROUNDS)
    words |= {w for ws in SIZE_WORDS.values() for w in ws}
    for text in (*CAPTION_TEMPLATES, *(p for ps in POSITION_PHRASES.values() for p in ps)):
        words |= set(words_of(text.replace("{obj}", "").replace("{bg}", "")))
    return frozenset(words)


def words_of(text: str) -> list[str]:
    """The lower-case words of a text, punctuation and digits dropped (how the world reads text)."""
    return re.findall(r"[a-z]+", text.lower())


_SIZE_OF_WORD = {w: size for size, ws in SIZE_WORDS.items() for w in ws}
_VOCABULARY = _vocabulary()


def _exactly_one(words: list[str], allowed: Mapping[str, str] | tuple[str, ...], what: str, text: str) -> str:
    found = [w for w in words if w in allowed]
    if len(found) != 1:
        problem = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise CaptionParseError(f"{problem} {what} word in caption {text!r}; expected exactly one")
    return allowed[found[0]] if isinstance(allowed, Mapping) else found[0]


def parse_caption(text: str) -> dict[str, str | None]:
    """Read a caption back into attributes: shape, color, background, size, hpos, vpos.

    `hpos`/`vpos` are None when the caption names no position. Raises `CaptionParseError`
    naming the problem when the text uses a word outside the world's vocabulary or does not
    name exactly one shape, colour, background colour and size."""
    if not isinstance(text, str) or not text.strip():
        raise CaptionParseError("empty caption")
    words = words_of(text)
    unknown = sorted({w for w in words if w not in _VOCABULARY})
    if unknown:
        raise CaptionParseError(f"unknown word(s) {', '.join(unknown)} in caption {text!r}")
    attrs: dict[str, str | None] = {
        "shape": _exactly_one(words, SHAPES, "shape", text),
        "color": _exactly_one(words, tuple(COLORS), "object colour", text),
        "background": _exactly_one(words, tuple(BACKGROUNDS), "background colour", text),
        "size": _exactly_one(words, _SIZE_OF_WORD, "size", text),
    }
    horizontal = [w for w in words if w in ("left", "right")]
    vertical = [w for w in words if w in ("top", "bottom")]
    centred = [w for w in words if w in ("center", "middle")]
    if len(horizontal) > 1 or len(vertical) > 1 or len(centred) > 1:
        raise CaptionParseError(f"contradictory position words in caption {text!r}")
    if horizontal or vertical or centred:
        if centred and (horizontal or vertical):
            raise CaptionParseError(f"contradictory position words in caption {text!r}")
        attrs["hpos"] = horizontal[0] if horizontal else "center"
        attrs["vpos"] = vertical[0] if vertical else "middle"
    else:
        attrs["hpos"] = attrs["vpos"] = None
    assert attrs["hpos"] in (None, *HORIZONTAL) and attrs["vpos"] in (None, *VERTICAL)
    return attrs


def all_captions() -> list[str]:
    """Every distinct caption the world can produce (for held-out splits and vocabularies)."""
    out = []
    for shape in SHAPES:
        for color in COLORS:
            for bg in BACKGROUNDS:
                for size in SIZES:
                    for (h, v), phrases in POSITION_PHRASES.items():
                        u_c, v_c = region_centre((h, v))
                        scene = Scene(shape, color, bg, size, u=u_c, v=v_c)
                        for t in range(len(CAPTION_TEMPLATES)):
                            for syn in range(2):
                                if (h, v) == ("center", "middle"):
                                    out.append(caption(scene, t, False, syn))
                                for pv in range(len(phrases)):
                                    out.append(caption(scene, t, True, syn, pv))
    return sorted(set(out))
