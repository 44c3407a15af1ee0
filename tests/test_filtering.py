"""The CLIP filter (§3.1.2): the four similarities, CLIP's preprocessing, and which samples are kept."""

import numpy as np
import pytest
import torch
from PIL import Image

from ip2p_lib.filtering import PAPER, SCORE_NAMES, ClipScorer, Thresholds, as_unit_images, passes, select, similarities
from ip2p_lib.toyworld import render, sample_scenes


@pytest.fixture(scope="module")
def clip():
    from ip2p_lib.infra.models import load_clip

    return load_clip("toy")  # (model, open_clip's PIL preprocess, tokenizer)


@pytest.fixture(scope="module")
def scorer(clip):
    model, _, tokenizer = clip
    return ClipScorer(model, tokenizer)


@pytest.fixture(scope="module")
def pictures() -> np.ndarray:
    return np.stack([render(s) for s in sample_scenes(4, seed=3)])  # (4, 64, 64, 3) uint8


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _by_hand(i0, i1, t0, t1) -> dict[str, np.ndarray]:
    """The authors' ClipSimilarity in numpy float64: normalise every embedding, then cosines."""
    i0, i1, t0, t1 = (_unit(np.asarray(x, dtype=np.float64)) for x in (i0, i1, t0, t1))
    dot = lambda a, b: (a * b).sum(-1)  # noqa: E731
    di, dt = i1 - i0, t1 - t0
    return {"sim_0": dot(i0, t0), "sim_1": dot(i1, t1), "sim_image": dot(i0, i1),
            "sim_direction": dot(di, dt) / (np.linalg.norm(di, axis=-1) * np.linalg.norm(dt, axis=-1))}


# ---------------------------------------------------------------- the four scores


def test_similarities_against_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    i0, i1, t0, t1 = (torch.randn(5, 16, generator=gen) for _ in range(4))
    ours = similarities(i0, i1, t0, t1)
    hand = _by_hand(i0.numpy(), i1.numpy(), t0.numpy(), t1.numpy())
    assert set(ours) == set(SCORE_NAMES)
    for name in SCORE_NAMES:
        assert ours[name].shape == (5,)
        np.testing.assert_allclose(ours[name], hand[name], atol=1e-6, err_msg=name)
    scaled = similarities(3 * i0, 0.5 * i1, 7 * t0, t1)  # embeddings of any length: normalised first
    for name in SCORE_NAMES:
        np.testing.assert_allclose(scaled[name], hand[name], atol=1e-6, err_msg=name)
    # the direction is taken between normalised embeddings: unnormalised differences give another number
    unnormalised = torch.nn.functional.cosine_similarity(i1 - 3 * i0, t1 - t0).numpy()
    assert np.abs(unnormalised - hand["sim_direction"]).max() > 0.1


def test_scores_equal_open_clip_embeddings_by_hand(clip, scorer, pictures):
    """ClipScorer.scores = similarities of the model's own embeddings, computed with open_clip's
    PIL preprocessing and encode_image / encode_text one by one."""
    model, preprocess, tokenizer = clip
    image_0, image_1 = pictures[:3], pictures[1:]
    caption_0 = ["a large red circle on a gray background", "a small blue square on a white background",
                 "a large red circle on a gray background"]  # a repeated caption: one embedding, used twice
    caption_1 = ["a large green circle on a gray background", "a small blue square on a black background",
                 "a small red circle on a gray background"]
    def emb_i(images):
        return model.encode_image(torch.stack([preprocess(Image.fromarray(x)) for x in images])).numpy()

    def emb_t(captions):
        return model.encode_text(tokenizer(captions)).numpy()

    with torch.no_grad():
        hand = _by_hand(emb_i(image_0), emb_i(image_1), emb_t(caption_0), emb_t(caption_1))
    ours = scorer.scores(image_0, image_1, caption_0, caption_1)
    for name in SCORE_NAMES:
        np.testing.assert_allclose(ours[name], hand[name], atol=1e-5, err_msg=name)
    assert np.ptp(ours["sim_image"]) > 1e-3  # three different pairs, three different scores
    with pytest.raises(ValueError, match="as many images as captions"):
        scorer.scores(image_0, image_1, caption_0[:2], caption_1)


# ---------------------------------------------------------------- images CLIP can take


def test_as_unit_images_accepts_uint8_and_unit_floats():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = as_unit_images(u8)
    assert x.shape == (2, 3, 5, 7) and x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(as_unit_images(x), x)  # already in [0, 1]


@pytest.mark.parametrize("values, hint", [((-1.0, 1.0), r"\(x \+ 1\) / 2"), ((0.0, 255.0), "divide by 255"),
                                         ((-1.8, 1.9), "already normalised")])
def test_as_unit_images_refuses_other_ranges_and_says_what_to_do(values, hint):
    lo, hi = values
    x = torch.linspace(lo, hi, 3 * 4 * 4).view(1, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\]") as err:
        as_unit_images(x)
    assert err.match(hint)


@pytest.mark.parametrize("bad", [np.zeros((2, 4, 4), np.uint8), np.zeros((1, 4, 4, 4), np.uint8),
                                 torch.zeros(1, 4, 4, 3), torch.zeros(1, 3, 4, 4, dtype=torch.int64)])
