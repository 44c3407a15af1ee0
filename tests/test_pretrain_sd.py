"""Toy SD: a tiny UNet run lowers its loss; the assembled folder loads in StableDiffusionPipeline
(fp16 on disk, fp32 in memory) and samples with Euler ancestral, DDIM and DPM-Solver."""

import numpy as np
import pytest
import torch

from ip2p_lib.toyworld.pretrain.clip import train_clip
from ip2p_lib.toyworld.pretrain.convert import to_hf_text_model
from ip2p_lib.toyworld.pretrain.sd import train_unet
from ip2p_lib.toyworld.pretrain.sd import SDConfig
from ip2p_lib.toyworld.pretrain.sd_assemble import (
    NonFiniteImages,
    assemble,
    float64_euler_ancestral,
    make_deterministic,
    sample,
    save_pipeline,
)
from ip2p_lib.toyworld.pretrain.tokenizer import build_clip_tokenizer
from ip2p_lib.toyworld.pretrain.vae import train_vae
from tests.pretrain_tiny import tiny_clip, tiny_sd, tiny_vae


@pytest.fixture(scope="module")
def tiny_parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("sd")
    vae, _ = train_vae(tiny_vae(steps=2), root / "vae", progress=False)
    clip, _, _ = train_clip(tiny_clip(steps=1), root / "clip", progress=False)
    # the text model must see 77 positions, as SD pads prompts to 77
    clip.positional_embedding = torch.nn.Parameter(torch.cat([clip.positional_embedding, torch.zeros(77 - 24, 16)]))
    return make_deterministic(vae), to_hf_text_model(clip), build_clip_tokenizer(), root


@pytest.fixture(scope="module")
def trained(tiny_parts):
    vae, text, tok, root = tiny_parts
    cfg = tiny_sd(steps=12)
    unet, ema, state = train_unet(cfg, vae, text, tok, root / "unet", progress=False)
    return cfg, unet, ema, state


def test_deterministic_vae_samples_its_mean(tiny_parts):
    dist = tiny_parts[0].encode(torch.zeros(2, 3, 64, 64)).latent_dist
    assert torch.allclose(dist.sample(), dist.mean, atol=1e-5)


def test_tiny_unet_lowers_its_loss(trained):
    losses = trained[3].losses
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a NaN image cast to uint8 warns: fail instead
def test_folder_loads_offline_in_fp32_and_three_samplers_work(tiny_parts, trained, tmp_path):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    vae, text, tok, _ = tiny_parts
    cfg, unet, ema, _ = trained
    ema.copy_to(unet.parameters())
    save_pipeline(assemble(unet, vae, text, tok, cfg), tmp_path)
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path, local_files_only=True)
    assert pipe.unet.dtype == torch.float32 and pipe.text_encoder.dtype == torch.float32
    assert type(pipe.scheduler).__name__ == "EulerAncestralDiscreteScheduler"
    prompts = ["a big red circle on a gray background", ""]
    first = sample(pipe, prompts, steps=3, seed=1)
    assert first.shape == (2, 64, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, sample(pipe, prompts, steps=3, seed=1))  # seeded
    for cls in (DDIMScheduler, DPMSolverMultistepScheduler):
        pipe.scheduler = cls.from_config(pipe.scheduler.config)
        out = pipe(prompts, num_inference_steps=3, height=64, width=64, output_type="np").images
        assert np.isfinite(out).all()


def _toy_euler_ancestral():
    """diffusers' Euler ancestral with toy SD's schedule (what `assemble` saves)."""
    return assemble(None, None, None, None, SDConfig()).scheduler


