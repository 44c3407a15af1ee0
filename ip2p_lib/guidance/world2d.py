r"""A 2-D world where every score is closed form, to check Eq. 3 exactly (§3.2.1).

Data: a point z in the plane belongs to an "image" class i and a "text" class j, with joint
prior pi[i, j], and z | (i, j) ~ N(mu[i, j], data_std^2 I). Noise as in score-based
diffusion (variance exploding): z_sigma = z + sigma * eps, so at noise level sigma every
component is N(mu[i, j], (data_std^2 + sigma^2) I) and every density below is a Gaussian
mixture with an exact score:

    p(z)         = sum_ij pi[i, j] N(z; mu_ij, v)          the unconditional model
    p(z | i)     = sum_j  pi[j | i] N(z; mu_ij, v)         image only
    p(z | j)     = sum_i  pi[i | j] N(z; mu_ij, v)         text only (the other order)
    p(z | i, j)  = N(z; mu_ij, v)                          both

A score is grad_z log p, and a denoiser's eps = -sigma * score. Eq. 3 on scores is then the
score of p(z) p(i | z)^s_I p(j | i, z)^s_T, which `log_guided_density` computes directly
(with Bayes' rule, not with scores) so the two can be compared. A small MLP trained with the
paper's conditioning dropout learns all four eps at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ip2p_lib.guidance.cfg import PAPER_IMAGE_GUIDANCE, PAPER_TEXT_GUIDANCE, dual_cfg
from ip2p_lib.guidance.dropout import conditioning_dropout


@dataclass(frozen=True)
class World2D:
    """Component means mu (K_I, K_T, 2), joint prior pi (K_I, K_T), the components' std."""

    means: np.ndarray
    prior: np.ndarray
    data_std: float = 0.5

    @property
    def n_image(self) -> int:
        return self.means.shape[0]

    @property
    def n_text(self) -> int:
        return self.means.shape[1]


def default_world() -> World2D:
    """3 image classes (left, middle, right) x 3 text classes (down, none, up), unequal prior.

    Neighbouring components overlap, so guidance has something to do."""
    xs, ys = np.array([-2.0, 0.0, 2.0]), np.array([-1.2, 0.0, 1.2])
    means = np.stack(np.meshgrid(xs, ys, indexing="ij"), axis=-1)  # (3, 3, 2): mu[i, j] = (x_i, y_j)
    means = means + np.array([[[0.0, 0.0], [0.3, 0.0], [0.6, 0.0]]])  # the text also moves the point a little
    prior = np.array([[0.20, 0.10, 0.05], [0.10, 0.15, 0.05], [0.05, 0.10, 0.20]])
    return World2D(means=means, prior=prior / prior.sum(), data_std=0.5)


# ---------------------------------------------------------------- closed-form scores
def _component_logpdf(world: World2D, z: np.ndarray, sigma: float) -> np.ndarray:
    """log N(z; mu_ij, (data_std^2 + sigma^2) I) for every point and component: (N, K_I, K_T)."""
    var = world.data_std**2 + sigma**2
    d2 = ((z[:, None, None, :] - world.means[None]) ** 2).sum(-1)
    return -0.5 * d2 / var - np.log(2 * np.pi * var)


def _mixture_score(world: World2D, z: np.ndarray, sigma: float, log_weights: np.ndarray) -> np.ndarray:
    """Score of sum_ij w_ij N(z; mu_ij, v): sum_ij post_ij(z) (mu_ij - z) / v, with post the
    posterior over components (log_weights = -inf leaves a component out)."""
    var = world.data_std**2 + sigma**2
    logits = _component_logpdf(world, z, sigma) + log_weights[None]
    flat = logits.reshape(len(z), -1)
    post = np.exp(flat - flat.max(1, keepdims=True))
    post = (post / post.sum(1, keepdims=True)).reshape(logits.shape)
    mean = np.einsum("nij,ijd->nd", post, world.means)
    return (mean - z) / var


def exact_scores(world: World2D, z: np.ndarray, sigma: float, i: int, j: int) -> dict[str, np.ndarray]:
    """The four exact scores at noise level sigma: 'both' grad log p(z|i,j), 'image' grad log
    p(z|i), 'text' grad log p(z|j), 'uncond' grad log p(z). Each (N, 2), float64."""
    with np.errstate(divide="ignore"):
        log_pi = np.log(world.prior)
    only_i = np.full_like(log_pi, -np.inf)
    only_i[i] = log_pi[i]
    only_j = np.full_like(log_pi, -np.inf)
    only_j[:, j] = log_pi[:, j]
    both = np.full_like(log_pi, -np.inf)
    both[i, j] = 0.0
    return {
        "both": _mixture_score(world, z, sigma, both),
        "image": _mixture_score(world, z, sigma, only_i),
        "text": _mixture_score(world, z, sigma, only_j),
        "uncond": _mixture_score(world, z, sigma, log_pi),
    }


