"""The miniature world: rendering, captions, edits and the oracle."""

import math

import numpy as np
import pytest
from PIL import Image

from ip2p_lib.toyworld import (
    BACKGROUNDS,
    COLORS,
    EDIT_KINDS,
    SHAPES,
    CaptionParseError,
    Edit,
    Scene,
    apply,
    attribute_accuracy,
    caption,
    degrade,
    edit_score,
    instruction,
    judge,
    parse_caption,
    possible_edits,
    random_caption,
    render,
    sample_edit,
    sample_scenes,
)
from ip2p_lib.toyworld.captions import CAPTION_TEMPLATES
from ip2p_lib.toyworld.edits import phrasings
from ip2p_lib.toyworld.render import coverage
from ip2p_lib.toyworld.scene import HORIZONTAL, REGION_CENTRES, VERTICAL, SIZE_RADIUS, region_centre, region_of


def test_palettes_are_public_disjoint_and_large_enough():
    assert len(SHAPES) >= 3 and len(COLORS) >= 6 and len(BACKGROUNDS) >= 4
    assert not set(COLORS) & set(BACKGROUNDS)
    for rgb in [*COLORS.values(), *BACKGROUNDS.values()]:
        assert len(rgb) == 3 and all(0 <= c <= 255 for c in rgb)


def test_regions_are_thirds_of_each_axis_and_centres_lie_in_them():
    assert region_of(0.0, 0.0) == ("left", "top") and region_of(1.0, 1.0) == ("right", "bottom")
    assert region_of(0.34, 0.66) == ("center", "middle") and region_of(0.32, 0.67) == ("left", "bottom")
    for h in HORIZONTAL:
        for v in VERTICAL:
            u, w = region_centre((h, v))
            assert region_of(u, w) == (h, v) and {u, w} <= set(REGION_CENTRES)
            scene = Scene("circle", "red", "gray", "small", u=u, v=w)
            assert (scene.hpos, scene.vpos) == (h, v) and judge(render(scene)).attributes()["hpos"] == h


def test_render_is_deterministic_and_sized():
    s = Scene("triangle", "purple", "beige", "small", 0.3, 0.7)
    a, b = render(s), render(s)
    assert a.dtype == np.uint8 and a.shape == (64, 64, 3)
    assert a.tobytes() == b.tobytes()
    assert render(s, 128).shape == (128, 128, 3)


@pytest.mark.parametrize("shape,area_factor", [("circle", math.pi), ("square", 4.0), ("triangle", 2.0)])
@pytest.mark.parametrize("size", ["small", "large"])
def test_coverage_has_the_shapes_true_area(shape, area_factor, size):
    s = Scene(shape, "red", "gray", size, 0.41, 0.63)
    r = SIZE_RADIUS[size] * 64
    assert coverage(s).sum() == pytest.approx(area_factor * r * r, rel=0.02)


def test_render_is_antialiased_and_uses_the_palette():
    img = render(Scene("circle", "blue", "white", "large"))
    colours = {tuple(p) for p in img.reshape(-1, 3)}
    assert tuple(COLORS["blue"]) in colours and tuple(BACKGROUNDS["white"]) in colours
    assert len(colours) > 2  # edge pixels are blends


def test_captions_round_trip_through_the_parser():
    rng = np.random.default_rng(0)
    for s in sample_scenes(300, seed=3):
        for text in (caption(s), random_caption(s, rng, p_position=1.0), random_caption(s, rng, p_position=0.0)):
            parsed = parse_caption(text)
            for key in ("shape", "color", "background", "size"):
                assert parsed[key] == getattr(s, key), text
            if parsed["hpos"] is not None:
                assert (parsed["hpos"], parsed["vpos"]) == (s.hpos, s.vpos), text


def test_caption_variants_are_varied():
    s = Scene("circle", "red", "gray", "large")
    variants = {caption(s, t, p, syn) for t in range(len(CAPTION_TEMPLATES)) for p in (0, 1) for syn in (0, 1)}
    assert len(variants) == len(CAPTION_TEMPLATES) * 4
    assert caption(s) == "a large red circle on a gray background"
    assert "against gray" in caption(s, template=1)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("", "empty"),
        ("a large red circle near a gray background", "unknown word"),
        ("a large red blue circle on gray", "object colour"),
        ("a large red on a gray background", "no shape"),
        ("a red circle on a gray background", "size"),
        ("a large red circle on the left on the right on gray", "contradictory"),
    ],
)
def test_parse_caption_says_why_it_rejects(text, reason):
    with pytest.raises(CaptionParseError, match=reason):
        parse_caption(text)


