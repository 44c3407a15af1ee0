"""Toy SD as a diffusers folder: assemble, sample, judge with the oracle, write the card.

The folder has SD 1.5's layout (vae/, text_encoder/, tokenizer/, unet/, scheduler/,
model_index.json), so `StableDiffusionPipeline.from_pretrained(folder)` loads it offline.
The scheduler is Euler ancestral, the paper's sampler; DDIM and DPM-Solver load from the same
scheduler config (`DDIMScheduler.from_config(pipe.scheduler.config)`). `sample` runs Euler
ancestral with its noise levels in float64 (`EulerAncestralScheduler`: diffusers' float32 step
turns the whole image into NaN at few steps with this schedule) and refuses non-finite images.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ip2p_lib.toyworld import attribute_accuracy, random_caption
from ip2p_lib.toyworld.pretrain import common
from ip2p_lib.toyworld.pretrain.data import held_out_scenes
from ip2p_lib.infra.trainloop import RunState

GUIDANCE_SCALE = 5.0
NUM_STEPS = 30


def make_deterministic(vae: Any) -> Any:
    """Fix the posterior's log-variance at its floor (-30), so `latent_dist.sample()` equals the
    mean to ~1e-7: the toy VAE was trained on the posterior mean with a negligible KL term,
    so its variance head is untrained; SD's own VAE has a tiny posterior variance too."""
    c = vae.config.latent_channels
    with torch.no_grad():
        vae.quant_conv.weight[c:].zero_()
        vae.quant_conv.bias[c:].fill_(-30.0)
    return vae


def frozen_parts(vae_dir: Path | None = None, clip_dir: Path | None = None) -> tuple[Any, Any, Any]:
    """The VAE (exported by `ip2p toy pretrain vae`), toy CLIP's text tower as a `CLIPTextModel`,
    and CLIP's tokenizer: everything toy SD uses frozen."""
    from diffusers import AutoencoderKL

    from ip2p_lib.infra.models import load_open_clip_folder, toy_model_dir
    from ip2p_lib.toyworld.pretrain.convert import to_hf_text_model
    from ip2p_lib.toyworld.pretrain.tokenizer import build_clip_tokenizer

    vae = make_deterministic(AutoencoderKL.from_pretrained(vae_dir or toy_model_dir("vae"), torch_dtype=torch.float32))
    clip_model, _ = load_open_clip_folder(clip_dir or toy_model_dir("clip"))
    return vae.eval(), to_hf_text_model(clip_model), build_clip_tokenizer()


