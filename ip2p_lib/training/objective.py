r"""§3.2 The InstructPix2Pix training objective: one loss for one batch of edit pairs.

The paper's Eq. 2, for an example (input image x, instruction c_T, edited image y):

    L = E_{E(y), E(x), c_T, eps ~ N(0, 1), t} [ || eps - eps_theta(z_t, t, E(x), c_T) ||^2 ]

computed here as the authors' code computes it, step by step:

    z_0   = E(y) = sample of q(z | y) * s           target latent: SAMPLED, times s = 0.18215
    c_I   = E(x) = mode of q(z | x)                  image conditioning: the MODE, NOT times s
    t     ~ U{0, ..., T - 1}                          one timestep per example (T = 1000 for SD)
    eps   ~ N(0, I)
    z_t   = sqrt(a_t) z_0 + sqrt(1 - a_t) eps        the scheduler's forward process (add_noise)
    r     ~ U(0, 1)                                   one draw per example (§3.2 dropout)
    c_T  <- null text  if r < 0.10                    null text = CLIP(""), NOT zeros
    c_I  <- 0          if 0.05 <= r < 0.15            null image = a zero latent
    pred  = eps_theta([z_t ; c_I], t, c_T)            8 input channels: the UNet after surgery
    L     = mean (pred - target)^2                    target = eps (epsilon models) or
                                                      v = sqrt(a_t) eps - sqrt(1 - a_t) z_0 (v models)

The unscaled image latent is the authors' accident, kept because the released checkpoint
depends on it; `ip2p_lib.editor` feeds the UNet the same unscaled mode at sampling time, so
a model trained here edits with the editor. The null text is the text encoder's embedding of
the empty prompt: diffusers issue #7920 shows that zeros give a different (worse) model.

Randomness comes from ONE generator, drawn in a fixed order so that a test can redo the
computation by hand: (1) the target latent's sample, (2) the timesteps, (3) the noise,
(4) the dropout draws r.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ip2p_lib.guidance.dropout import conditioning_dropout
from ip2p_lib.infra.prompts import encode_prompts

BATCH_KEYS = ("original", "edited", "edit_prompt")
PREDICTION_TYPES = ("epsilon", "v_prediction")


# ---------------------------------------------------------------- the null conditionings


def null_text_embedding(text_encoder: Any, tokenizer: Any) -> torch.Tensor:
    """(1, L, D): the text encoder's embedding of "" (the empty prompt padded to L tokens).

    Not zeros: CLIP("") is a sequence of start, end and padding tokens run through the encoder,
    the same vector the editor uses for its unconditional branches."""
    return encode_prompts(text_encoder, tokenizer, [""])


@dataclass
class NullConditioning:
    """What a dropped conditioning becomes: `text` (1, L, D) = CLIP(""), the image = zeros."""

    text: torch.Tensor

    @classmethod
    def from_encoder(cls, text_encoder: Any, tokenizer: Any) -> "NullConditioning":
        return cls(text=null_text_embedding(text_encoder, tokenizer))

    @staticmethod
    def image_like(image_latent: torch.Tensor) -> torch.Tensor:
        """The null image: a zero latent of the image conditioning's shape."""
        return torch.zeros_like(image_latent)


