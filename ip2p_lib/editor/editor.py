"""The editor: an InstructPix2Pix model applied to one image and one instruction (§3.2.1).

`InstructPix2PixEditor.edit` is three steps a notebook can run one by one: `prepare` (image
and instruction -> latents and conditionings), `denoise_step` (one sampler step with Eq. 3,
see `ip2p_lib.guidance`), `decode` (latent -> pixels). `edit_batch` runs the same three steps
on several images at once (one UNet call per step for all of them): each image keeps its own
seeded generator, so its edit is the one `edit` gives it alone, up to float32 rounding.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ip2p_lib.editor.schedulers import make_scheduler
from ip2p_lib.guidance import PAPER_IMAGE_GUIDANCE, PAPER_STEPS, PAPER_TEXT_GUIDANCE, dual_cfg, uses_all_branches
from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.prompts import encode_prompts


def check_edit_arguments(instruction: str, steps: int, s_T: float, s_I: float) -> None:
    """The one check of an edit's arguments (`edit` and `ip2p edit` both call it, the CLI before
    the model loads): a non-empty instruction, at least 1 step, finite scales s_T, s_I >= 0."""
    if not instruction or not instruction.strip():
        raise UserError("the instruction is empty: say what to change, e.g. 'make it snowy'")
    checks.number(steps, "steps", int, minimum=1)
    checks.number(s_T, "the text guidance s_T", minimum=0)
    checks.number(s_I, "the image guidance s_I", minimum=0)


def check_finite_latents(latents: Any, scheduler: str, steps: int) -> None:
    """A NaN or infinite latent is never a picture: raise instead of saving garbage. One known
    cause: diffusers' float32 Euler ancestral takes the square root of a tiny negative number at
    some step counts of some schedules (diffusers issue 14213); another step count avoids it."""
    import torch

    if not torch.isfinite(latents).all():
        raise UserError(f"the {scheduler} sampler produced non-finite values at {steps} steps (a numerical failure, "
                        "not a picture); try another number of steps or another scheduler")


Scale = float | Sequence[float]  # one guidance scale for the batch, or one per image


def per_image(scale: Scale, b: int, name: str) -> list[float]:
    """`scale` as one float per image of a batch of `b` (a single number is repeated)."""
    values = [float(scale)] * b if isinstance(scale, (int, float)) else [float(v) for v in scale]
    if len(values) != b:
        raise ValueError(f"{name}: give one scale or one per image ({b}), got {len(values)}")
    return values


@dataclass
class EditResult:
    """An edit: the picture, its float pixels in [0, 1] (H, W, 3), the final latent, the seed."""

    image: Any  # PIL.Image.Image
    array: np.ndarray
    latents: Any  # torch.Tensor (1, 4, h, w)
    seed: int | None
    input_size: tuple[int, int]  # (width, height) after sizing


@dataclass
class PreparedEdit:
    """What `InstructPix2PixEditor.prepare` (one image) or `prepare_batch` (B images) makes and
    each `denoise_step` reads.

    `unet_in` is the UNet's input for the whole run, one row per branch, [z_t | E(c_I)]:
    rows (c_T, c_I), (0, c_I), (0, 0) with the image latent already in place (zero in the
    last row), or the single row (c_T, c_I) when guidance is off; each step writes z_t into
    its first channels. `hidden` holds the matching text rows [c_T, null, null] (or [c_T]).
    With B images the rows go branch by branch, B rows each: [(c_T, c_I) x B, (0, c_I) x B, (0, 0) x B].
    """

    unet_in: Any  # torch.Tensor (3 B or B, 2 c, h, w)
    hidden: Any  # torch.Tensor (3 B or B, L, D)
    scheduler: Any  # a fresh diffusers scheduler, timesteps set
    latents: Any  # z_T: N(0, I) noise times the sampler's initial sigma, (B, c, h, w)
    generators: list[Any]  # one torch.Generator("cpu") per image: drew its z_T, draws its sampler noise
    step_kwargs: dict[str, Any]  # `generator` / `eta` where the scheduler's `step` takes them
    s_image: Any  # s_I: a float, or a (B, 1, 1, 1) tensor when the images of a batch have their own
    s_text: Any  # s_T: likewise
    seeds: list[int]  # one per image
    input_size: tuple[int, int]  # (width, height) after sizing

    @property
    def timesteps(self) -> Any:
        """The sampler's timesteps, from the noisiest down."""
        return self.scheduler.timesteps

    @property
    def batch_size(self) -> int:
        """B, the number of images edited together."""
        return int(self.latents.shape[0])

    @property
    def branches(self) -> int:
        """UNet rows per image per step: 3 (Eq. 3) or 1 (guidance off)."""
        return int(self.unet_in.shape[0]) // self.batch_size

    @property
    def all_branches(self) -> bool:
        """Whether each step runs the three branches of Eq. 3 (else only e(z, c_I, c_T))."""
        return self.branches == 3

    @property
    def seed(self) -> int:
        """The first image's seed (the only one, after `prepare`)."""
        return self.seeds[0]

    @property
    def generator(self) -> Any:
        """The first image's generator (the only one, after `prepare`)."""
        return self.generators[0]