def assemble(unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, cfg: Any) -> Any:
    """A `StableDiffusionPipeline` from the parts, Euler ancestral scheduler, no safety checker."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    scheduler = EulerAncestralDiscreteScheduler(
        num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type, timestep_spacing="trailing",
        steps_offset=1)  # unused by trailing spacing; 1 silences diffusers' SD-1.x config check
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_pipeline(pipe: Any, folder: Path) -> None:
    """Save with fp16 weights (half the size) that load as fp32: diffusers casts to the
    model's default dtype; transformers 5 would follow the config's `dtype`, so the text
    encoder's config is set back to float32."""
    import json

    pipe.to(torch.float16)
    try:
        pipe.save_pretrained(folder, safe_serialization=True)
    finally:
        pipe.to(torch.float32)
    config_path = Path(folder) / "text_encoder" / "config.json"
    config = json.loads(config_path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in config:
            config[key] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class NonFiniteImages(FloatingPointError):
    """A sampler produced NaN or infinite pixels: never a picture, always a numerical failure."""


@functools.lru_cache(maxsize=None)
def _euler_ancestral_float64() -> Any:
    """`EulerAncestralScheduler` (below), made on first use: diffusers is imported lazily."""
    from diffusers import EulerAncestralDiscreteScheduler

    class EulerAncestralScheduler(EulerAncestralDiscreteScheduler):
        """diffusers' Euler ancestral sampler with its noise levels (sigmas) held in float64.

        A step from sigma_from to sigma_to goes down to sigma_down deterministically, then adds
        fresh noise of size sigma_up, so that sigma_down**2 + sigma_up**2 = sigma_to**2:

            sigma_up   = sigma_to * sqrt(1 - sigma_to**2 / sigma_from**2)
            sigma_down = sqrt(sigma_to**2 - sigma_up**2)        (= sigma_to**2 / sigma_from)

        diffusers computes both as written, in float32. Toy SD's schedule (squaredcos_cap_v2,
        whose last beta is capped at 0.999, so alphā_999 = 2.4e-9) with trailing spacing starts at
        sigma_from = 20291; with 3 steps the next level is sigma_to = 1.75, and
        sigma_to**2 / sigma_from**2 = 7e-9 lies below float32's resolution (6e-8): sigma_up
        rounds to just above sigma_to, sigma_to**2 - sigma_up**2 is negative, its square root is
        NaN, and the NaN fills every pixel (diffusers issue #14213). In float64 (resolution 1e-16)
        the same formulas are right to ~1e-8. The sigmas keep diffusers' float32 values; only the
        arithmetic on them is float64, and the samples stay float32."""

        def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
            super().set_timesteps(*args, **kwargs)
            self.sigmas = self.sigmas.to(torch.float64)

    return EulerAncestralScheduler


def float64_euler_ancestral(scheduler: Any) -> Any:
    """`scheduler` itself, or, if it is diffusers' Euler ancestral, the float64 one with its config."""
    from diffusers import EulerAncestralDiscreteScheduler

    if type(scheduler) is not EulerAncestralDiscreteScheduler:
        return scheduler
    return _euler_ancestral_float64().from_config(scheduler.config)


def check_finite(images: np.ndarray, prompts: list[str], sampler: str) -> None:
    """Raise `NonFiniteImages` naming the prompts whose images hold NaN or infinite pixels."""
    bad = [p for p, image in zip(prompts, images) if not np.isfinite(image).all()]
    if bad:
        raise NonFiniteImages(f"{sampler} produced non-finite pixels for {len(bad)} of {len(prompts)} prompts, "
                              f"first {bad[0]!r}")


@torch.no_grad()
def sample(pipe: Any, prompts: list[str], guidance_scale: float = GUIDANCE_SCALE, steps: int = NUM_STEPS,
           seed: int = 0, batch: int = 50, progress: bool = False) -> np.ndarray:
    """uint8 samples (N, 64, 64, 3); one generator per call, so the same call gives the same images.

    Euler ancestral runs in its float64 form (`float64_euler_ancestral`); an image with a
    non-finite pixel raises `NonFiniteImages` instead of being cast to garbage."""
    pipe.set_progress_bar_config(disable=not progress)
    gen = torch.Generator().manual_seed(seed)
    original = pipe.scheduler
    pipe.scheduler = float64_euler_ancestral(original)
    sampler = f"{type(original).__name__} ({steps} steps, guidance {guidance_scale:g}, seed {seed})"
    out = []
    try:
        for i in range(0, len(prompts), batch):
            images = pipe(prompts[i:i + batch], num_inference_steps=steps, guidance_scale=guidance_scale,
                          height=64, width=64, generator=gen, output_type="np").images
            check_finite(images, prompts[i:i + batch], sampler)
            out.append((images * 255).round().astype(np.uint8))
    finally:
        pipe.scheduler = original
    return np.concatenate(out)


def evaluate_sd(pipe: Any, n: int = 200, guidance_scale: float = GUIDANCE_SCALE, steps: int = NUM_STEPS,
                seed: int = 0) -> tuple[dict[str, float], list[str], np.ndarray]:
    """The oracle's attribute accuracy on samples for `n` random captions of held-out scenes."""
    scenes = held_out_scenes(n, offset=1)
    rng = np.random.default_rng([seed, 77])
    prompts = [random_caption(s, rng) for s in scenes]
    images = sample(pipe, prompts, guidance_scale, steps, seed)
    return attribute_accuracy(scenes, images), prompts, images


POSITION_SCALES = (5.0, 7.5)


def evaluate_position(pipe: Any, n: int = 200, guidance_scale: float = GUIDANCE_SCALE, steps: int = NUM_STEPS,
                      seed: int = 0) -> tuple[dict[str, float], list[str], np.ndarray]:
    """The oracle's accuracy on samples for `n` captions of held-out scenes that all name the
    object's region ("... in the top left ..."): `hpos`/`vpos` say whether the picture puts
    the object where the caption asks."""
    scenes = held_out_scenes(n, offset=3)
    rng = np.random.default_rng([seed, 78])
    prompts = [random_caption(s, rng, p_position=1.0) for s in scenes]
    images = sample(pipe, prompts, guidance_scale, steps, seed)
    return attribute_accuracy(scenes, images), prompts, images


def save_grid(images: np.ndarray, prompts: list[str], path: Path, n: int = 6) -> Path:
    """An n x n grid of samples, each titled with its caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(n, n, figsize=(2 * n, 2.3 * n))
    for ax, img, text in zip(axes.flat, images, prompts):
        ax.imshow(img)
        ax.set_title(text.replace(" on a ", "\non a ").replace(" against", "\nagainst").replace(" in the", "\nin the"), fontsize=6)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=64)
    plt.close(fig)
    return path


def finish(cfg: Any, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, state: RunState,
           out: Path | None, threads: int, interim: bool = False) -> dict[str, Any]:
    """Assemble, save (if `out`), reload from disk, evaluate with the oracle, write the card."""
    from diffusers import StableDiffusionPipeline

    pipe = assemble(unet, vae, text_encoder, tokenizer, cfg)
    if out is not None:
        save_pipeline(pipe, Path(out))
        pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    t0 = time.time()
    metrics, prompts, images = evaluate_sd(pipe)
    metrics = {k: round(v, 4) for k, v in metrics.items()}
    print(metrics)
    position = {}
    for scale in POSITION_SCALES:
        found, pos_prompts, pos_images = evaluate_position(pipe, guidance_scale=scale)
        position[f"CFG {scale:g}"] = {k: round(v, 4) for k, v in found.items() if k != "uv_error"}
        print("captions naming a position, CFG", scale, position[f"CFG {scale:g}"])
    if out is not None:
        _, pos_prompts, pos_images = evaluate_position(pipe, n=18)
        save_grid(np.concatenate([images[:18], pos_images]), prompts[:18] + pos_prompts, Path(out) / "samples.png")
        status = ("INTERIM: training unfinished; the numbers below are from the checkpoint at this step."
                  if interim else "Finished training run.")
        common.write_card(Path(out), "Toy Stable Diffusion (stand-in for SD 1.5)", {
            "Status": status,
            "What it stands in for": "`stable-diffusion-v1-5/stable-diffusion-v1-5`: same pipeline class, same folder layout, "
                                     "small configs. Load: `StableDiffusionPipeline.from_pretrained('data/toy/models/sd')`.",
            "Parts": {"vae": "AutoencoderKL 64x64x3 -> 16x16x4 (see vae/README.md)",
                      "text_encoder": "toy CLIP's text tower as CLIPTextModel (frozen)",
                      "tokenizer": "CLIP BPE (CLIPTokenizer, model_max_length 77)",
                      "unet": f"UNet2DConditionModel, {sum(p.numel() for p in unet.parameters())} params, EMA weights",
                      "scheduler": "EulerAncestralDiscreteScheduler, trailing spacing"},
            "UNet training config": cfg.to_dict(),
            "Training": {"steps": state.step, "train_wall_s": round(state.elapsed_s), "machine": common.machine(),
                         "loss_first_last": common.loss_summary(state.losses)},
            f"Quality (oracle, 200 random captions of held-out scenes, {NUM_STEPS} Euler ancestral steps, CFG {GUIDANCE_SCALE})": metrics,
            f"Position (oracle, 200 captions of held-out scenes that all name a region, {NUM_STEPS} steps)": position,
            "Samples": "![samples](samples.png) (first 18: random captions; last 18: captions naming a region, CFG 5)",
            "Reproduce": (f"`ip2p toy pretrain sd --threads {threads} --steps {cfg.steps} --lr {cfg.lr:g} --init-from "
                          "<an exported toy SD>` (continued training; see Run notes)" if getattr(cfg, "init_from", None) else
                          f"`ip2p toy pretrain vae && ip2p toy pretrain clip && ip2p toy pretrain sd --threads {threads}` ")
                         + f"(seed {cfg.seed}; each command resumes from its checkpoint)",
        })
    metrics["eval_wall_s"] = round(time.time() - t0)
    return {**metrics, "position": position}