def guided_score(world: World2D, z: np.ndarray, sigma: float, i: int, j: int, *, s_image: float, s_text: float) -> np.ndarray:
    """Eq. 3 on exact scores (same combination as on eps, since eps = -sigma * score)."""
    s = exact_scores(world, z, sigma, i, j)
    return dual_cfg(s["both"], s["image"], s["uncond"], s_image=s_image, s_text=s_text)


def log_guided_density(world: World2D, z: torch.Tensor, sigma: float, i: int, j: int, *, s_image: float,
                       s_text: float) -> torch.Tensor:
    """log[ p(z) p(i | z)^s_I p(j | i, z)^s_T ] up to a constant, from Bayes' rule:
    p(i | z) = p(z | i) p(i) / p(z),  p(j | i, z) = p(z | i, j) p(j | i) / p(z | i).
    Torch (float64) so that autograd gives its score independently of `exact_scores`."""
    var = world.data_std**2 + sigma**2
    mu = torch.as_tensor(world.means, dtype=z.dtype)
    pi = torch.as_tensor(world.prior, dtype=z.dtype)
    log_comp = -0.5 * ((z[:, None, None, :] - mu[None]) ** 2).sum(-1) / var - np.log(2 * np.pi * var)
    log_p_z = torch.logsumexp((log_comp + pi.log()).flatten(1), dim=1)  # log p(z)
    log_p_z_i = torch.logsumexp(log_comp[:, i] + (pi[i] / pi[i].sum()).log(), dim=1)  # log p(z | i)
    log_p_z_ij = log_comp[:, i, j]  # log p(z | i, j)
    log_cls_image = log_p_z_i + pi[i].sum().log() - log_p_z  # log p(i | z)
    log_cls_text = log_p_z_ij + (pi[i, j] / pi[i].sum()).log() - log_p_z_i  # log p(j | i, z)
    return log_p_z + s_image * log_cls_image + s_text * log_cls_text


def autograd_score(world: World2D, z: np.ndarray, sigma: float, i: int, j: int, *, s_image: float, s_text: float) -> np.ndarray:
    """grad_z log_guided_density, by autograd."""
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    log_guided_density(world, zt, sigma, i, j, s_image=s_image, s_text=s_text).sum().backward()
    return zt.grad.numpy()


# ---------------------------------------------------------------- sampling
def sigma_schedule(steps: int, sigma_max: float = 10.0, sigma_min: float = 0.02) -> np.ndarray:
    """Geometric noise levels from sigma_max down to sigma_min (steps + 1 values)."""
    return np.geomspace(sigma_max, sigma_min, steps + 1)


def sample(score_fn, n: int, steps: int = 200, seed: int = 0, sigma_max: float = 10.0, sigma_min: float = 0.02) -> np.ndarray:
    """Ancestral sampling with a score function `score_fn(z, sigma)`: from sigma to sigma' the
    point moves by (sigma^2 - sigma'^2) * score and gets fresh noise of variance
    sigma^2 - sigma'^2 (the variance-exploding reverse SDE, Euler-Maruyama)."""
    rng = np.random.default_rng(seed)
    sigmas = sigma_schedule(steps, sigma_max, sigma_min)
    z = rng.normal(size=(n, 2)) * sigmas[0]
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        dv = s**2 - s_next**2
        z = z + dv * score_fn(z, s) + np.sqrt(dv) * rng.normal(size=z.shape)
    return z


