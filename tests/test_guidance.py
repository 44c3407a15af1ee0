"""Eq. 3 by its properties, not by restating it: what each scale does at 0 and 1, which branch each
scale moves along, invariance to a shared offset, and equality with the exact score of the 2-D
world. A wrong sign, a swapped branch or a missed scale fails at least one of these."""

import numpy as np
import pytest
import torch

from ip2p_lib.editor.schedulers import make_scheduler
from ip2p_lib.guidance import dual_cfg, dual_cfg_text_first, uses_all_branches
from ip2p_lib.guidance.world2d import autograd_score, default_world, exact_scores
from ip2p_lib.infra.errors import UserError

RNG = np.random.default_rng(0)
E_TI, E_I, E_T, E_0 = (RNG.normal(size=(4, 3)) for _ in range(4))  # e(z,c_I,c_T), e(z,c_I,0), e(z,0,c_T), e(z,0,0)
SCALES = [(0.0, 0.0), (1.0, 1.0), (1.5, 7.5), (0.5, 3.0), (4.0, 0.25)]

# Tolerance for two float64 spellings of the same sum. The branches are N(0, 1) draws (|e| <= 2.4
# here); the largest intermediate is s_T |e_TI - e_I| <= 7.5 x 4.7 = 35; each spelling rounds ~6
# times with u = 2^-53 = 1.1e-16, so they differ by at most ~12 x 35 x 1.1e-16 = 5e-14 (measured
# 3.6e-15). ATOL is 20x that, and a real bug (swapped scales, the text term's sign) moves the result by
# more than 25 (measured), 13 orders of magnitude above it.
ATOL = 1e-12


def eq3(s_image, s_text, e_ti=E_TI, e_i=E_I, e_0=E_0):
    return dual_cfg(e_ti, e_i, e_0, s_image=s_image, s_text=s_text)


@pytest.mark.parametrize("s_image, s_text, expected", [
    (1.0, 1.0, E_TI),  # no guidance: the fully conditional prediction
    (0.0, 0.0, E_0),  # both scales off: the unconditional prediction
    (1.0, 0.0, E_I),  # text ignored: the image-conditional prediction
    (0.0, 1.0, E_0 + E_TI - E_I),  # the text classifier alone, on the unconditional model
])
def test_scales_at_zero_and_one_select_the_branches(s_image, s_text, expected):
    np.testing.assert_allclose(eq3(s_image, s_text), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("s_image, s_text", SCALES)
def test_each_scale_moves_along_its_own_classifier(s_image, s_text):
    """d/ds_I = e(z,c_I,0) - e(z,0,0) (image classifier), d/ds_T = e(z,c_I,c_T) - e(z,c_I,0) (text classifier)."""
    base = eq3(s_image, s_text)
    np.testing.assert_allclose(eq3(s_image + 1.0, s_text) - base, E_I - E_0, rtol=0, atol=ATOL)
    np.testing.assert_allclose(eq3(s_image, s_text + 1.0) - base, E_TI - E_I, rtol=0, atol=ATOL)


@pytest.mark.parametrize("s_image, s_text", SCALES)
def test_a_shared_offset_passes_through_and_the_map_is_linear_in_the_branches(s_image, s_text):
    offset = RNG.normal(size=(4, 3))
    np.testing.assert_allclose(eq3(s_image, s_text, E_TI + offset, E_I + offset, E_0 + offset),
                               eq3(s_image, s_text) + offset, rtol=0, atol=ATOL)  # branch weights sum to 1
    a, b = 0.3, -2.0
    mixed = eq3(s_image, s_text, a * E_TI + b * E_T, a * E_I + b * E_T, a * E_0 + b * E_T)
    np.testing.assert_allclose(mixed, a * eq3(s_image, s_text) + b * E_T, rtol=0, atol=ATOL)


def test_equal_scales_are_plain_cfg_on_the_joint_condition_in_either_order():
    s = 2.5
    plain = E_0 + s * (E_TI - E_0)
    np.testing.assert_allclose(eq3(s, s), plain, rtol=0, atol=ATOL)
    np.testing.assert_allclose(dual_cfg_text_first(E_TI, E_T, E_0, s_image=s, s_text=s), plain, rtol=0, atol=ATOL)
    # unequal scales: the text-first order needs e(z,0,c_T) and gives another answer
    assert np.abs(dual_cfg_text_first(E_TI, E_T, E_0, s_image=1.5, s_text=7.5) - eq3(1.5, 7.5)).max() > 0.1
    np.testing.assert_allclose(dual_cfg_text_first(E_TI, E_T, E_0, s_image=0.0, s_text=1.0), E_T, rtol=0, atol=ATOL)


def test_torch_and_numpy_give_the_same_numbers():
    t = dual_cfg(*(torch.from_numpy(e) for e in (E_TI, E_I, E_0)), s_image=1.5, s_text=7.5)
    np.testing.assert_allclose(t.numpy(), eq3(1.5, 7.5), rtol=0, atol=ATOL)


def test_eq3_is_the_exact_guided_score_of_the_2d_world_and_the_swapped_scales_are_not():
    world, sigma, (i, j) = default_world(), 0.5, (1, 2)
    z = np.random.default_rng(1).normal(size=(200, 2)) * 2.0
    s = exact_scores(world, z, sigma, i, j)
    ours = dual_cfg(s["both"], s["image"], s["uncond"], s_image=1.5, s_text=7.5)
    exact = autograd_score(world, z, sigma, i, j, s_image=1.5, s_text=7.5)  # grad log p(z) p(i|z)^1.5 p(j|i,z)^7.5
    swapped = autograd_score(world, z, sigma, i, j, s_image=7.5, s_text=1.5)
    scale = np.abs(exact).max()
    assert np.abs(ours - exact).max() < 1e-10 * scale
    assert np.abs(ours - swapped).max() > 0.1 * scale


@pytest.mark.parametrize(
    "s_i, s_t, paper, diffusers",
    [(1.5, 7.5, True, True), (1.0, 7.5, True, True), (1.5, 1.0, True, False), (1.0, 1.0, True, False), (0.5, 7.5, True, False)],
)
def test_branch_rules(s_i, s_t, paper, diffusers):
    assert uses_all_branches(s_image=s_i, s_text=s_t, rule="paper") is paper
    assert uses_all_branches(s_image=s_i, s_text=s_t, rule="diffusers") is diffusers


def test_unknown_rule_and_scheduler_are_user_errors():
    with pytest.raises(UserError):
        uses_all_branches(s_image=1.5, s_text=7.5, rule="magic")
    with pytest.raises(UserError):
        make_scheduler("warp_drive", {})