def test_as_unit_images_refuses_wrong_shapes_and_types(bad):
    with pytest.raises(ValueError, match="images must be"):
        as_unit_images(bad)


# ---------------------------------------------------------------- preprocessing = open_clip's


@pytest.mark.parametrize("size", [None, (80, 100), (100, 80)], ids=["64x64", "80x100", "100x80"])
def test_preprocess_equals_open_clip_pil_preprocess(clip, scorer, pictures, size):
    """Same tensors as open_clip's own PIL transform (resize the shorter side, bicubic, centre crop,
    CLIP mean/std): exact at the model's size; after a resize within 1.5 8-bit levels, 0.1 on
    average (PIL resamples uint8 with fixed-point weights and rounds to uint8, we keep floats;
    measured: 1.28 and 0.036)."""
    _, preprocess, _ = clip
    images = pictures if size is None else np.stack(
        [np.asarray(Image.fromarray(x).resize(size, Image.LANCZOS)) for x in pictures])  # size = (width, height)
    ours = scorer.preprocess(images)
    theirs = torch.stack([preprocess(Image.fromarray(x)) for x in images])
    assert ours.shape == theirs.shape == (len(images), 3, 64, 64)
    levels = ((ours - theirs) * scorer.std).abs() * 255  # back to 8-bit pixel levels
    if size is None:
        assert torch.allclose(ours, theirs, atol=1e-6)
    else:
        assert levels.max() <= 1.5 and levels.mean() <= 0.1, (float(levels.max()), float(levels.mean()))
    # an image used as is, without the crop, would be far from this
    if size is not None:
        naive = (as_unit_images(images)[..., :64, :64] - scorer.mean) / scorer.std
        assert ((naive - theirs) * scorer.std).abs().mean() * 255 > 5


# ---------------------------------------------------------------- the filter


def _table() -> tuple[dict[str, np.ndarray], list]:
    """12 samples of two caption pairs A and B; the comments say why each passes or fails."""
    rows = [  # (group, sim_0, sim_1, sim_direction, sim_image)
        ("A", 0.30, 0.30, 0.50, 0.90),  # 0 passes
        ("A", 0.30, 0.30, 0.40, 0.90),  # 1 passes
        ("A", 0.30, 0.30, 0.90, 0.60),  # 2 fails sim_image
        ("A", 0.30, 0.30, 0.60, 0.74),  # 3 fails sim_image (just under 0.75)
        ("A", 0.19, 0.30, 0.80, 0.90),  # 4 fails sim_0
        ("A", 0.30, 0.19, 0.80, 0.90),  # 5 fails sim_1
        ("A", 0.30, 0.30, 0.19, 0.90),  # 6 fails sim_direction
        ("A", 0.20, 0.20, 0.20, 0.75),  # 7 passes: exactly at every threshold
        ("A", 0.30, 0.30, 0.45, 0.80),  # 8 passes
        ("A", 0.30, 0.30, 0.40, 0.95),  # 9 passes, ties sample 1 on sim_direction
        ("B", 0.25, 0.25, 0.21, 0.76),  # 10 passes: weak, but B's best
        ("B", 0.25, 0.25, 0.10, 0.76),  # 11 fails sim_direction
    ]
    groups = [r[0] for r in rows]
    cols = np.array([r[1:] for r in rows], dtype=np.float64).T
    scores = {"sim_0": cols[0], "sim_1": cols[1], "sim_direction": cols[2], "sim_image": cols[3]}
    return scores, groups


def test_passes_checks_each_threshold():
    scores, _ = _table()
    assert np.flatnonzero(passes(scores, PAPER)).tolist() == [0, 1, 7, 8, 9, 10]
    code = passes(scores, Thresholds(sim_image=0.7))  # the authors' code: sim_image >= 0.7
    assert np.flatnonzero(code).tolist() == [0, 1, 3, 7, 8, 9, 10]


def test_select_keeps_the_best_per_caption_pair():
    scores, groups = _table()
    # A passes 0 (0.50), 1 (0.40), 7 (0.20), 8 (0.45), 9 (0.40): the best four by sim_direction are
    # 0, 8, then 1 and 9 (tied: earlier first); 7 is dropped. B keeps its one passing sample.
    assert np.flatnonzero(select(scores, groups, PAPER)).tolist() == [0, 1, 8, 9, 10]
    two = Thresholds(keep_per_pair=2)
    assert np.flatnonzero(select(scores, groups, two)).tolist() == [0, 8, 10]
    tie = Thresholds(keep_per_pair=3)
    assert np.flatnonzero(select(scores, groups, tie)).tolist() == [0, 1, 8, 10]  # 1 before 9
    # groups are independent: B's weak sample is kept although A's dropped ones score higher
    pairs = [("red", "blue") if g == "A" else ("circle", "square") for g in groups]  # caption pairs as keys
    assert np.array_equal(select(scores, pairs, PAPER), select(scores, groups, PAPER))
    assert not select(scores, groups, Thresholds(sim_image=0.99)).any()