def nearest_component(world: World2D, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(image class, text class) of the component whose mean is nearest to each point."""
    d2 = ((z[:, None, None, :] - world.means[None]) ** 2).sum(-1).reshape(len(z), -1)
    k = d2.argmin(1)
    return k // world.n_text, k % world.n_text


# ---------------------------------------------------------------- one network, dropout
class EpsMLP(nn.Module):
    """eps(z, sigma, c_I, c_T) for the 2-D world; class index K means "dropped" (null)."""

    def __init__(self, n_image: int, n_text: int, width: int = 128, data_scale: float = 1.6):
        super().__init__()
        self.n_image, self.n_text, self.data_scale = n_image, n_text, data_scale
        self.net = nn.Sequential(
            nn.Linear(2 + 1 + (n_image + 1) + (n_text + 1), width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, 2),
        )

    def forward(self, z: torch.Tensor, sigma: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        z_in = z / torch.sqrt(sigma[:, None] ** 2 + self.data_scale**2)  # keep inputs O(1) at every noise level
        feats = [z_in, torch.log(sigma)[:, None] / 4, nn.functional.one_hot(image, self.n_image + 1).float(),
                 nn.functional.one_hot(text, self.n_text + 1).float()]
        return self.net(torch.cat(feats, dim=1))


def train_eps_mlp(world: World2D, steps: int = 3000, batch: int = 512, lr: float = 3e-3, seed: int = 0,
                  dropout: bool = True, sigma_range: tuple[float, float] = (0.02, 10.0)) -> tuple[EpsMLP, list[float]]:
    """Denoising score matching, ||eps_theta(z + sigma eps, sigma, c) - eps||^2, with sigma
    log-uniform and (if `dropout`) the paper's conditioning dropout. Returns model, losses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 128-wide MLP only loses time to thread hand-offs
    try:
        return _train(world, steps, batch, lr, seed, dropout, sigma_range)
    finally:
        torch.set_num_threads(threads)


def _train(world: World2D, steps: int, batch: int, lr: float, seed: int, dropout: bool,
           sigma_range: tuple[float, float]) -> tuple[EpsMLP, list[float]]:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = EpsMLP(world.n_image, world.n_text)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    means = torch.as_tensor(world.means, dtype=torch.float32)
    prior = torch.as_tensor(world.prior.reshape(-1), dtype=torch.float32)
    lo, hi = np.log(sigma_range[0]), np.log(sigma_range[1])
    losses = []
    for _ in range(steps):
        k = torch.multinomial(prior, batch, replacement=True, generator=g)
        image, text = k // world.n_text, k % world.n_text
        z0 = means[image, text] + world.data_std * torch.randn(batch, 2, generator=g)
        sigma = torch.exp(lo + (hi - lo) * torch.rand(batch, generator=g))
        eps = torch.randn(batch, 2, generator=g)
        if dropout:
            drop_text, drop_image = conditioning_dropout(torch.rand(batch, generator=g))
            text = torch.where(drop_text, world.n_text, text)
            image = torch.where(drop_image, world.n_image, image)
        loss = ((model(z0 + sigma[:, None] * eps, sigma, image, text) - eps) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model, losses


BRANCHES = ("both", "image", "text", "uncond")


def network_eps(model: EpsMLP, world: World2D, z: np.ndarray, sigma: float, i: int, j: int) -> dict[str, np.ndarray]:
    """The network's eps for the four branches (null index = dropped), like `exact_scores`."""
    cond = {"both": (i, j), "image": (i, world.n_text), "text": (world.n_image, j), "uncond": (world.n_image, world.n_text)}
    zt = torch.tensor(z, dtype=torch.float32)
    s = torch.full((len(z),), float(sigma))
    out = {}
    with torch.no_grad():
        for name, (ci, ct) in cond.items():
            out[name] = model(zt, s, torch.full((len(z),), ci), torch.full((len(z),), ct)).double().numpy()
    return out


def branch_errors(model: EpsMLP, world: World2D, sigmas=(0.3, 1.0, 3.0), n: int = 1800, seed: int = 1, *,
                  s_image: float = PAPER_IMAGE_GUIDANCE, s_text: float = PAPER_TEXT_GUIDANCE) -> dict[str, float]:
    """Relative RMS error of the network's eps against the exact eps* = -sigma * score, per
    branch and for the Eq. 3 combination, over noisy points z = z0 + sigma * eps from the data
    (every (i, j), every sigma in `sigmas`): ||eps_net - eps*|| / ||eps*||."""
    rng = np.random.default_rng(seed)
    err = {name: [0.0, 0.0] for name in (*BRANCHES, "guided")}
    for sigma in sigmas:
        for i in range(world.n_image):
            for j in range(world.n_text):
                z = world.means[i, j] + world.data_std * rng.normal(size=(n // 9 + 1, 2)) + sigma * rng.normal(size=(n // 9 + 1, 2))
                exact = {k: -sigma * v for k, v in exact_scores(world, z, sigma, i, j).items()}
                net = network_eps(model, world, z, sigma, i, j)
                exact["guided"] = dual_cfg(exact["both"], exact["image"], exact["uncond"], s_image=s_image, s_text=s_text)
                net["guided"] = dual_cfg(net["both"], net["image"], net["uncond"], s_image=s_image, s_text=s_text)
                for k in err:
                    err[k][0] += float(((net[k] - exact[k]) ** 2).sum())
                    err[k][1] += float((exact[k] ** 2).sum())
    return {k: float(np.sqrt(a / b)) for k, (a, b) in err.items()}
