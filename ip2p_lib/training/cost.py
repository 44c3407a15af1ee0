r"""What the paper's training costs (§3.2), counted rather than guessed.

The paper trains 10,000 steps at batch 1024 on 256x256 images (32x32x4 latents) on 8 A100s
(40 GB) in 25.5 hours. One example of one step runs:

    UNet forward    on [z_t ; E(x)]: 8 x 32 x 32, 77 text tokens      F_fwd   (trained)
    UNet backward   gradients of the weights and of the activations    F_bwd   (counted: ~ 2 F_fwd)
    VAE encoder     on the edited and on the input image, 256 x 256    2 F_vae (frozen: forward only)
    text encoder    CLIP ViT-L/14's text tower on the instruction      F_text  (frozen: forward only)

    FLOPs = steps x batch x (F_fwd + F_bwd + 2 F_vae + F_text)                         "model FLOPs"
          + steps x batch x F_fwd         with gradient checkpointing (the authors': use_checkpoint),
                                          which runs each block's forward again during the backward

Every term is counted by `p2p.cost.count_flops` (PyTorch's `FlopCounterMode`: matrix products
and convolutions, 2 FLOPs per multiply-add; norms, activations and softmax are left out) on
SD 1.5-shaped models built on the meta device: no weights, nothing computed, nothing downloaded.
The backward is counted too, not assumed: the counter sees the backward's convolutions and
products. Each layer's backward is two of its forward (the input's gradient and the weight's),
or one where its input needs no gradient: the keys and values of the text states, `conv_in`.
For the UNet that comes to 1.98 F_fwd. Left out: the AdamW and EMA updates (~20 FLOPs per
weight per STEP, not per example) and the null text CLIP("") (one prompt per step), each about
1e-5 of the rest. The recompute of gradient checkpointing is taken as one whole forward more
(an assumption, reported apart: the checkpointed resnet and transformer blocks are nearly all
of the forward).

Against the paper's 25.5 hours on 8 GPUs this gives the FLOP rate each GPU achieved and its
share of the A100's peaks. The authors train in fp32 (PAPER_NOTES); their environment pins
PyTorch 1.11, whose defaults let fp32 convolutions and matrix products run as TF32 on an A100,
so the TF32 peak is the fair one, the fp16 peak what mixed precision could aim at.

At 256 px the UNet is the 512 px UNet of `p2p.cost` (`sd15_flops()["unet_row"]`, one row of a
64x64x4 latent, ~0.80 TFLOP) on a quarter of the pixels: convolutions and per-token layers cost
a quarter, self-attention's QK^T and PV products (N^2 in the N latent pixels) a sixteenth, the
cross-attention keys and values of the 77 text tokens the same (tests/test_training_cost.py
checks the count against this by hand).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ip2p_lib.infra.models import SD15_TEXT_ENCODER_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG
from ip2p_lib.p2p.cost import A100_PEAK_TFLOPS, count_flops

PAPER_STEPS = 10_000
PAPER_BATCH = 1024           # 32 per GPU x 8 GPUs x 4 accumulation
PAPER_RESOLUTION = 256
PAPER_HOURS = 25.5
PAPER_GPUS = 8               # A100 40 GB
TEXT_TOKENS = 77
# A100 dense peaks, TFLOP/s (NVIDIA's A100 datasheet): tensor cores at fp16/bf16 and at TF32, and plain fp32.
A100_PEAKS: dict[str, float] = {"fp16/bf16": A100_PEAK_TFLOPS, "TF32": 156.0, "fp32 (no tensor cores)": 19.5}


def forward_backward_flops(model: Any, *inputs: Any, **kwargs: Any) -> tuple[float, float]:
    """(forward, backward) FLOPs of `model(*inputs, **kwargs)` and of the backward of a mean-square
    loss of its output (a diffusers output's `.sample`), on whatever device the model is."""
    import torch

    out: dict[str, Any] = {}

    def forward() -> None:
        y = model(*inputs, **kwargs)
        out["y"] = getattr(y, "sample", y)

    def backward() -> None:
        out["y"].float().pow(2).mean().backward()   # the loss: || pred - target ||^2 (target: no gradient)

    with torch.enable_grad():
        fwd = count_flops(forward)
        bwd = count_flops(backward)
    return fwd, bwd


def unet_flops(unet: Any, resolution: int, vae_factor: int, tokens: int = TEXT_TOKENS) -> tuple[float, float]:
    """(forward, backward) FLOPs of one example through `unet` at `resolution` pixels."""
    import torch

    device = next(unet.parameters()).device
    side = resolution // vae_factor
    latent = torch.randn(1, unet.config.in_channels, side, side, device=device)
    text = torch.randn(1, tokens, unet.config.cross_attention_dim, device=device)
    return forward_backward_flops(unet, latent, torch.tensor([500], device=device), encoder_hidden_states=text)


def vae_encode_flops(vae: Any, resolution: int) -> float:
    """FLOPs of one image through the VAE encoder (no gradient: the VAE is frozen)."""
    import torch

    device = next(vae.parameters()).device
    image = torch.randn(1, vae.config.in_channels, resolution, resolution, device=device)
    with torch.no_grad():
        return count_flops(lambda: vae.encode(image).latent_dist.mode())


def text_encoder_flops(text_encoder: Any, tokens: int = TEXT_TOKENS) -> float:
    """FLOPs of one prompt of `tokens` tokens through the text encoder (frozen)."""
    import torch

    device = next(text_encoder.parameters()).device
    ids = torch.zeros(1, tokens, dtype=torch.long, device=device)
    with torch.no_grad():
        return count_flops(lambda: text_encoder(ids))


@dataclass(frozen=True)
class TrainingCost:
    """A training run's FLOPs (per example, from the counter) and what its hardware achieved."""

    steps: int
    batch: int
    resolution: int
    unet_forward: float       # per example
    unet_backward: float      # per example, counted
    vae_encode: float         # per image; two per example
    text_encode: float        # per example
    hours: float = PAPER_HOURS
    gpus: int = PAPER_GPUS

    @property
    def per_example(self) -> float:
        """F_fwd + F_bwd + 2 F_vae + F_text: the model FLOPs of one example."""
        return self.unet_forward + self.unet_backward + 2 * self.vae_encode + self.text_encode

    def total(self, recompute: bool = False) -> float:
        """steps x batch x per example; `recompute`: plus one more UNet forward per example
        (gradient checkpointing)."""
        return self.steps * self.batch * (self.per_example + (self.unet_forward if recompute else 0.0))

    def tflops_per_gpu(self, recompute: bool = False) -> float:
        """The FLOP rate each GPU sustained over the run, TFLOP/s."""
        return self.total(recompute) / (self.hours * 3600 * self.gpus) / 1e12

    def utilisation(self, peak_tflops: float, recompute: bool = False) -> float:
        """The achieved rate as a share of `peak_tflops`."""
        return self.tflops_per_gpu(recompute) / peak_tflops

    def table(self) -> str:
        """The numbers as a Markdown table."""
        t = 1e12
        rows = [
            ("UNet forward, per example", f"{self.unet_forward / t:.3f} TFLOP"),
            ("UNet backward, per example (counted)",
             f"{self.unet_backward / t:.3f} TFLOP ({self.unet_backward / self.unet_forward:.2f}x the forward)"),
            ("VAE encoder, x2 images per example", f"{2 * self.vae_encode / t:.3f} TFLOP"),
            ("text encoder, per example", f"{self.text_encode / t:.4f} TFLOP"),
            ("per example (model FLOPs)", f"{self.per_example / t:.3f} TFLOP"),
            (f"run: {self.steps:,} steps x batch {self.batch:,} at {self.resolution} px",
             f"{self.total():.3g} FLOP ({self.total(recompute=True):.3g} with checkpointing's recompute)"),
            (f"{self.hours} h on {self.gpus} GPUs: achieved per GPU",
             f"{self.tflops_per_gpu():.1f} TFLOP/s ({self.tflops_per_gpu(recompute=True):.1f} with recompute)"),
        ]
        rows += [(f"share of the A100 {name} peak ({peak:g} TFLOP/s)",
                  f"{self.utilisation(peak):.1%} ({self.utilisation(peak, recompute=True):.1%} with recompute)")
                 for name, peak in A100_PEAKS.items()]
        return "\n".join(["| quantity | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)])


def training_cost(unet: Any, vae: Any, text_encoder: Any, steps: int, batch: int, resolution: int,
                  hours: float = PAPER_HOURS, gpus: int = PAPER_GPUS, tokens: int = TEXT_TOKENS) -> TrainingCost:
    """Count one example of `unet` (its input already 8 channels), `vae` and `text_encoder` at
    `resolution`, and scale to `steps` x `batch`."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    fwd, bwd = unet_flops(unet, resolution, factor, tokens)
    return TrainingCost(steps=steps, batch=batch, resolution=resolution, unet_forward=fwd, unet_backward=bwd,
                        vae_encode=vae_encode_flops(vae, resolution), text_encode=text_encoder_flops(text_encoder, tokens),
                        hours=hours, gpus=gpus)


def sd15_ip2p_models() -> tuple[Any, Any, Any]:
    """SD 1.5-shaped (8-channel UNet, VAE, CLIP ViT-L/14 text tower), on the meta device."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        return (UNet2DConditionModel(**{**SD15_UNET_CONFIG, "in_channels": 8}), AutoencoderKL(**SD15_VAE_CONFIG),
                CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER_CONFIG)))


def paper_training_cost(steps: int = PAPER_STEPS, batch: int = PAPER_BATCH, resolution: int = PAPER_RESOLUTION,
                        hours: float = PAPER_HOURS, gpus: int = PAPER_GPUS) -> TrainingCost:
    """The paper's training run, counted on SD 1.5-shaped models on the meta device (seconds)."""
    unet, vae, text_encoder = sd15_ip2p_models()
    return training_cost(unet, vae, text_encoder, steps, batch, resolution, hours, gpus)
