"""The oracle's verdict on generated pairs: the edit read from a caption pair, and each failure kind."""

from __future__ import annotations

import numpy as np
import pytest

from ip2p_lib.p2p.evaluate import edit_from_captions, oracle_verdicts
from ip2p_lib.toyworld import Edit, Scene, apply, caption, render


@pytest.mark.parametrize("c0, c1, edit", [
    ("a large red circle on a gray background", "a large blue circle on a gray background", Edit("recolor", "blue")),
    ("a large red circle on a gray background", "a small red circle on a gray background", Edit("resize", "small")),
    ("a large red circle on a gray background", "a large red circle on a gray background at the top left",
     Edit("move", "left/top")),
    ("a large red circle on a gray background", "a large red circle on a gray background", None),  # no change
    ("a large red circle on a gray background", "a small blue circle on a gray background", None),  # two changes
    ("a large red circle on a gray background", "a photo of a dog", None),                        # not the world
])
def test_edit_from_captions(c0, c1, edit):
    assert edit_from_captions(c0, c1) == edit


def test_oracle_verdicts_on_rendered_pairs():
    scene = Scene("circle", "red", "gray", "large", u=0.5, v=0.5)
    recolor = Edit("recolor", "blue")
    c0, c1 = caption(scene), caption(apply(scene, recolor))
    good = render(apply(scene, recolor))
    unchanged = render(scene)
    drifted = render(apply(scene, recolor).replace(u=0.8))
    lost_shape = render(apply(scene, recolor).replace(shape="square"))
    image_0 = np.stack([render(scene)] * 4)
    image_1 = np.stack([good, unchanged, drifted, lost_shape])
    v = oracle_verdicts(image_0, image_1, [c0] * 4, [c1] * 4)
    assert list(v["kind"]) == ["recolor"] * 4
    assert list(v["changed"]) == [True, False, True, True]
    assert list(v["preserved"]) == [True, True, False, False]
    assert list(v["success"]) == [True, False, False, False]
    assert v["faithful_0"].all()
    assert v["drift"][0] < 0.02 and 0.25 < v["drift"][2] < 0.35
    wrong_caption = oracle_verdicts(image_0[:1], image_1[:1], [c0.replace("red", "green")], [c1])
    assert not wrong_caption["faithful_0"][0]


def test_toy_caption_pairs_give_readable_edits_of_each_kind():
    from ip2p_lib.p2p.sweep import toy_caption_pairs

    kinds = ("recolor", "reshape", "background", "resize", "move")
    pairs = toy_caption_pairs(20, seed=3, kinds=kinds, p_position=0.0)
    found = [edit_from_captions(c0, c1) for c0, c1 in pairs]
    assert [e.kind for e in found] == [kinds[i % 5] for i in range(20)]  # a move names both places