def test_float64_euler_ancestral_is_diffusers_step_without_the_nan():
    """The first step from sigma_max = 20291, for 1 to 40 steps: diffusers' float32 step is NaN
    at 3 steps (diffusers#14213); ours is finite at every step count and equals both the same
    step done in float64 (with the closed form sigma_down = sigma_to**2 / sigma_from) and, where
    diffusers is finite, diffusers' step.

    Tolerance: the step computes x + (x - x0) / sigma * (sigma_down - sigma) + noise * sigma_up
    in float32 with |x| <= M = max|latent| * 20291 ~ 9e4; each of its ~4 roundings of a quantity
    of size M costs at most ulp(M) = M * 2**-23 (~0.01), so 4 ulp(M) bounds the error on any CPU.
    A dropped noise term (~sigma_up * 4, from 4 to 80 here) or a NaN fails it; sigma_down's own
    share, |latent| * sigma_down <= 4 * 0.02, is within float32's resolution of the step for
    any implementation, which is why a NaN there was the only visible symptom."""
    diffusers_sched = _toy_euler_ancestral()
    ours = float64_euler_ancestral(diffusers_sched)
    assert type(ours) is not type(diffusers_sched) and ours.config == diffusers_sched.config
    latent = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    v = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    nan_at = []
    for steps in range(1, 41):
        results = []
        for sched in (diffusers_sched, ours):
            sched.set_timesteps(steps)
            x = latent * sched.init_noise_sigma
            t = sched.timesteps[0]
            assert torch.isfinite(sched.scale_model_input(x, t)).all()
            results.append(sched.step(v, t, x, generator=torch.Generator().manual_seed(2)).prev_sample)
        bound = 4 * float(x.abs().max()) * 2**-23
        # the same step in float64, from the same float32 x, sigmas and noise
        sigmas = diffusers_sched.sigmas.double()
        s_from, s_to = sigmas[0], sigmas[1]
        x0 = v.double() * (-s_from / (s_from**2 + 1) ** 0.5) + x.double() / (s_from**2 + 1)
        noise = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2)).double()
        expected = x0 + (x.double() - x0) / s_from * (s_to**2 / s_from) + noise * s_to * (1 - (s_to / s_from) ** 2) ** 0.5
        assert (results[1].double() - expected).abs().max() <= bound, steps
        if torch.isfinite(results[0]).all():
            assert (results[1] - results[0]).abs().max() <= bound, steps
        else:
            nan_at.append(steps)
    assert nan_at == [3]  # diffusers' float32 step; if this fails, diffusers fixed #14213: drop the float64 form


def test_a_non_finite_image_is_an_error_naming_its_prompt_and_sampler():
    class NaNPipeline:
        """Returns NaN pixels for prompts that mention a fish."""

        scheduler = _toy_euler_ancestral()

        def set_progress_bar_config(self, **kwargs):
            pass

        def __call__(self, prompts, num_inference_steps, **kwargs):
            self.used = type(self.scheduler).__name__
            images = np.zeros((len(prompts), 64, 64, 3), dtype=np.float32)
            images[["fish" in p for p in prompts], 5, 7, 1] = np.nan
            return type("Output", (), {"images": images})

    pipe = NaNPipeline()
    original = pipe.scheduler
    assert sample(pipe, ["a red circle", "a blue square"], steps=3).shape == (2, 64, 64, 3)
    assert pipe.used == "EulerAncestralScheduler" and pipe.scheduler is original  # float64 form, then restored
    with pytest.raises(NonFiniteImages, match=r"EulerAncestralDiscreteScheduler \(3 steps.*1 of 3 prompts, first 'a fish'"):
        sample(pipe, ["a red circle", "a fish", "a blue square"], steps=3)
    assert pipe.scheduler is original


def test_min_snr_gamma_zero_is_the_plain_loss():
    """gamma <= 0 weighs every timestep by 1: the loss equals the plain v-MSE of the same draw."""
    import torch

    from ip2p_lib.toyworld.pretrain.sd import diffusion_loss, train_noise_scheduler

    cfg = tiny_sd()
    sched = train_noise_scheduler(cfg)

    class Zero(torch.nn.Module):  # predicts 0, so the loss is the mean square of the target
        def forward(self, z, t, encoder_hidden_states):
            return type("Out", (), {"sample": torch.zeros_like(z)})()

    z0 = torch.randn(64, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    plain = diffusion_loss(Zero(), sched, z0, None, torch.Generator().manual_seed(1), 0.0)
    weighted = diffusion_loss(Zero(), sched, z0, None, torch.Generator().manual_seed(1), 5.0)
    g = torch.Generator().manual_seed(1)
    t = torch.randint(0, sched.config.num_train_timesteps, (64,), generator=g)
    noise = torch.randn(z0.shape, generator=g)
    target = sched.get_velocity(z0, noise, t)
    assert torch.allclose(plain, (target ** 2).mean(), rtol=1e-6)
    assert weighted < 0.9 * plain  # min-SNR-5 down-weights the noisiest timesteps
