"""Toy SD's denoiser: a `UNet2DConditionModel` trained on VAE latents of rendered scenes.

Stable Diffusion learns to undo noise in the latent space of its VAE, conditioned on the
text tower's hidden states through cross-attention. With latents z0 = s * E(x) (s the
VAE's `scaling_factor`), noise e ~ N(0, I) and the cumulative schedule a_t = alphā_t:

    z_t = sqrt(a_t) z0 + sqrt(1 - a_t) e                      (forward process)
    v   = sqrt(a_t) e - sqrt(1 - a_t) z0                      (v-prediction target)
    L   = E_t [ w(t) || v_theta(z_t, t, c) - v ||^2 ],  w(t) = min(SNR_t, 5) / (SNR_t + 1)

(min-SNR-5 weighting for v-prediction, SNR_t = a_t / (1 - a_t)). The caption c is
replaced by "" for 10% of examples so that classifier-free guidance works at sampling time.
The text encoder (toy CLIP's text tower) and the VAE are frozen, as in SD.

Unlike SD 1.5's UNet, this one has self- and cross-attention at the highest latent
resolution too (16x16): Prompt-to-Prompt (notebook 02) needs the level that carries layout.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from ip2p_lib.infra.prompts import encode_prompts
from ip2p_lib.toyworld.pretrain import common, sd_assemble
from ip2p_lib.toyworld.pretrain.data import captioned_batch
from ip2p_lib.infra.trainloop import RunState, TrainLoop, make_ema, warmup_cosine

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel


@dataclass
class SDConfig:
    """UNet architecture, noise schedule and optimisation (defaults: the committed model)."""

    block_out_channels: tuple[int, ...] = (32, 64, 64)
    layers_per_block: int = 1
    heads: tuple[int, ...] = (2, 4, 4)  # heads of size 16
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    min_snr_gamma: float = 5.0
    caption_dropout: float = 0.1
    steps: int = 6000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 100
    lr_floor: float = 0.1
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    p_position: float = 0.75  # fraction of training captions that name the object's region (0.5 before position was learned)
    init_from: str | None = None  # an exported toy SD folder whose UNet to continue from (None: random init)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def build_unet(cfg: SDConfig, cross_attention_dim: int, latent_channels: int = 4, sample_size: int = 16) -> Any:
    """A UNet with cross-attention blocks at every level, 16x16 included."""
    from diffusers import UNet2DConditionModel

    n = len(cfg.block_out_channels)
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
        down_block_types=("CrossAttnDownBlock2D",) * n, up_block_types=("CrossAttnUpBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        attention_head_dim=tuple(cfg.heads), cross_attention_dim=cross_attention_dim,
        norm_num_groups=cfg.norm_num_groups,
    )


def train_noise_scheduler(cfg: SDConfig) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=cfg.prediction_type, clip_sample=False)


@torch.no_grad()
def encode_images(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """Scaled latents of [-1, 1] images (the posterior mode: the toy VAE is deterministic)."""
    return vae.encode(images).latent_dist.mode() * vae.config.scaling_factor


def diffusion_loss(unet: Any, scheduler: Any, z0: torch.Tensor, cond: torch.Tensor, gen: torch.Generator,
                   min_snr_gamma: float) -> torch.Tensor:
    """The min-SNR-weighted v- (or epsilon-) prediction loss of one batch (module docstring).

    `min_snr_gamma` <= 0 turns the weighting off (w = 1, the plain loss of the prediction type):
    min-SNR weights the noisiest timesteps, where the layout of the picture is decided, by
    about SNR_t, i.e. almost nothing, which slows learning where the object goes."""
    b = z0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=gen)
    noise = torch.randn(z0.shape, generator=gen)
    z_t = scheduler.add_noise(z0, noise, t)                       # sqrt(a_t) z0 + sqrt(1-a_t) e
    a_t = scheduler.alphas_cumprod[t]
    snr = a_t / (1 - a_t)
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(z0, noise, t)             # sqrt(a_t) e - sqrt(1-a_t) z0
        weight = snr.clamp(max=min_snr_gamma) / (snr + 1)
    else:
        target = noise
        weight = snr.clamp(max=min_snr_gamma) / snr
    if min_snr_gamma <= 0:
        weight = torch.ones_like(snr)
    pred = unet(z_t, t, encoder_hidden_states=cond).sample
    per_example = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
    return (weight * per_example).mean()


def unet_loop(cfg: SDConfig, cross_attention_dim: int, latent_channels: int, run_dir: Path,
              progress: bool = True, checkpoint_every_s: float = 180.0) -> TrainLoop:
    """A fresh (or `cfg.init_from`) UNet with its AdamW, warm-up/cosine schedule and EMA, in the
    training loop of `run_dir`.

    The EMA is diffusers' `EMAModel` with its default warm-up: update 1 copies the weights,
    update n >= 2 uses decay min(ema_decay, n / (n + 9)). It averages parameters only, which for
    this UNet is all of its weights (it has no buffers; tests/test_pretrain_sd.py checks)."""
    unet = build_unet(cfg, cross_attention_dim, latent_channels)
    if cfg.init_from:
        from diffusers import UNet2DConditionModel

        unet.load_state_dict(UNet2DConditionModel.from_pretrained(Path(cfg.init_from) / "unet",
                                                                  torch_dtype=torch.float32).state_dict())
    ema = make_ema(unet, cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup, cfg.steps, cfg.lr_floor))
    return common.make_loop(unet, opt, sched, cfg.steps, Path(run_dir), cfg.to_dict(), ema=ema, desc="unet",
                            progress=progress, checkpoint_every_s=checkpoint_every_s)


def train_unet(cfg: SDConfig, vae: Any, text_encoder: Any, tokenizer: Any, run_dir: Path,
               progress: bool = True, checkpoint_every_s: float = 180.0) -> tuple[Any, EMAModel, RunState]:
    """Train (or resume) the UNet on frozen VAE latents and frozen text features; returns the
    UNet (its training weights), its EMA and the run's state."""
    common.seed_everything(cfg.seed)
    vae.eval().requires_grad_(False)
    text_encoder.eval().requires_grad_(False)
    loop = unet_loop(cfg, text_encoder.config.hidden_size, vae.config.latent_channels, run_dir, progress,
                     checkpoint_every_s)
    unet = loop.unwrapped
    scheduler = train_noise_scheduler(cfg)

    def step_fn(step: int) -> torch.Tensor:
        rng, gen = common.step_rng(cfg.seed, step)
        _, images, captions = captioned_batch(rng, cfg.batch_size, cfg.p_position)
        drop = rng.uniform(size=cfg.batch_size) < cfg.caption_dropout   # classifier-free guidance
        captions = ["" if d else c for c, d in zip(captions, drop)]
        z0 = encode_images(vae, images)
        cond = encode_prompts(text_encoder, tokenizer, captions)
        return diffusion_loss(unet, scheduler, z0, cond, gen, cfg.min_snr_gamma)

    state = loop.run(lambda step, micro: step_fn(step))
    return unet.eval(), loop.ema, state


