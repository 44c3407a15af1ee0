"""§3.2 UNet surgery: give Stable Diffusion's UNet 4 more input channels for the image.

InstructPix2Pix conditions on the input image by concatenating its latent to the noisy
latent, channel-wise: the UNet's input goes from z_t (4 channels) to [z_t, E(c_I)] (8).
Only the first convolution, `conv_in`, sees the input channels, so only it changes:

    conv_in'(x) = W' * x + b,   W' = [W | 0],   x = [z_t ; E(c_I)]
               = W * z_t + 0 * E(c_I) + b = conv_in(z_t)

With the new weights zero and the bias kept, the widened UNet computes exactly what the
text-to-image UNet computed, whatever the extra channels hold: fine-tuning starts from
Stable Diffusion itself, not from a perturbed copy.

`SD15_UNET_CONFIG` is Stable Diffusion 1.5's UNet config (kept in `infra.models`, beside the
model's hub id, and named here too), for counting its parameters without downloading anything
(notebook 04_unet_surgery).
"""

from __future__ import annotations

import torch
from torch import nn

from ip2p_lib.infra.models import SD15_UNET_CONFIG  # noqa: F401  (re-exported: notebook 04 and its tests)


def widen_conv_in(unet: nn.Module, in_channels: int = 8) -> nn.Module:
    """Widen `unet.conv_in` to `in_channels` inputs, in place; return `unet`.

    Old weights go into the first input channels, the new input channels get zero weights,
    the bias is copied unchanged, and `unet.config.in_channels` is updated so that a folder
    saved with `save_pretrained` reloads as an `in_channels`-channel model.
    """
    old: nn.Conv2d = unet.conv_in
    if in_channels < old.in_channels:
        raise ValueError(f"conv_in already has {old.in_channels} input channels, more than {in_channels}")
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
        device=old.weight.device,
        dtype=old.weight.dtype,
    )
    with torch.no_grad():
        new.weight.zero_()  # W' = [0 | 0]
        new.weight[:, : old.in_channels].copy_(old.weight)  # W' = [W | 0]
        if old.bias is not None:
            new.bias.copy_(old.bias)  # b' = b: the term diffusers' training example drops
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def widen_conv_in_like_diffusers_example(unet: nn.Module, in_channels: int = 8, seed: int = 0) -> nn.Module:
    """Reproduce, for comparison only, how diffusers' `examples/instruct_pix2pix/
    train_instruct_pix2pix.py` widens `conv_in`: a fresh `nn.Conv2d`, its weight zeroed and
    the old weight copied into the first 4 input channels, but its bias left at PyTorch's
    random default initialisation (uniform in +-1/sqrt(fan_in)) instead of the trained bias.

    The result no longer computes what the text-to-image UNet computed. `seed` fixes the
    random bias so the notebook's numbers are reproducible. Do not use this to build models.
    """
    old: nn.Conv2d = unet.conv_in
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding)
    torch.random.set_rng_state(generator_state)
    new = new.to(device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels].copy_(old.weight)
        # (the example never touches new.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device, where no memory is allocated)."""
    return sum(p.numel() for p in module.parameters())


def conv_in_parameters(unet: nn.Module) -> int:
    """Parameters of `conv_in` alone: the only layer the surgery changes."""
    return count_parameters(unet.conv_in)