def apply_conditioning_dropout(text: torch.Tensor, image: torch.Tensor, null: NullConditioning,
                               r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace the text by the null text and the image latent by zeros where `r` says (§3.2).

    `text` (B, L, D), `image` (B, C, h, w), `r` (B,) in [0, 1). Returns (text, image, drop_text,
    drop_image), the masks from `guidance.conditioning_dropout`: text dropped if r < 0.10,
    image if 0.05 <= r < 0.15 (5% text only, 5% both, 5% image only)."""
    drop_text, drop_image = conditioning_dropout(r)
    null_text = null.text.to(text.device, text.dtype).expand_as(text)
    text = torch.where(drop_text.to(text.device)[:, None, None], null_text, text)             # c_T <- CLIP("")
    image = torch.where(drop_image.to(image.device)[:, None, None, None],
                        NullConditioning.image_like(image), image)                              # c_I <- 0
    return text, image, drop_text, drop_image


# ---------------------------------------------------------------- checks


def check_batch(batch: Any) -> int:
    """The batch size of a valid training batch; a clear ValueError otherwise."""
    if not isinstance(batch, dict):
        raise ValueError(f"a training batch is a dict with keys {', '.join(BATCH_KEYS)}, got {type(batch).__name__}")
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise ValueError(f"training batch lacks key(s) {', '.join(missing)}; it needs {', '.join(BATCH_KEYS)}")
    shapes = {}
    for key in ("original", "edited"):
        x = batch[key]
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"batch[{key!r}] must be a (B, 3, H, W) tensor of RGB images in [-1, 1], got {shape}")
        shapes[key] = tuple(x.shape)
    if shapes["original"] != shapes["edited"]:
        raise ValueError(f"original and edited images differ in shape: {shapes['original']} vs {shapes['edited']}")
    prompts = batch["edit_prompt"]
    if isinstance(prompts, str) or not isinstance(prompts, Sequence) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("batch['edit_prompt'] must be a list of strings, one per example")
    if len(prompts) != shapes["original"][0]:
        raise ValueError(f"{len(prompts)} edit prompts for {shapes['original'][0]} image pairs")
    return shapes["original"][0]


def check_models(unet: Any, vae: Any, scheduler: Any) -> None:
    """The UNet takes [z_t ; c_I] (2 x the VAE's latent channels), the scheduler is a DDPM-form
    training scheduler with a known prediction type; a clear ValueError otherwise."""
    latent = vae.config.latent_channels
    if unet.config.in_channels != 2 * latent:
        raise ValueError(f"the UNet takes {unet.config.in_channels} input channels; InstructPix2Pix needs "
                         f"{2 * latent} ([noisy latent ; image latent]): widen it with ip2p_lib.surgery.widen_conv_in")
    if not (hasattr(scheduler, "add_noise") and hasattr(scheduler, "get_velocity")
            and hasattr(scheduler, "alphas_cumprod")):
        raise ValueError(f"{type(scheduler).__name__} cannot noise training examples (no alphas_cumprod/get_velocity); "
                         "use diffusers.DDPMScheduler.from_config(scheduler.config)")
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction type {scheduler.config.prediction_type!r} is not supported; "
                         f"choose one of {', '.join(PREDICTION_TYPES)}")


# ---------------------------------------------------------------- the loss


@dataclass
class EncodedBatch:
    """A batch after the frozen encoders: what the loss needs, and nothing random yet.

    `target_mean`, `target_std` (B, C, h, w): the VAE posterior q(z | y) of the edited image, so
    that the target latent can be SAMPLED per step; `image` (B, C, h, w): the posterior MODE of
    the input image (unscaled); `text` (B, L, D): the instruction's text-encoder states. The
    encoders are frozen, so a training set small enough can be encoded once (`training.data`)."""

    target_mean: torch.Tensor
    target_std: torch.Tensor
    image: torch.Tensor
    text: torch.Tensor

    def __len__(self) -> int:
        return self.target_mean.shape[0]

    def index(self, rows: Any) -> "EncodedBatch":
        """The examples `rows` (a list or tensor of indices) of this batch."""
        return EncodedBatch(self.target_mean[rows], self.target_std[rows], self.image[rows], self.text[rows])


@torch.no_grad()
def encode_batch(vae: Any, text_encoder: Any, tokenizer: Any, batch: dict) -> EncodedBatch:
    """Run the frozen VAE (on both images) and text encoder (on the instructions) over `batch`."""
    check_batch(batch)
    vae_device, vae_dtype = vae.device, vae.dtype
    posterior = vae.encode(batch["edited"].to(vae_device, vae_dtype)).latent_dist        # q(z | y)
    image = vae.encode(batch["original"].to(vae_device, vae_dtype)).latent_dist.mode()   # mode of q(z | x)
    text = encode_prompts(text_encoder, tokenizer, batch["edit_prompt"])
    return EncodedBatch(posterior.mean, posterior.std, image, text)


def sample_target(encoded: EncodedBatch, scaling_factor: float, generator: torch.Generator | None) -> torch.Tensor:
    """(1) z_0 = a sample of q(z | y), times the scaling factor: mean + std * eps, the draw
    `DiagonalGaussianDistribution.sample(generator)` makes (same generator, same numbers)."""
    mean = encoded.target_mean
    gen_device = generator.device if generator is not None else mean.device
    eps = torch.randn(mean.shape, generator=generator, device=gen_device, dtype=mean.dtype).to(mean.device)
    return (mean + encoded.target_std * eps) * scaling_factor


def loss_on_latents(unet: Any, scheduler: Any, encoded: EncodedBatch, scaling_factor: float,
                    null: NullConditioning, generator: torch.Generator | None = None,
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of an encoded batch: draws (1)-(4) of the module docstring, then one UNet call."""
    b = len(encoded)
    bare = getattr(unet, "module", unet)  # a DistributedDataParallel wrapper forwards, the model knows its device
    device, dtype = bare.device, bare.dtype
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z0 = sample_target(encoded, scaling_factor, generator).to(device, dtype)   # (1) target latent, scaled
    image_cond = encoded.image.to(device, dtype)                                 # c_I: mode, NOT scaled
    text_cond = encoded.text.to(device, dtype)

    # (2) t ~ U{0, ..., T - 1}, one per example
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,), generator=generator,
                              device=gen_device).to(device)
    # (3) eps ~ N(0, I); z_t = sqrt(a_t) z_0 + sqrt(1 - a_t) eps
    noise = torch.randn(z0.shape, generator=generator, device=gen_device, dtype=z0.dtype).to(device)
    z_t = scheduler.add_noise(z0, noise, timesteps)
    # (4) r ~ U(0, 1) per example: text -> CLIP(""), image -> 0 (§3.2)
    r = torch.rand(b, generator=generator, device=gen_device).to(device)
    text_cond, image_cond, drop_text, drop_image = apply_conditioning_dropout(text_cond, image_cond, null, r)

    # eps_theta([z_t ; c_I], t, c_T): 8 input channels
    pred = unet(torch.cat([z_t, image_cond], dim=1), timesteps, encoder_hidden_states=text_cond).sample
    if scheduler.config.prediction_type == "epsilon":
        target = noise                                                  # eps
    else:
        target = scheduler.get_velocity(z0, noise, timesteps)          # v = sqrt(a_t) eps - sqrt(1 - a_t) z_0
    loss = F.mse_loss(pred.float(), target.float(), reduction="mean")  # || pred - target ||^2, mean
    info = {"timesteps": timesteps, "r": r, "drop_text": drop_text, "drop_image": drop_image}
    return loss, info


def training_loss(unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler: Any, batch: dict,
                  generator: torch.Generator | None = None, null: NullConditioning | None = None,
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The InstructPix2Pix loss of one batch of images (module docstring), and what it drew.

    `batch`: {"original", "edited": (B, 3, H, W) in [-1, 1], "edit_prompt": list of B str}, as
    `dataset.training.load_for_training` yields it. `scheduler`: a DDPM-form scheduler (e.g.
    `DDPMScheduler.from_config(...)`). `generator`: all random draws, in the order of the
    module docstring. `null`: the null conditioning, computed once by the caller to save a
    text-encoder call per step (default: computed here).

    = `encode_batch` (the frozen encoders) then `loss_on_latents` (the random draws and the UNet).
    Returns (loss, info), info = {"timesteps", "r", "drop_text", "drop_image"} (each (B,))."""
    check_batch(batch)
    check_models(unet, vae, scheduler)
    encoded = encode_batch(vae, text_encoder, tokenizer, batch)
    if null is None:
        null = NullConditioning.from_encoder(text_encoder, tokenizer)
    return loss_on_latents(unet, scheduler, encoded, vae.config.scaling_factor, null, generator)