def default_config() -> SDConfig:
    return SDConfig()


def main(run_dir: Path, out: Path | None, cfg: SDConfig, threads: int = 2, progress: bool = True,
         vae_dir: Path | None = None, clip_dir: Path | None = None) -> dict[str, Any]:
    """Train the UNet with the exported toy VAE and toy CLIP, then assemble, evaluate and
    (if `out`) write the diffusers folder with its card (see `sd_assemble.py`)."""
    torch.set_num_threads(threads)
    vae, text_encoder, tokenizer = sd_assemble.frozen_parts(vae_dir, clip_dir)
    unet, ema, state = train_unet(cfg, vae, text_encoder, tokenizer, Path(run_dir), progress=progress)
    ema.copy_to(unet.parameters())
    return sd_assemble.finish(cfg, unet, vae, text_encoder, tokenizer, state, out, threads)


def evaluate_checkpoint(cfg: Any, run_dir: Path, out: Path | None, threads: int = 2) -> dict[str, Any]:
    """Interim export of a running/stopped UNet run: the EMA weights of its last checkpoint,
    assembled and judged."""
    common.check_run_dir(run_dir, need_checkpoint=True)
    torch.set_num_threads(threads)
    vae, text_encoder, tokenizer = sd_assemble.frozen_parts()
    loop = unet_loop(cfg, text_encoder.config.hidden_size, vae.config.latent_channels, run_dir, progress=False)
    loop.resume()
    unet = loop.ema_weights_to(loop.unwrapped).eval()
    return sd_assemble.finish(cfg, unet, vae, text_encoder, tokenizer, loop.state, out, threads,
                              interim=loop.state.step < cfg.steps)
