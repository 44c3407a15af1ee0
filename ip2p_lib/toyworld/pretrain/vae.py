"""Toy SD's autoencoder: `AutoencoderKL`, 64x64x3 renders <-> 16x16x4 latents.

Stable Diffusion denoises in the latent space of a KL-regularised autoencoder (SD 1.5:
512x512x3 -> 64x64x4, `scaling_factor` 0.18215 so that scaled latents have unit variance).
Here the same class with small channels maps 64x64x3 -> 16x16x4. Following the measured
recipe (shared/MEASUREMENTS.md, run 2) it is trained as a plain autoencoder on the posterior
mean with a tiny KL weight:

    loss = |x - D(mu(x))|_1 + |x - D(mu(x))|_2^2 + beta * KL(q(z|x) || N(0, I)),  beta = 1e-6

and `scaling_factor` = 1 / std(latents), measured on held-out renders after training.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ip2p_lib.toyworld import attribute_accuracy, render
from ip2p_lib.toyworld.pretrain import common
from ip2p_lib.infra.trainloop import RunState, warmup_cosine
from ip2p_lib.toyworld.pretrain.data import held_out_scenes, images_to_tensor, scene_batch, tensor_to_images


@dataclass
class VAEConfig:
    """Architecture and optimisation of the toy autoencoder (defaults: the committed model)."""

    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    norm_num_groups: int = 8
    latent_channels: int = 4
    steps: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 50
    lr_floor: float = 0.05
    kl_weight: float = 1e-6
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def build_vae(cfg: VAEConfig) -> "AutoencoderKL":  # noqa: F821
    """A fresh `AutoencoderKL`; the last block does not downsample, so 3 blocks give 4x."""
    from diffusers import AutoencoderKL

    n = len(cfg.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels, norm_num_groups=cfg.norm_num_groups,
        sample_size=64, mid_block_add_attention=False,
    )


def vae_loss(vae: Any, x: torch.Tensor, kl_weight: float) -> torch.Tensor:
    """L1 + MSE of the reconstruction from the posterior mean, plus `kl_weight` * KL."""
    posterior = vae.encode(x).latent_dist
    recon = vae.decode(posterior.mean).sample
    return F.l1_loss(recon, x) + F.mse_loss(recon, x) + kl_weight * posterior.kl().mean()


def train_vae(cfg: VAEConfig, run_dir: Path, progress: bool = True, checkpoint_every_s: float = 180.0) -> tuple[Any, RunState]:
    """Train (or resume training) the autoencoder in `run_dir`; returns the model and its run state."""
    common.seed_everything(cfg.seed)
    vae = build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup, cfg.steps, cfg.lr_floor))

    def step_fn(step: int) -> torch.Tensor:
        rng, _ = common.step_rng(cfg.seed, step)
        _, x = scene_batch(rng, cfg.batch_size)
        return vae_loss(vae, x, cfg.kl_weight)

    state = common.train(step_fn, vae, opt, sched, cfg.steps, Path(run_dir), cfg.to_dict(),
                         desc="vae", progress=progress, checkpoint_every_s=checkpoint_every_s)
    return vae.eval(), state


@torch.no_grad()
def evaluate_vae(vae: Any, n: int = 500, batch: int = 100) -> dict[str, float]:
    """PSNR (dB) and oracle accuracy on reconstructions of `n` held-out renders, and the
    latent statistics that set `scaling_factor` (std over every latent value)."""
    scenes = held_out_scenes(n)
    recon, latents, sq_err = [], [], []
    for i in range(0, n, batch):
        chunk = scenes[i:i + batch]
        x = images_to_tensor(np.stack([render(s) for s in chunk]))
        mu = vae.encode(x).latent_dist.mean
        out = vae.decode(mu).sample.clamp(-1, 1)
        sq_err.append(((out - x) / 2).pow(2).flatten(1).mean(1))  # in [0, 1] units
        latents.append(mu)
        recon.append(tensor_to_images(out))
    mse = torch.cat(sq_err)
    z = torch.cat(latents)
    acc = attribute_accuracy(scenes, np.concatenate(recon))
    return {
        "psnr_db": float((10 * torch.log10(1 / mse.clamp_min(1e-10))).mean()),
        **{f"oracle_{k}": v for k, v in acc.items()},
        "latent_mean": float(z.mean()), "latent_std": float(z.std()),
        "scaling_factor": float(1 / z.std()),
    }


def export_vae(vae: Any, folder: Path, scaling_factor: float) -> None:
    """Save as a diffusers `AutoencoderKL` folder (fp16 safetensors; loads as fp32)."""
    vae.register_to_config(scaling_factor=round(float(scaling_factor), 5))
    vae.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    vae.to(torch.float32)


def main(run_dir: Path, out: Path | None, cfg: VAEConfig, threads: int = 2, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate and (if `out`) export the VAE with its model card."""
    torch.set_num_threads(threads)
    t0 = time.time()
    vae, state = train_vae(cfg, run_dir, progress=progress)
    metrics = evaluate_vae(vae)
    print({k: round(v, 4) for k, v in metrics.items()})
    if out is not None:
        export_vae(vae, Path(out), metrics["scaling_factor"])
        common.write_card(Path(out), "Toy SD autoencoder (AutoencoderKL, 64x64x3 -> 16x16x4)", {
            "What it stands in for": "Stable Diffusion 1.5's VAE (512x512x3 -> 64x64x4).",
            "Config": cfg.to_dict(),
            "Training": {"steps": state.step, "train_wall_s": round(state.elapsed_s), "machine": common.machine(),
                         "data": "random renders of the miniature world, drawn per step from seed (seed, step)",
                         "loss": common.loss_summary(state.losses)},
            "Quality (500 held-out renders, reconstruction from the posterior mean)": {k: round(v, 4) for k, v in metrics.items()},
            "Reproduce": "`ip2p toy pretrain vae` (see the sd card for the whole folder)",
        })
    metrics["wall_s"] = time.time() - t0
    return metrics


def default_config() -> VAEConfig:
    return VAEConfig()
