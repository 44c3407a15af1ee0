"""The miniature world: scenes whose ground truth is known, captions, edits and the oracle.

    >>> from ip2p_lib.toyworld import Scene, render, caption, Edit, apply, judge
    >>> s = Scene("circle", "red", "gray", "large")
    >>> caption(s)
    'a large red circle on a gray background'
    >>> judge(render(apply(s, Edit("recolor", "blue")))).color
    'blue'
"""

from ip2p_lib.toyworld.captions import CaptionParseError, caption, parse_caption, random_caption
from ip2p_lib.toyworld.edits import EDIT_KINDS, Edit, apply, instruction, possible_edits, sample_edit
from ip2p_lib.toyworld.oracle import (
    EditScore,
    Judgement,
    attribute_accuracy,
    degradation_curve,
    degrade,
    edit_score,
    judge,
)
from ip2p_lib.toyworld.render import render
from ip2p_lib.toyworld.scene import (
    BACKGROUNDS,
    COLORS,
    HORIZONTAL,
    SHAPES,
    SIZES,
    VERTICAL,
    Scene,
    sample_scene,
    sample_scenes,
)

__all__ = [
    "BACKGROUNDS", "COLORS", "EDIT_KINDS", "HORIZONTAL", "SHAPES", "SIZES", "VERTICAL",
    "CaptionParseError", "Edit", "EditScore", "Judgement", "Scene",
    "apply", "attribute_accuracy", "caption", "degradation_curve", "degrade", "edit_score", "instruction", "judge",
    "parse_caption", "possible_edits", "random_caption", "render",
    "sample_edit", "sample_scene", "sample_scenes",
]
