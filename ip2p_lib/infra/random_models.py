"""Tiny, randomly initialised diffusers models with the shapes of the real ones.

Tests, benchmarks and the notebooks' fallbacks need an InstructPix2Pix folder (8-channel
UNet + VAE + CLIP text encoder + tokenizer + scheduler) that loads with the real
`StableDiffusionInstructPix2PixPipeline.from_pretrained`, offline and in a second, and the
paired-image tests a Stable Diffusion folder (the same with a 4-channel UNet). These builders
make them from scratch: same classes and folder layout as `timbrooks/instruct-pix2pix` and
SD 1.5, only the sizes are small and the weights random.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ip2p_lib.infra.byte_bpe import clip_vocab


def tiny_unet_config(in_channels: int = 4, cross_attention_dim: int = 32, sample_size: int = 8) -> dict[str, Any]:
    """An SD-shaped UNet config (cross-attention down/up blocks) small enough for a CPU test."""
    return {
        "sample_size": sample_size,
        "in_channels": in_channels,
        "out_channels": 4,
        "layers_per_block": 1,
        "block_out_channels": (32, 32),
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "cross_attention_dim": cross_attention_dim,
        "attention_head_dim": 4,
        "norm_num_groups": 8,
    }


def tiny_clip_tokenizer(model_max_length: int = 16):
    """A real `CLIPTokenizer` with a tiny byte-level vocabulary (every byte, as a word piece and
    as a word end, plus a few merges), so sentences tokenize into many tokens, fully offline."""
    from transformers import CLIPTokenizer

    merges = [("m", "a"), ("ma", "k"), ("r", "e"), ("re", "d</w>"), ("t", "h"), ("th", "e</w>")]
    return CLIPTokenizer(vocab=clip_vocab(merges), merges=merges, model_max_length=model_max_length)


def _tiny_parts(seed: int, unet_in_channels: int, unet_sample_size: int, **scheduler: Any) -> dict[str, Any]:
    """The components of a tiny SD-shaped pipeline (random weights, seeded): UNet, VAE, text
    encoder, tokenizer and an Euler ancestral scheduler (SD's betas unless `scheduler` overrides)."""
    import torch
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = tiny_clip_tokenizer()
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    unet = UNet2DConditionModel(**tiny_unet_config(in_channels=unet_in_channels, sample_size=unet_sample_size))
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=unet_sample_size * 2,
    )
    settings = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", **scheduler}
    return {"vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "unet": unet,
            "scheduler": EulerAncestralDiscreteScheduler(**settings)}


def build_tiny_ip2p(folder: str | Path, seed: int = 0, unet_sample_size: int = 8) -> Path:
    """Save a random, tiny InstructPix2Pix pipeline folder and return its path.

    8-channel UNet (32/32 channels), a 2-block VAE (scale factor 2), a 2-layer CLIP text
    encoder of width 32, the tiny tokenizer and SD's Euler ancestral scheduler config.
    `StableDiffusionInstructPix2PixPipeline.from_pretrained(folder)` loads it.
    """
    from diffusers import StableDiffusionInstructPix2PixPipeline

    pipe = StableDiffusionInstructPix2PixPipeline(
        **_tiny_parts(seed, 8, unet_sample_size), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder


def build_tiny_sd(folder: str | Path, seed: int = 0, unet_sample_size: int = 8,
                  prediction_type: str = "epsilon") -> Path:
    """Save a random, tiny Stable Diffusion pipeline folder (text to image) and return its path.

    The parts of `build_tiny_ip2p` with a 4-channel UNet: images of 2 * `unet_sample_size`
    pixels; `prediction_type` "epsilon" (SD 1.5) or "v_prediction" (toy SD).
    `StableDiffusionPipeline.from_pretrained(folder)` loads it.
    """
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **_tiny_parts(seed, 4, unet_sample_size, prediction_type=prediction_type, steps_offset=1), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    folder = Path(folder)
    pipe.save_pretrained(folder)
    return folder
