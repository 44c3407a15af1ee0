"""What the paper's pair generation costs (§3.1.2), counted rather than guessed.

The authors sample every pair with Stable Diffusion 1.5 at 512x512: `PAPER_STEPS` Euler ancestral
steps, each one UNet call on the CFG batch [uncond, uncond, cond caption 0, cond caption 1] (4 rows
of a 64x64x4 latent), then one VAE decode per image:

    FLOPs per pair = steps * 4 * unet_row + 2 * vae_decode

`sd_flops` counts one UNet row and one decode with PyTorch's `FlopCounterMode` (`count_flops`); `sd15_flops` does it
for SD 1.5 on the meta device: the models are built without weights and nothing is computed, so the
count needs no download and takes seconds. (Notebook 02 counts toy SD's the same way, on the CPU.) The counter counts the matrix products and convolutions (2 FLOPs per multiply-add),
which are nearly all of the work; norms, activations and softmax are left out.

The paper's scale: `PAPER_CAPTION_PAIRS` caption pairs from the text step, `PAPER_SAMPLES` samples
each, at most `PAPER_KEPT_PER_CAPTION_PAIR` kept by the CLIP filter, `PAPER_RELEASED` examples in the
released clip-filtered set.
"""

from __future__ import annotations

from typing import Any, Callable

from ip2p_lib.infra.models import SD15_UNET_CONFIG, SD15_VAE_CONFIG
from ip2p_lib.p2p.sampler import PAPER_STEPS

PAPER_CAPTION_PAIRS = 454_445      # triples (input caption, instruction, edited caption) of §3.1.1
PAPER_SAMPLES = 100                # pairs sampled per caption pair, each with its own seed, cfg and p
PAPER_KEPT_PER_CAPTION_PAIR = 4    # the filter keeps at most 4, best directional similarity first
PAPER_RELEASED = 313_010           # examples in timbrooks/instructpix2pix-clip-filtered
CFG_ROWS = 4                       # UNet rows per pair per step: [uncond, uncond, cond 0, cond 1]
A100_PEAK_TFLOPS = 312.0           # dense fp16/bf16 tensor-core peak of an A100
A100_UTILISATION = 0.4             # the share of the peak a diffusion sampler sustains (an assumption)


def count_flops(fn: Callable[[], Any]) -> float:
    """The FLOPs `fn()` runs (matrix products and convolutions, forward and backward alike),
    counted by `FlopCounterMode` with attention on its math path.

    The math path matters: fused CPU attention kernels have no FLOP formula (their QK^T and PV
    products would go uncounted); the math path runs them as counted matrix products, on any
    device, the meta device included."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def sd_flops(unet: Any, vae: Any, tokens: int = 77) -> dict[str, float]:
    """FLOPs of one row of `unet` (a latent of its own `sample_size`, `tokens` text tokens) and one
    `vae` decode of that latent, counted where the models are: on the meta device nothing runs."""
    import torch

    device = next(unet.parameters()).device
    side = unet.config.sample_size
    latent = torch.randn(1, unet.config.in_channels, side, side, device=device)
    text = torch.randn(1, tokens, unet.config.cross_attention_dim, device=device)
    with torch.no_grad():
        unet_row = count_flops(lambda: unet(latent, torch.tensor([500], device=device), encoder_hidden_states=text))
        vae_decode = count_flops(lambda: vae.decode(torch.randn(1, vae.config.latent_channels, side, side,
                                                                device=device)))
    return {"unet_row": unet_row, "vae_decode": vae_decode}


def sd15_flops() -> dict[str, float]:
    """`sd_flops` of SD 1.5 (64x64x4 latent, 77 text tokens, decoded to 512x512), built on the meta device."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    with torch.device("meta"):
        unet, vae = UNet2DConditionModel(**SD15_UNET_CONFIG), AutoencoderKL(**SD15_VAE_CONFIG)
    return sd_flops(unet, vae)


def pair_flops(flops: dict[str, float], steps: int = PAPER_STEPS, rows: int = CFG_ROWS) -> float:
    """FLOPs of one pair: `steps` UNet calls of `rows` rows, and two decodes."""
    return steps * rows * flops["unet_row"] + 2 * flops["vae_decode"]


def generation_cost(flops: dict[str, float], steps: int = PAPER_STEPS, caption_pairs: int = PAPER_CAPTION_PAIRS,
                    samples: int = PAPER_SAMPLES, tflops: float = A100_PEAK_TFLOPS * A100_UTILISATION) -> dict[str, Any]:
    """The paper's generation run: pairs, FLOPs, and A100-hours at a sustained `tflops` (TFLOP/s)."""
    per_pair = pair_flops(flops, steps)
    pairs = caption_pairs * samples
    total = per_pair * pairs
    return {"flops_unet_row": flops["unet_row"], "flops_vae_decode": flops["vae_decode"], "steps": steps,
            "flops_per_pair": per_pair, "pairs": pairs, "total_flops": total, "a100_tflops_assumed": tflops,
            "a100_seconds_per_pair": per_pair / (tflops * 1e12), "a100_hours": total / (tflops * 1e12) / 3600}
