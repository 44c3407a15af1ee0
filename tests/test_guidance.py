"""Eq. 3 as arithmetic: the combination, its reductions, the other order, the branch rule."""

import numpy as np
import pytest

from ip2p_lib.infra.errors import UserError
from ip2p_lib.editor.schedulers import make_scheduler
from ip2p_lib.guidance import dual_cfg, dual_cfg_text_first, uses_all_branches

RNG = np.random.default_rng(0)
E_TI, E_I, E_T, E_0 = (RNG.normal(size=(4, 3)) for _ in range(4))

# Tolerance for two float64 spellings of the same sum. The branches are N(0, 1) draws (|e| <= 2.4
# here); the largest intermediate is s_T |e_TI - e_I| <= 7.5 x 4.7 = 35; each spelling rounds ~6
# times with u = 2^-53 = 1.1e-16, so they differ by at most ~12 x 35 x 1.1e-16 = 5e-14 (measured
# 3.6e-15). ATOL is 20x that, and a real bug (swapped scales, the text term's sign) moves the result by
# more than 25 (measured), 13 orders of magnitude above it.
ATOL = 1e-12


def test_dual_cfg_is_equation_3():
    s_i, s_t = 1.5, 7.5
    expected = E_0 + s_i * (E_I - E_0) + s_t * (E_TI - E_I)
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, s_i, s_t), expected, rtol=0, atol=ATOL)
    # as weights on the three branches: (1 - s_I) e0 + (s_I - s_T) eI + s_T eTI
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, s_i, s_t), (1 - s_i) * E_0 + (s_i - s_t) * E_I + s_t * E_TI, atol=ATOL)
    # the tolerance still sees the bugs it must: scales swapped, the text term's sign flipped
    assert np.abs(dual_cfg(E_TI, E_I, E_0, s_image=s_t, s_text=s_i) - expected).max() > 1e6 * ATOL
    assert np.abs(E_0 - s_t * (E_TI - E_I) + s_i * (E_I - E_0) - expected).max() > 1e6 * ATOL


def test_dual_cfg_reductions():
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, 1.0, 1.0), E_TI, atol=ATOL)  # no guidance: the conditional
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, 0.0, 0.0), E_0, atol=ATOL)  # unconditional
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, 1.0, 3.0), E_I + 3.0 * (E_TI - E_I), atol=ATOL)  # text CFG on top of the image


def test_other_order_agrees_only_when_the_scales_are_equal():
    np.testing.assert_allclose(dual_cfg_text_first(E_TI, E_T, E_0, 2.0, 2.0), dual_cfg(E_TI, E_I, E_0, 2.0, 2.0), atol=ATOL)
    # at the paper's scales the orders differ by s_I - s_T times a branch difference: O(1), measured 21
    assert np.abs(dual_cfg_text_first(E_TI, E_T, E_0, 1.5, 7.5) - dual_cfg(E_TI, E_I, E_0, 1.5, 7.5)).max() > 1e6 * ATOL


@pytest.mark.parametrize(
    "s_i, s_t, paper, diffusers",
    [(1.5, 7.5, True, True), (1.0, 7.5, True, True), (1.5, 1.0, True, False), (1.0, 1.0, True, False), (0.5, 7.5, True, False)],
)
def test_branch_rules(s_i, s_t, paper, diffusers):
    assert uses_all_branches(s_i, s_t, "paper") is paper
    assert uses_all_branches(s_i, s_t, "diffusers") is diffusers


def test_unknown_rule_and_scheduler_are_user_errors():
    with pytest.raises(UserError):
        uses_all_branches(1.5, 7.5, "magic")
    with pytest.raises(UserError):
        make_scheduler("warp_drive", {})
