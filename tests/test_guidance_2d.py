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
    assert np.abs(exact_scores(WORLD, z, sigma, i, j)["uncond"] - fd).max() < 1e-6


def test_dropout_fractions_are_the_papers():
    import torch

    drop_text, drop_image = conditioning_dropout(torch.linspace(0, 1, 100_001)[:-1])
    assert abs(drop_text.float().mean().item() - 0.10) < 1e-3
    assert abs(drop_image.float().mean().item() - 0.10) < 1e-3
    assert abs((drop_text & drop_image).float().mean().item() - 0.05) < 1e-3


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
