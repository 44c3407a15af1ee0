"""Eq. 3 as arithmetic: the combination, its reductions, the other order, the branch rule."""

import numpy as np
import pytest

from ip2p_lib.infra.errors import UserError
from ip2p_lib.editor.schedulers import make_scheduler
from ip2p_lib.guidance import dual_cfg, dual_cfg_text_first, uses_all_branches

RNG = np.random.default_rng(0)
E_TI, E_I, E_T, E_0 = (RNG.normal(size=(4, 3)) for _ in range(4))


def test_dual_cfg_is_equation_3():
    s_i, s_t = 1.5, 7.5
    expected = E_0 + s_i * (E_I - E_0) + s_t * (E_TI - E_I)
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, s_i, s_t), expected, rtol=0, atol=1e-12)
    # as weights on the three branches: (1 - s_I) e0 + (s_I - s_T) eI + s_T eTI
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, s_i, s_t), (1 - s_i) * E_0 + (s_i - s_t) * E_I + s_t * E_TI, atol=1e-12)


def test_dual_cfg_reductions():
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, 1.0, 1.0), E_TI, atol=1e-12)  # no guidance: the conditional
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, 0.0, 0.0), E_0, atol=1e-12)  # unconditional
    np.testing.assert_allclose(dual_cfg(E_TI, E_I, E_0, 1.0, 3.0), E_I + 3.0 * (E_TI - E_I), atol=1e-12)  # text CFG on top of the image


def test_other_order_agrees_only_when_the_scales_are_equal():
    np.testing.assert_allclose(dual_cfg_text_first(E_TI, E_T, E_0, 2.0, 2.0), dual_cfg(E_TI, E_I, E_0, 2.0, 2.0), atol=1e-12)
    assert np.abs(dual_cfg_text_first(E_TI, E_T, E_0, 1.5, 7.5) - dual_cfg(E_TI, E_I, E_0, 1.5, 7.5)).max() > 0.1


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
