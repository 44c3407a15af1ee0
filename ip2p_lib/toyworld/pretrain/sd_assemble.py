"""Toy SD as a diffusers folder: assemble, sample, judge with the oracle, write the card.

The folder has SD 1.5's layout (vae/, text_encoder/, tokenizer/, unet/, scheduler/,
model_index.json), so `StableDiffusionPipeline.from_pretrained(folder)` loads it offline.
The scheduler is Euler ancestral, the paper's sampler; DDIM and DPM-Solver load from the same
scheduler config (`DDIMScheduler.from_config(pipe.scheduler.config)`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ip2p_lib.toyworld import attribute_accuracy, random_caption
from ip2p_lib.toyworld.pretrain import common
from ip2p_lib.toyworld.pretrain.data import held_out_scenes

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


@torch.no_grad()
def sample(pipe: Any, prompts: list[str], guidance_scale: float = GUIDANCE_SCALE, steps: int = NUM_STEPS,
           seed: int = 0, batch: int = 50, progress: bool = False) -> np.ndarray:
    """uint8 samples (N, 64, 64, 3); one generator per call, so the same call gives the same images."""
    pipe.set_progress_bar_config(disable=not progress)
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(prompts), batch):
        images = pipe(prompts[i:i + batch], num_inference_steps=steps, guidance_scale=guidance_scale,
                      height=64, width=64, generator=gen, output_type="np").images
        out.append((images * 255).round().astype(np.uint8))
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


def finish(cfg: Any, unet: Any, vae: Any, text_encoder: Any, tokenizer: Any, state: common.RunState,
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