def test_every_edit_kind_has_ten_train_phrasings_and_a_disjoint_heldout_split():
    s = Scene("circle", "red", "gray", "small")
    for kind in EDIT_KINDS:
        for e in possible_edits(s, kind)[:2]:
            train, held = phrasings(e, "train"), phrasings(e, "heldout")
            assert len(set(train)) >= 10 and len(held) >= 3
            assert not set(train) & set(held)


def test_default_sampler_never_uses_heldout_phrasings():
    rng = np.random.default_rng(0)
    s = Scene("square", "green", "black", "large", 0.5, 0.5)
    for kind in EDIT_KINDS:
        e = possible_edits(s, kind)[0]
        held = {instruction(e, s, split="heldout", index=i) for i in range(3)}
        seen = {instruction(e, s, rng) for _ in range(300)}
        assert not seen & held
        assert len(seen) >= 10


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_apply_changes_exactly_the_edited_attribute(kind):
    rng = np.random.default_rng(1)
    for s in sample_scenes(50, seed=4):
        e = sample_edit(s, rng, kinds=(kind,))
        t = apply(s, e)
        changed = {k for k in s.attributes() if s.attributes()[k] != t.attributes()[k]}
        expected = set(e.target_attributes())
        assert changed and changed <= expected
        assert all(t.attributes()[k] == v for k, v in e.target_attributes().items())
        if kind != "move":
            assert (t.u, t.v) == (s.u, s.v)


def test_edit_validates_its_target():
    with pytest.raises(ValueError, match="not a target"):
        Edit("recolor", "gray")
    with pytest.raises(ValueError, match="unknown edit kind"):
        Edit("rotate", "left")


def test_oracle_reads_clean_renders_exactly():
    scenes = sample_scenes(400, seed=11)
    acc = attribute_accuracy(scenes, [render(s) for s in scenes])
    for key in ("shape", "color", "background", "size", "hpos", "vpos"):
        assert acc[key] >= 0.99, (key, acc)
    assert acc["uv_error"] < 0.01


def test_oracle_survives_blur_and_noise():
    scenes = sample_scenes(200, seed=12)
    images = [degrade(render(s), noise_std=15, blur_sigma=1.0, seed=i) for i, s in enumerate(scenes)]
    acc = attribute_accuracy(scenes, images)
    assert acc["all"] >= 0.97, acc


def test_oracle_accepts_pil_and_float_images_and_rejects_wrong_shapes():
    s = Scene("square", "orange", "black", "large", 0.2, 0.9)
    img = render(s)
    assert judge(Image.fromarray(img)).attributes() == s.attributes()
    assert judge(img.astype(np.float32) / 255).attributes() == s.attributes()
    with pytest.raises(ValueError, match="shape"):
        judge(img[..., 0])


def test_oracle_reports_no_object_on_an_empty_image():
    empty = np.full((64, 64, 3), BACKGROUNDS["gray"], dtype=np.uint8)
    j = judge(empty)
    assert not j.found and j.background == "gray"


def test_edit_score_tells_success_from_failure():
    s = Scene("circle", "red", "gray", "large", 0.5, 0.5)
    e = Edit("recolor", "blue")
    inp = render(s)
    good = edit_score(inp, render(apply(s, e)), e, input_scene=s)
    assert good.success and good.target_l1 == 0.0
    lazy = edit_score(inp, inp, e, input_scene=s)
    assert not lazy.changed and lazy.preserved and lazy.target_l1 > 0
    wrong_colour = edit_score(inp, render(s.replace(color="green")), e)
    assert not wrong_colour.changed
    collateral = edit_score(inp, render(s.replace(color="blue", shape="square")), e)
    assert collateral.changed and not collateral.preserved
    moved = edit_score(inp, render(s.replace(color="blue", u=0.0)), e)
    assert moved.changed and not moved.preserved
