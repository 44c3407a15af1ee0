"""filtering.report: the oracle's reasons on exact renders, the Wilson interval, the gallery."""

import math

import numpy as np
import pytest

from ip2p_lib.filtering.report import REASONS, oracle_reason, pair_gallery, precision_interval
from ip2p_lib.toyworld import Edit, Scene, apply, caption, render

SCENE = Scene("circle", "red", "gray", "large", u=0.42, v=0.5)  # the centre third of both axes
RECOLOR = Edit("recolor", "blue")
EDITED = apply(SCENE, RECOLOR)


def reason(image_1, scene_0=SCENE, captioned_0=SCENE, captioned_1=EDITED):
    return oracle_reason(render(scene_0), image_1, caption(captioned_0), caption(captioned_1))


def test_the_oracle_target_is_good():
    r = reason(render(EDITED))
    assert r.category == "" and r.drift < 0.05 and r.same_region


def test_a_drift_inside_the_region_is_named_with_its_size():
    r = reason(render(EDITED.replace(u=0.64)))
    assert r.category == "position drift"
    assert r.same_region is True and 0.17 < r.drift < 0.27
    assert "inside its region" in r.text


def test_an_unmade_edit_and_a_changed_attribute_are_named():
    assert reason(render(SCENE)).category == "edit not made"
    r = reason(render(EDITED.replace(shape="square")))
    assert r.category == "another attribute changed" and "shape circle -> square" in r.text


def test_image_0_unlike_its_caption_comes_first():
    said = SCENE.replace(shape="square")
    r = reason(render(EDITED.replace(u=0.64)), captioned_0=said, captioned_1=apply(said, RECOLOR))
    assert r.category == "image 0 unlike caption 0"
    assert "position drift" not in r.text and "moved" in r.text  # every problem is listed, the first named


def test_captions_without_one_edit():
    assert reason(render(EDITED), captioned_1=SCENE).category == REASONS[0]


def test_wilson_interval():
    z = 1.96
    assert precision_interval(0, 10) == pytest.approx((0.0, z * z / (10 + z * z)))  # closed form at p = 0
    lo, hi = precision_interval(8, 10)
    assert lo < 0.8 < hi
    assert precision_interval(2, 10) == pytest.approx((1 - hi, 1 - lo))  # symmetric in good / failed
    assert np.ptp(precision_interval(80, 100)) < hi - lo                 # narrower with more samples
    assert all(math.isnan(x) for x in precision_interval(0, 0))


def test_gallery_draws_one_panel_per_pair_and_says_when_there_is_none():
    import matplotlib

    matplotlib.use("Agg")
    images = np.stack([render(SCENE), render(EDITED)])
    scores = {k: np.array([0.9, 0.8]) for k in ("sim_0", "sim_1", "sim_direction", "sim_image")}
    fig = pair_gallery(images, images[::-1], ["a", "b"], ["c", "d"], scores, ["good", "moved"], [True, False], [0, 1])
    assert len([ax for ax in fig.axes if ax.images]) == 2
    empty = pair_gallery(images, images, ["a", "b"], ["c", "d"], scores, ["", ""], [True, True], [], title="kept")
    assert "kept: none" in [t.get_text() for ax in empty.axes for t in ax.texts]
