"""The paired sampler: both images of a pair from the same start latent and the same noise (§3.1.2).

The authors sample each pair with k-diffusion's Euler ancestral sampler, one pair per call,
with one CFG batch [uncond, uncond, cond caption 0, cond caption 1]. Both images start from
the same latent and receive the same ancestral noise at every step; image 1 shares image 0's
self-attention for the first p of the steps.

Here many pairs run in one UNet call (`generate_pairs`, 4 rows per pair), and each pair
draws its start latent and its per-step noise from its *own* generator seeded with its seed.
So a pair's pixels depend only on its metadata (`PairSpec`: captions, seed, cfg, p, steps and
variant) and the model: regenerated alone or in another batch it comes out the same, up to
float rounding of batched matrix products.

The Euler ancestral step, written out (k-diffusion's form, sigma = noise level):

    x0         = the model's denoised estimate at sigma (from epsilon or v prediction)
    sigma_up   = sigma_next * sqrt(1 - sigma_next**2 / sigma**2)
    sigma_down = sqrt(sigma_next**2 - sigma_up**2)
    x          = x + (x - x0) / sigma * (sigma_down - sigma)  +  noise * sigma_up

The sigma arithmetic is float64 (toy SD's first sigma is 20291; in float32 the first step of
a short schedule gives sqrt of a negative number: diffusers #14213).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ip2p_lib.infra.prompts import encode_prompts
from ip2p_lib.p2p.attention import Controller, SelfAttentionSharing, controlled, pair_counts

# The paper's sampling ranges (§3.1.2): drawn per sample.
CFG_RANGE = (7.5, 15.0)
P_RANGE = (0.1, 0.9)
PAPER_STEPS = 100  # the authors' generation script; 20 here for the toy world (see notebook 02)
TOY_STEPS = 20


@dataclass(frozen=True)
class PairSpec:
    """Everything that decides a pair's pixels, given the model."""

    caption_0: str
    caption_1: str
    seed: int
    cfg: float
    p: float
    steps: int = TOY_STEPS
    variant: str = "self"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def draw_specs(caption_0: str, caption_1: str, n: int, rng: np.random.Generator, steps: int = TOY_STEPS,
               variant: str = "self", cfg_range: tuple[float, float] = CFG_RANGE,
               p_range: tuple[float, float] = P_RANGE) -> list[PairSpec]:
    """`n` samples of one caption pair: seed, cfg ~ U(cfg_range), p ~ U(p_range) each (the paper's)."""
    seeds = rng.integers(0, 2**31 - 1, size=n)
    cfgs = rng.uniform(*cfg_range, size=n)
    ps = rng.uniform(*p_range, size=n)
    return [PairSpec(caption_0, caption_1, int(s), round(float(c), 4), round(float(p), 4), steps, variant)
            for s, c, p in zip(seeds, cfgs, ps)]


# ---------------------------------------------------------------- variants

ControllerFactory = Callable[[Sequence[PairSpec], Any], Controller]


def _none(specs: Sequence[PairSpec], tokenizer: Any) -> Controller:
    return Controller()  # counts calls, changes nothing: two independent samples with shared noise


def _self(specs: Sequence[PairSpec], tokenizer: Any) -> Controller:
    return SelfAttentionSharing(torch.tensor([s.p for s in specs]), len(specs))


VARIANTS: dict[str, ControllerFactory] = {
    "none": _none,   # no attention control (Figure 3, left)
    "self": _self,   # the authors' data code: self-attention sharing for the first p of the steps
}


def register_variant(name: str, factory: ControllerFactory) -> None:
    """Add a pair-generation variant (name -> factory(specs, tokenizer) -> Controller)."""
    VARIANTS[name] = factory


