"""Stable Diffusion's text conditioning: CLIP's last hidden states of prompts padded to 77 tokens.

Every SD-family model here (toy SD, SD 1.5, InstructPix2Pix) conditions its UNet the same way,
so one function encodes prompts for all of them: toy SD's training, and the editor's
instruction and null text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # torch is imported when a prompt is encoded, so `ip2p --help` stays light
    import torch


def encode_prompts(text_encoder: Any, tokenizer: Any, prompts: Sequence[str], device: Any = None) -> torch.Tensor:
    """(len(prompts), L, D) hidden states: each prompt tokenized, padded (and truncated) to the
    tokenizer's `model_max_length` (77 for CLIP), run through the text encoder on `device`
    (default: the encoder's own)."""
    import torch

    ids = tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(device if device is not None else text_encoder.device))[0]
