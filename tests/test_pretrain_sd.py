"""Toy SD: a tiny UNet run lowers its loss; the assembled folder loads in StableDiffusionPipeline
(fp16 on disk, fp32 in memory) and samples with Euler ancestral, DDIM and DPM-Solver."""

import numpy as np
import pytest
import torch

from ip2p_lib.toyworld.pretrain.clip import train_clip
from ip2p_lib.toyworld.pretrain.convert import to_hf_text_model
from ip2p_lib.toyworld.pretrain.sd import train_unet
from ip2p_lib.toyworld.pretrain.sd_assemble import assemble, make_deterministic, sample, save_pipeline
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


def test_folder_loads_offline_in_fp32_and_three_samplers_work(tiny_parts, trained, tmp_path):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    vae, text, tok, _ = tiny_parts
    cfg, unet, ema, _ = trained
    ema.copy_to(unet)
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