class InstructPix2PixEditor:
    """Edit an image with an instruction, using any diffusers InstructPix2Pix folder.

    Per step, one batch of three in the authors' order [(c_T, c_I), (0, c_I), (0, 0)]: the
    null text is the encoding of "", the null image a zero latent. The image latent is the
    VAE posterior's MODE, NOT multiplied by the VAE scaling factor (0.18215): the authors'
    training code did this by accident and the released weights depend on it (the noisy
    latent z_t, in contrast, lives in the scaled space).
    """

    def __init__(self, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, scheduler_config: Any, device: Any = "cpu", dtype: Any = None):
        import torch

        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.scheduler_config = scheduler_config
        self.device = torch.device(device)
        self.dtype = dtype or unet.dtype
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        latent_channels = vae.config.latent_channels
        if unet.config.in_channels != 2 * latent_channels:
            raise UserError(
                f"the UNet takes {unet.config.in_channels} input channels, not {2 * latent_channels} "
                "(noisy latent + image latent): this is not an InstructPix2Pix model"
            )

    @classmethod
    def from_pretrained(cls, name_or_path: str, device: str = "cpu", dtype: Any = None) -> "InstructPix2PixEditor":
        """Load a local folder or hub id with `StableDiffusionInstructPix2PixPipeline.from_pretrained`."""
        import torch
        from diffusers import StableDiffusionInstructPix2PixPipeline

        from ip2p_lib.infra.models import from_pretrained

        dtype = dtype or torch.float32
        pipe = from_pretrained(
            StableDiffusionInstructPix2PixPipeline,
            name_or_path,
            what="InstructPix2Pix model",
            required_file="model_index.json",
            safety_checker=None,
            requires_safety_checker=False,
            dtype=dtype,
        )
        pipe.to(device)
        return cls(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config, device, dtype)

    @property
    def native_resolution(self) -> int:
        """The training resolution in pixels: UNet sample size x VAE factor (512 for SD 1.5)."""
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def size_multiple(self, rule: str) -> int:
        """64 for SD under "authors" (VAE 8x times UNet 2^3), the VAE factor (8) under "diffusers"."""
        if rule == "authors":
            return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
        return self.vae_scale_factor

    def encode_text(self, instruction: str | Sequence[str]) -> Any:
        """CLIP hidden states of [instruction, ""] (c_T and the null text), shape (2, L, D); for B
        instructions [*instructions, ""], shape (B + 1, L, D)."""
        texts = [instruction] if isinstance(instruction, str) else list(instruction)
        return encode_prompts(self.text_encoder, self.tokenizer, [*texts, ""], self.device).to(self.dtype)

    def encode_image(self, pixels: Any) -> Any:
        """E(c_I): the VAE posterior mode of pixels in [-1, 1], unscaled (the authors' quirk)."""
        return self.vae.encode(pixels.to(self.device, self.vae.dtype)).latent_dist.mode().to(self.dtype)

    def decode(self, latents: Any) -> Any:
        """Latent z_0 -> pixels in [0, 1]: undo the 0.18215 scaling, decode, map [-1, 1] to [0, 1]."""
        import torch

        with torch.inference_mode():
            image = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor, return_dict=False)[0]
            return (image * 0.5 + 0.5).clamp(0, 1)

    def prepare(
        self,
        image: Any,
        instruction: str,
        steps: int = PAPER_STEPS,
        s_text: float = PAPER_TEXT_GUIDANCE,
        s_image: float = PAPER_IMAGE_GUIDANCE,
        seed: int | None = None,
        scheduler: str = "euler_ancestral",
        resolution: int | None = None,
        sizing: str = "authors",
        guidance_rule: str = "paper",
        eta: float = 0.0,
    ) -> PreparedEdit:
        """Everything before the first sampler step: size and encode the image, encode the
        instruction, build the UNet's input rows, set the timesteps, draw z_T.

        Arguments as `edit`'s (which checks them). The random draws happen in diffusers' order
        (z_T first, then the sampler's noise), from `torch.Generator("cpu").manual_seed(seed)`.
        `prepare_batch` with one image.
        """
        return self.prepare_batch([image], [instruction], steps=steps, s_text=s_text, s_image=s_image, seeds=[seed],
                                  scheduler=scheduler, resolution=resolution, sizing=sizing,
                                  guidance_rule=guidance_rule, eta=eta)

    def prepare_batch(
        self,
        images: Sequence[Any],
        instructions: Sequence[str],
        steps: int = PAPER_STEPS,
        s_text: Scale = PAPER_TEXT_GUIDANCE,
        s_image: Scale = PAPER_IMAGE_GUIDANCE,
        seeds: Sequence[int | None] | None = None,
        scheduler: str = "euler_ancestral",
        resolution: int | None = None,
        sizing: str = "authors",
        guidance_rule: str = "paper",
        eta: float = 0.0,
    ) -> PreparedEdit:
        """`prepare` for B images (of one size after sizing), each with its instruction and seed.

        Image i's draws come from its own `torch.Generator("cpu").manual_seed(seeds[i])` in the
        order `prepare` makes them, so row i of the batch is the edit `prepare` gives image i alone.
        `s_text` and `s_image` may give one scale per image: a guidance sweep is then one batch
        (`ip2p_lib.results.sweep`), each row with its own trajectory, as if edited alone.
        """
        import torch

        from ip2p_lib.editor.imageprep import resize_for_model, to_model_tensor, to_rgb

        seeds = [None] * len(images) if seeds is None else list(seeds)
        if len(images) == 0 or not len(images) == len(instructions) == len(seeds):
            raise ValueError(f"give one instruction and one seed per image: {len(images)} images, "
                             f"{len(instructions)} instructions, {len(seeds)} seeds")
        seeds = [random.randrange(2**31) if s is None else int(s) for s in seeds]
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        b = len(images)
        s_texts, s_images = per_image(s_text, b, "s_text"), per_image(s_image, b, "s_image")
        rows_branches = {uses_all_branches(s_image=si, s_text=st, rule=guidance_rule) for st, si in zip(s_texts, s_images)}
        if len(rows_branches) > 1:
            raise ValueError(f"under the {guidance_rule!r} guidance rule some of these scales run one branch and others "
                             "three; edit them in separate batches")
        branches = 3 if rows_branches.pop() else 1

        with torch.inference_mode():
            side, multiple = resolution or self.native_resolution, self.size_multiple(sizing)
            rgbs = [resize_for_model(to_rgb(im), side, sizing, multiple) for im in images]
            sizes = sorted({rgb.size for rgb in rgbs})
            if len(sizes) > 1:
                raise UserError(f"the images of one batch must have one size after sizing; got {sizes}")
            text = self.encode_text(instructions)  # rows: c_T of each image, then the null text
            image_latent = self.encode_image(to_model_tensor(rgbs))  # E(c_I), unscaled, (B, c, h, w)
            c = image_latent.shape[1]

            # the UNet's input for the whole run: [z_t | image latent], branch by branch, B rows each:
            # [(c_T, c_I), (0, c_I), (0, 0)], or only (c_T, c_I) when guidance is off
            unet_in = image_latent.new_zeros((branches * b, 2 * c, *image_latent.shape[2:]))  # z_t slots: filled per step
            with_image = b * min(branches, 2)  # rows (c_T, c_I), (0, c_I); the (0, 0) rows keep a zero latent
            unet_in[:with_image, c:] = image_latent.repeat(with_image // b, 1, 1, 1)
            hidden = text[list(range(b)) + [b] * (b * (branches - 1))]  # [c_T x B, null x B, null x B]; [0, 1, 1] for one

            sched = make_scheduler(scheduler, self.scheduler_config)
            sched.set_timesteps(int(steps), device=self.device)
            step_params = set(inspect.signature(sched.step).parameters)
            # a list of generators: diffusers' samplers draw row i's noise from generator i
            step_kwargs = {k: v for k, v in (("generator", generators), ("eta", eta)) if k in step_params}

            shape = (1, c, image_latent.shape[2], image_latent.shape[3])
            noise = [torch.randn(shape, generator=g, dtype=self.dtype) for g in generators]  # z_T ~ N(0, I), per image
            latents = torch.cat(noise).to(self.device)
            latents = latents * sched.init_noise_sigma
            scales = [v[0] if len(set(v)) == 1 else torch.tensor(v, device=self.device, dtype=self.dtype).view(-1, 1, 1, 1)
                      for v in (s_images, s_texts)]
        return PreparedEdit(unet_in, hidden, sched, latents, generators, step_kwargs,
                            s_image=scales[0], s_text=scales[1], seeds=seeds, input_size=rgbs[0].size)

    def denoise_step(self, state: PreparedEdit, latents: Any, t: Any) -> Any:
        """One sampler step z_t -> z_{t-1}: the branches as one UNet batch, Eq. 3, the sampler's update."""
        import torch

        with torch.inference_mode():
            c = latents.shape[1]
            z_in = state.scheduler.scale_model_input(latents, t)  # z_t, scaled for the sampler
            state.unet_in[:, :c] = z_in.repeat(state.branches, 1, 1, 1)  # the same z_t in every branch's rows
            eps = self.unet(state.unet_in, t, encoder_hidden_states=state.hidden, return_dict=False)[0]
            if state.all_branches:
                eps_text_image, eps_image, eps_uncond = eps.chunk(3)  # e(z,c_I,c_T), e(z,c_I,0), e(z,0,0)
                eps = dual_cfg(eps_text_image, eps_image, eps_uncond, s_image=state.s_image, s_text=state.s_text)  # Eq. 3: e~
            return state.scheduler.step(eps, t, latents, **state.step_kwargs, return_dict=False)[0]  # z_{t-1}

    def edit(
        self,
        image: Any,
        instruction: str,
        steps: int = PAPER_STEPS,
        s_text: float = PAPER_TEXT_GUIDANCE,
        s_image: float = PAPER_IMAGE_GUIDANCE,
        seed: int | None = None,
        scheduler: str = "euler_ancestral",
        resolution: int | None = None,
        sizing: str = "authors",
        guidance_rule: str = "paper",
        eta: float = 0.0,
        progress: bool = False,
    ) -> EditResult:
        """Edit a PIL `image` (any mode) following `instruction`; see the class doc.

        `seed` seeds `torch.Generator("cpu")`, exactly as diffusers' examples do, so the same
        seed gives diffusers' result (`None`: a random seed, returned in the result).
        `resolution` defaults to the model's native one; `sizing` is "authors" or "diffusers"
        (see `ip2p_lib.editor.imageprep`); `guidance_rule` is explained in `uses_all_branches`.
        The same as `prepare`, `denoise_step` for each timestep, `decode`.
        """
        check_edit_arguments(instruction, steps, s_T=s_text, s_I=s_image)  # before anything touches the model
        return self.edit_batch([image], [instruction], steps=steps, s_text=s_text, s_image=s_image, seeds=[seed],
                               scheduler=scheduler, resolution=resolution, sizing=sizing, guidance_rule=guidance_rule,
                               eta=eta, progress=progress)[0]

    def edit_batch(
        self,
        images: Sequence[Any],
        instructions: Sequence[str],
        steps: int = PAPER_STEPS,
        s_text: Scale = PAPER_TEXT_GUIDANCE,
        s_image: Scale = PAPER_IMAGE_GUIDANCE,
        seeds: Sequence[int | None] | None = None,
        scheduler: str = "euler_ancestral",
        resolution: int | None = None,
        sizing: str = "authors",
        guidance_rule: str = "paper",
        eta: float = 0.0,
        progress: bool = False,
    ) -> list[EditResult]:
        """`edit` for several images at once (one size after sizing), one instruction and one seed
        each: `prepare_batch`, `denoise_step` for each timestep (one UNet call for all B images),
        `decode`. Result i equals `edit(images[i], instructions[i], seed=seeds[i], ...)` up to
        float32 rounding (the batched matrix products sum in another order). `s_text` and
        `s_image` may give one scale per image (see `prepare_batch`)."""
        b = len(images)
        for instruction, st, si in zip(instructions, per_image(s_text, b, "s_text"), per_image(s_image, b, "s_image")):
            check_edit_arguments(instruction, steps, s_T=st, s_I=si)
        from PIL import Image
        from tqdm.auto import tqdm

        state = self.prepare_batch(images, instructions, steps=steps, s_text=s_text, s_image=s_image,
                                   seeds=seeds, scheduler=scheduler, resolution=resolution, sizing=sizing,
                                   guidance_rule=guidance_rule, eta=eta)
        latents = state.latents  # z_T
        for t in tqdm(state.timesteps, desc="edit", disable=not progress, leave=False):
            latents = self.denoise_step(state, latents, t)  # z_t -> z_{t-1}
        check_finite_latents(latents, scheduler, steps)
        pixels = self.decode(latents)  # z_0 -> [0, 1]
        results = []
        for i, seed in enumerate(state.seeds):
            array = pixels[i].permute(1, 2, 0).float().cpu().numpy()
            picture = Image.fromarray((array * 255).round().astype("uint8"))
            results.append(EditResult(picture, array, latents[i:i + 1], seed, state.input_size))
        return results


def load_editor(name_or_path: str | Path, parts: str | Path | None = None, device: str = "cpu",
                dtype: Any = None) -> InstructPix2PixEditor:
    """An editor for an InstructPix2Pix folder or hub id; or, for a bare UNet folder (a training
    snapshot, `ip2p train --snapshot-every`: config.json and weights, no model_index.json), that
    UNet with the VAE, text encoder, tokenizer and scheduler of the pipeline folder `parts`."""
    import torch

    folder = Path(name_or_path)
    if (folder / "model_index.json").exists() or not (folder / "config.json").exists():
        return InstructPix2PixEditor.from_pretrained(str(name_or_path), device=device, dtype=dtype)
    if parts is None:
        raise UserError(f"{folder} holds a bare UNet (a training snapshot): say where its VAE, text encoder and "
                        "scheduler come from (the Stable Diffusion folder it was trained from)")
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    from ip2p_lib.infra.models import from_pretrained

    dtype = dtype or torch.float32
    unet = UNet2DConditionModel.from_pretrained(folder, torch_dtype=dtype).to(device).eval()
    pipe = from_pretrained(StableDiffusionPipeline, str(parts), what="Stable Diffusion model (the snapshot's parts)",
                           required_file="model_index.json", safety_checker=None, requires_safety_checker=False,
                           dtype=dtype)
    pipe.to(device)
    return InstructPix2PixEditor(unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config, device, dtype)