def make_controller(specs: Sequence[PairSpec], tokenizer: Any) -> Controller:
    """The controller for a batch of specs that share one variant."""
    names = {s.variant for s in specs}
    if len(names) != 1:
        raise ValueError(f"one batch needs one variant, got {sorted(names)}")
    (name,) = names
    if name not in VARIANTS:
        raise ValueError(f"unknown pair variant {name!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name](specs, tokenizer)


# ---------------------------------------------------------------- the sampler


def euler_sigmas(scheduler_config: Any, steps: int) -> tuple[np.ndarray, torch.Tensor]:
    """(sigmas in float64 with a final 0, timesteps) of diffusers' Euler ancestral for the model's
    noise schedule and `steps`: the same levels as `EulerAncestralDiscreteScheduler`."""
    from diffusers import EulerAncestralDiscreteScheduler

    sched = EulerAncestralDiscreteScheduler.from_config(scheduler_config)
    sched.set_timesteps(steps)
    return sched.sigmas.double().numpy(), sched.timesteps


def denoised(model_out: torch.Tensor, x: torch.Tensor, sigma: float, prediction_type: str) -> torch.Tensor:
    """The model's estimate of the clean latent x0 at noise level sigma (x = x0 + sigma * eps)."""
    if prediction_type == "epsilon":
        return x - sigma * model_out
    if prediction_type == "v_prediction":
        return model_out * (-sigma / math.sqrt(sigma**2 + 1)) + x / (sigma**2 + 1)
    raise ValueError(f"unsupported prediction type {prediction_type!r} (epsilon or v_prediction)")


@dataclass
class PairImages:
    """uint8 images (n, H, W, 3) of both sides, and how many attention calls the controller saw."""

    image_0: np.ndarray
    image_1: np.ndarray
    attention_calls: int


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    if not torch.isfinite(images).all():
        raise FloatingPointError("the paired sampler produced non-finite pixels")
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def generate_batch(pipe: Any, specs: Sequence[PairSpec], controller: Controller | None = None) -> PairImages:
    """One batched run: every pair in `specs` (same `steps` and variant) in each UNet call.

    `controller` (default: the variant's) sees the attention; pass an `AttentionStore` wrapped
    with the variant's controller in a `ControllerList` to keep maps for pictures."""
    if not specs:
        raise ValueError("no pair specs to sample")
    steps = {s.steps for s in specs}
    if len(steps) != 1:
        raise ValueError(f"one batch needs one step count, got {sorted(steps)}")
    (num_steps,) = steps
    if num_steps < 1:
        raise ValueError(f"steps must be at least 1, got {num_steps}")
    unet, vae = pipe.unet, pipe.vae
    device, dtype = unet.device, unet.dtype
    n = len(specs)
    controller = controller if controller is not None else make_controller(specs, pipe.tokenizer)
    if pair_counts(controller) - {n}:
        raise ValueError(f"the controller was built for {sorted(pair_counts(controller))} pairs, the batch has {n}")
    prompts = [""] * (2 * n) + [s.caption_0 for s in specs] + [s.caption_1 for s in specs]
    cond = encode_prompts(pipe.text_encoder, pipe.tokenizer, prompts, device=device).to(dtype)
    sigmas, timesteps = euler_sigmas(pipe.scheduler.config, num_steps)
    prediction = pipe.scheduler.config.get("prediction_type", "epsilon")
    shape = (unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
    gens = [torch.Generator().manual_seed(s.seed) for s in specs]

    def noise() -> torch.Tensor:  # one draw per pair, the same for both of its images
        z = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device, dtype)
        return torch.cat([z, z])

    cfg = torch.tensor([s.cfg for s in specs], device=device, dtype=dtype).view(n, 1, 1, 1).repeat(2, 1, 1, 1)
    x = noise() * float(sigmas[0])                                  # rows [image 0 (n), image 1 (n)]
    with controlled(unet, controller):
        for i, t in enumerate(timesteps):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            controller.begin_step(i, num_steps)
            model_in = torch.cat([x, x]) / math.sqrt(sigma**2 + 1)  # [uncond 0, uncond 1, cond 0, cond 1]
            out = unet(model_in, t, encoder_hidden_states=cond).sample
            uncond, cond_out = out.chunk(2)
            guided = uncond + cfg * (cond_out - uncond)
            x0 = denoised(guided, x, sigma, prediction)
            sigma_up = sigma_next * math.sqrt(max(0.0, 1 - sigma_next**2 / sigma**2))
            sigma_down = math.sqrt(max(0.0, sigma_next**2 - sigma_up**2))
            x = x + (x - x0) / sigma * (sigma_down - sigma)
            if sigma_next > 0:
                x = x + noise() * sigma_up
    images = vae.decode(x / vae.config.scaling_factor).sample.float()
    pixels = _to_uint8(images)
    return PairImages(pixels[:n], pixels[n:], sum(controller.calls.values()))


def generate_pairs(pipe: Any, specs: Sequence[PairSpec], batch_size: int = 32,
                   progress: Callable[[int], None] | None = None) -> PairImages:
    """All `specs`, `batch_size` pairs per UNet call, grouped by (steps, variant); results in input order."""
    def key(i: int) -> tuple[int, str]:
        return specs[i].steps, specs[i].variant

    out0: list[np.ndarray | None] = [None] * len(specs)
    out1: list[np.ndarray | None] = [None] * len(specs)
    calls = 0
    for _, group in itertools.groupby(sorted(range(len(specs)), key=key), key=key):
        members = list(group)
        for start in range(0, len(members), batch_size):
            idx = members[start:start + batch_size]
            result = generate_batch(pipe, [specs[i] for i in idx])
            calls += result.attention_calls
            for j, i in enumerate(idx):
                out0[i], out1[i] = result.image_0[j], result.image_1[j]
            if progress is not None:
                progress(len(idx))
    return PairImages(np.stack(out0), np.stack(out1), calls)  # type: ignore[arg-type]
