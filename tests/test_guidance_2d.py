"""The 2-D world: Eq. 3 is exactly the score of p(z) p(c_I|z)^s_I p(c_T|c_I,z)^s_T."""

import numpy as np
import pytest

from ip2p_lib.guidance import conditioning_dropout
from ip2p_lib.guidance.world2d import (
    autograd_score,
    branch_errors,
    default_world,
    exact_scores,
    guided_score,
    nearest_component,
    sample,
    train_eps_mlp,
)

WORLD = default_world()
Z = np.random.default_rng(0).normal(size=(300, 2)) * 2.5


@pytest.mark.parametrize("sigma", [0.05, 0.5, 2.0])
@pytest.mark.parametrize("s_image", [0.0, 1.0, 1.5, 3.0])
@pytest.mark.parametrize("s_text", [0.0, 1.0, 3.0, 7.5])
def test_eq3_is_the_score_of_the_guided_density(sigma, s_image, s_text):
    for i, j in [(0, 0), (1, 2), (2, 1)]:
        combined = guided_score(WORLD, Z, sigma, i, j, s_image=s_image, s_text=s_text)  # Eq. 3 on closed-form scores
        direct = autograd_score(WORLD, Z, sigma, i, j, s_image=s_image, s_text=s_text)  # grad log of the classifier product
        scale = max(1.0, np.abs(direct).max())
        # float64 (u = 1.1e-16) on two routes: softmax-weighted means (responsibilities amplify by
        # ~|mu|/v <= 10) combined with weights up to 1 + s_I + s_T = 12, vs autograd through
        # logsumexp: ~1e3 u = 1e-13 relative (measured 5.8e-14). 1e-10 leaves 1000x for other
        # CPUs and libms; swapping s_I and s_T gives 0.25 (measured).
        assert np.abs(combined - direct).max() / scale < 1e-10


def test_exact_scores_match_finite_differences_of_the_mixture():
    from scipy.stats import multivariate_normal

    sigma, i, j, h = 0.7, 1, 0, 1e-5
    var = WORLD.data_std**2 + sigma**2

    def log_p(z):  # the unconditional mixture, written independently
        return np.log(sum(WORLD.prior[a, b] * multivariate_normal(WORLD.means[a, b], var).pdf(z)
                          for a in range(3) for b in range(3)))

    z = Z[:5]
    fd = np.stack([(log_p(z + h * e) - log_p(z - h * e)) / (2 * h) for e in np.eye(2)], axis=1)
    # central differences: truncation h^2 / 6 |d^3 log p| ~ 1e-10 x (|Delta mu| / v)^3 ~ 1e-9, rounding
    # u |log p| / h = 1.1e-16 x 6 / 1e-5 ~ 7e-11 (measured 5.2e-11); 1e-7 leaves 100x, while the score of
    # any other branch misses by more than 2 (measured)
    assert np.abs(exact_scores(WORLD, z, sigma, i, j)["uncond"] - fd).max() < 1e-7


def test_dropout_fractions_are_the_papers():
    import torch

    # r on a grid of N = 1e5 points: each fraction is exact up to a grid point or two at each threshold
    # (float32 grid), <= 2 / N = 2e-5 (measured 1e-5); 1e-4 leaves 5x, and any other paper fraction
    # (5% instead of 10%) misses by 5e-2
    drop_text, drop_image = conditioning_dropout(torch.linspace(0, 1, 100_001)[:-1])
    assert abs(drop_text.float().mean().item() - 0.10) < 1e-4
    assert abs(drop_image.float().mean().item() - 0.10) < 1e-4
    assert abs((drop_text & drop_image).float().mean().item() - 0.05) < 1e-4


def test_text_guidance_raises_edit_success():
    plain = sample(lambda z, s: guided_score(WORLD, z, s, 1, 2, s_image=1.0, s_text=1.0), 400, steps=100, seed=0)
    guided = sample(lambda z, s: guided_score(WORLD, z, s, 1, 2, s_image=1.0, s_text=5.0), 400, steps=100, seed=0)
    hit = [np.mean((a == 1) & (b == 2)) for a, b in (nearest_component(WORLD, plain), nearest_component(WORLD, guided))]
    assert hit[1] > hit[0] + 0.1


def test_one_network_with_dropout_learns_every_branch():
    untrained, _ = train_eps_mlp(WORLD, steps=1, batch=64, seed=0)
    trained, losses = train_eps_mlp(WORLD, steps=300, batch=256, seed=0)
    before, after = branch_errors(untrained, WORLD, n=450), branch_errors(trained, WORLD, n=450)
    for branch in ("both", "image", "text", "uncond"):
        assert after[branch] < 0.6 * before[branch], (branch, before, after)
    assert np.mean(losses[-50:]) < np.mean(losses[:50])
