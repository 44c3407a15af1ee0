"""Training samples per second: diffusers' InstructPix2Pix example step against ours, on toy IP2P.

Three ways to take one optimizer step on the same model (toy SD, its UNet widened to 8 input
channels by `surgery.widen_conv_in`, loaded by `trainer.load_models`), the same batches (the
same example indices each step) and the same optimizer (AdamW, clip 1.0, constant lr, EMA by
diffusers' `EMAModel`):

- theirs: the step of diffusers' `examples/instruct_pix2pix/train_instruct_pix2pix.py`,
  re-created here: tokenize the instructions (their data transform), VAE-encode the edited
  image -> latent_dist.sample() * s, noise, timesteps, add_noise, text encoder on the
  instructions, VAE-encode the original -> latent_dist.mode() (unscaled), conditioning dropout
  with their masks (text: r < 2p; image: 1 - [p <= r < 3p], p = 0.05; the null text CLIP("")
  encoded again every step), concat, UNet, MSE, backward, clip, AdamW, lr schedule, EMA;
- ours, encoding each step: `trainer`'s route with a flip or a crop: `encode_batch` then
  `loss_on_latents`, driven by `TrainLoop` (accelerate, EMAModel);
- ours, encoded once: `trainer`'s default for the toy (no flip, no crop): `encode_dataset`
  once, then each step `EncodedBatch.index` and `loss_on_latents` (the target latent is still
  sampled per step from the stored posterior).

The examples are `--examples` pairs of `load_for_training(--data, 64, flip=False)` (the toy
training set; a synthetic set rendered from the miniature world when the folder is missing),
held in memory as tensors: decoding images is left out of all three, as is writing
checkpoints. The three take turns, `--chunk` steps each, in a rotating order, after warm-up
steps, so a neighbour's load on a shared core falls on all alike; we report CPU time (the
fairer number on a shared core) and wall time, samples/s and the ratios ours/theirs.

    taskset -c 1 .venv/bin/python benchmarks/training_throughput.py --threads 1 --out figures/toy/training_throughput.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ip2p_lib.infra.trainloop import EpochSampler, LoopSettings, TrainLoop, constant_schedule, make_ema, step_generator
from ip2p_lib.training.objective import NullConditioning, encode_batch, loss_on_latents
from ip2p_lib.training.trainer import TOY, Models, collate, encode_dataset, load_models

DROPOUT = 0.05  # diffusers' --conditioning_dropout_prob in their documented command (the paper's 5%)


# ---------------------------------------------------------------- the examples


def toy_examples(data: Path, n: int, resolution: int) -> tuple[list[dict[str, Any]], str]:
    """The first `n` training examples of `data`, or `n` pairs rendered from the miniature world."""
    if data.is_dir():
        from ip2p_lib.dataset.training import load_for_training

        dataset = load_for_training(data, resolution, flip=False)
        return [dataset[i] for i in range(min(n, len(dataset)))], f"{data} ({len(dataset)} training examples)"
    from ip2p_lib.dataset.training import to_unit_range
    from ip2p_lib.toyworld import apply, instruction, render, sample_edit, sample_scenes

    rng = np.random.default_rng(0)
    examples = []
    for scene in sample_scenes(n, seed=0):
        edit = sample_edit(scene, rng)
        examples.append({"original": to_unit_range(render(scene, resolution)),
                         "edited": to_unit_range(render(apply(scene, edit), resolution)),
                         "edit_prompt": instruction(edit, scene, rng)})
    return examples, f"SYNTHETIC: {n} pairs rendered from the miniature world ({data} is missing)"


# ---------------------------------------------------------------- theirs: diffusers' example step


class DiffusersExampleStep:
    """One optimizer step as diffusers' train_instruct_pix2pix.py takes it (fp32, no accumulation)."""

    def __init__(self, models: Models, accelerator: Any, lr: float, betas: tuple[float, float],
                 weight_decay: float, clip_norm: float, seed: int) -> None:
        from diffusers import UNet2DConditionModel
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        self.m, self.accelerator, self.clip_norm = models, accelerator, clip_norm
        self.noise_scheduler = models.noise_scheduler()
        unet = models.unet
        unet.train()
        self.ema = EMAModel(unet.parameters(), model_cls=UNet2DConditionModel, model_config=unet.config)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, betas=betas, weight_decay=weight_decay, eps=1e-8)
        schedule = get_scheduler("constant", optimizer=optimizer)
        self.unet, self.optimizer, self.schedule = accelerator.prepare(unet, optimizer, schedule)
        self.generator = torch.Generator(device=accelerator.device).manual_seed(seed)

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        tok = self.m.tokenizer
        return tok(prompts, max_length=tok.model_max_length, padding="max_length", truncation=True,
                   return_tensors="pt").input_ids

    def __call__(self, batch: dict[str, Any]) -> float:
        acc, vae, text_encoder, sched = self.accelerator, self.m.vae, self.m.text_encoder, self.noise_scheduler
        input_ids = self.tokenize(batch["edit_prompt"]).to(acc.device)          # their data transform
        with acc.accumulate(self.unet):
            latents = vae.encode(batch["edited"].to(acc.device)).latent_dist.sample()
            latents = latents * vae.config.scaling_factor                          # z_0 = sample * s
            noise = torch.randn_like(latents)
            bsz = latents.shape[0]
            timesteps = torch.randint(0, sched.config.num_train_timesteps, (bsz,), device=latents.device).long()
            noisy_latents = sched.add_noise(latents, noise, timesteps)
            encoder_hidden_states = text_encoder(input_ids)[0]
            original_image_embeds = vae.encode(batch["original"].to(acc.device)).latent_dist.mode()  # unscaled
            random_p = torch.rand(bsz, device=latents.device, generator=self.generator)
            prompt_mask = (random_p < 2 * DROPOUT).reshape(bsz, 1, 1)
            null_conditioning = text_encoder(self.tokenize([""]).to(acc.device))[0]  # CLIP(""), every step
            encoder_hidden_states = torch.where(prompt_mask, null_conditioning, encoder_hidden_states)
            dtype = original_image_embeds.dtype
            image_mask = 1 - ((random_p >= DROPOUT).to(dtype) * (random_p < 3 * DROPOUT).to(dtype))
            original_image_embeds = image_mask.reshape(bsz, 1, 1, 1) * original_image_embeds
            model_input = torch.cat([noisy_latents, original_image_embeds], dim=1)
            if sched.config.prediction_type == "epsilon":
                target = noise
            else:
                target = sched.get_velocity(latents, noise, timesteps)
            model_pred = self.unet(model_input, timesteps, encoder_hidden_states).sample
            loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
            train_loss = acc.gather(loss.repeat(bsz)).mean().item()                # their logged loss
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(self.unet.parameters(), self.clip_norm)
            self.optimizer.step()
            self.schedule.step()
            self.optimizer.zero_grad()
        if acc.sync_gradients:
            self.ema.step(self.unet.parameters())
        return train_loss


# ---------------------------------------------------------------- ours: the trainer's two routes


class UnsavedLoop(TrainLoop):
    """`TrainLoop` without its checkpoint writes (the benchmark times steps, not disk)."""

    def save(self) -> Path:
        return self.run_dir


def our_loop(models: Models, accelerator: Any, run_dir: Path, batch: int) -> UnsavedLoop:
    """The loop `trainer.train` builds for the toy recipe."""
    unet = models.unet
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=TOY["lr"], weight_decay=1e-2)
    settings = LoopSettings(steps=0, batch=batch, clip_norm=TOY["clip_norm"], checkpoint_every_s=1e9,
                            progress=False, desc="ours")
    return UnsavedLoop(accelerator, unet, optimizer, run_dir, settings, schedule=constant_schedule(optimizer),
                       ema=make_ema(unet, TOY["ema_decay"], TOY["ema_warmup"]))


class OurRoute:
    """`trainer.train`'s step function: examples by `EpochSampler`, encoded each step or once."""

    def __init__(self, models: Models, accelerator: Any, run_dir: Path, examples: list[dict[str, Any]],
                 sampler: EpochSampler, seed: int, encode_once: bool) -> None:
        self.m, self.examples, self.sampler, self.seed = models, examples, sampler, seed
        self.loop = our_loop(models, accelerator, run_dir, sampler.batch)
        self.scheduler = models.noise_scheduler()
        self.null = NullConditioning.from_encoder(models.text_encoder, models.tokenizer)
        start = time.process_time()
        self.cached = encode_dataset(models, examples, progress=False) if encode_once else None
        self.encode_cpu_s = time.process_time() - start

    def step_fn(self, step: int, micro: int) -> torch.Tensor:
        idx = self.sampler.indices(step, micro)
        if self.cached is not None:
            encoded = self.cached.index(torch.as_tensor(idx))
        else:
            encoded = encode_batch(self.m.vae, self.m.text_encoder, self.m.tokenizer,
                                   collate([self.examples[i] for i in idx]))
        loss, _ = loss_on_latents(self.loop.model, self.scheduler, encoded, self.m.vae.config.scaling_factor,
                                  self.null, step_generator(self.seed, step, micro))
        return loss

    def run(self, steps: int) -> list[float]:
        """`steps` more optimizer steps; their losses."""
        done = self.loop.state.step
        self.loop.settings.steps = done + steps
        self.loop.run(self.step_fn)
        return self.loop.state.losses[done:]


# ---------------------------------------------------------------- timing


def timed(fn: Callable[[], list[float]]) -> tuple[list[float], float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    from ip2p_lib.infra.paths import data_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24, help="timed optimizer steps per method (default 24)")
    ap.add_argument("--batch-size", type=int, default=TOY["batch_size"],
                    help=f"examples per step (default {TOY['batch_size']}, the toy recipe's)")
    ap.add_argument("--chunk", type=int, default=4, help="steps per turn; the methods alternate (default 4)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per method first (default 2)")
    ap.add_argument("--examples", type=int, default=256, help="training examples held in memory (default 256)")
    ap.add_argument("--data", type=Path, default=data_dir() / "generated" / "toy" / "train",
                    help="the toy training set (default data/generated/toy/train)")
    ap.add_argument("--init", type=Path, default=data_dir() / "toy" / "models" / "sd", help="the SD model to widen")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from accelerate import Accelerator
    from diffusers.utils import logging as dlogging

    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.disable_progress_bar()
    resolution = TOY["resolution"]
    examples, source = toy_examples(args.data, args.examples, resolution)
    accelerator = Accelerator()
    sampler = EpochSampler(len(examples), args.batch_size, args.seed)
    theirs = DiffusersExampleStep(load_models(args.init), accelerator, TOY["lr"], (0.9, 0.999), 1e-2,
                                  TOY["clip_norm"], args.seed)
    tmp = tempfile.TemporaryDirectory()
    per_step = OurRoute(load_models(args.init), accelerator, Path(tmp.name) / "per_step", examples, sampler,
                        args.seed, encode_once=False)
    once = OurRoute(load_models(args.init), accelerator, Path(tmp.name) / "once", examples, sampler,
                    args.seed, encode_once=True)
    their_step = [0]

    def run_theirs(steps: int) -> list[float]:
        losses = []
        for _ in range(steps):
            losses.append(theirs(collate([examples[i] for i in sampler.indices(their_step[0])])))
            their_step[0] += 1
        return losses

    methods: dict[str, Callable[[int], list[float]]] = {
        "diffusers_example": run_theirs, "ours_encode_each_step": per_step.run, "ours_encode_once": once.run}
    for run in methods.values():  # warm-up: first calls allocate and pick kernels
        run(args.warmup)
    totals = {name: {"wall_s": 0.0, "cpu_s": 0.0, "losses": []} for name in methods}
    names = list(methods)
    for turn, start in enumerate(range(0, args.steps, args.chunk)):
        steps = min(args.chunk, args.steps - start)
        for name in names[turn % 3:] + names[:turn % 3]:  # rotate who goes first
            losses, wall, cpu = timed(lambda: methods[name](steps))
            totals[name]["wall_s"] += wall
            totals[name]["cpu_s"] += cpu
            totals[name]["losses"] += losses

    samples = args.steps * args.batch_size
    result: dict[str, Any] = {
        "settings": {**vars(args), "data": str(args.data), "init": str(args.init), "out": str(args.out),
                     "resolution": resolution, "examples_source": source, "torch_threads": torch.get_num_threads()},
    }
    for name, t in totals.items():
        result[name] = {"wall_s": t["wall_s"], "cpu_s": t["cpu_s"], "samples_per_s_cpu": samples / t["cpu_s"],
                        "samples_per_s_wall": samples / t["wall_s"], "mean_loss": float(np.mean(t["losses"]))}
    ref = result["diffusers_example"]
    for name in ("ours_encode_each_step", "ours_encode_once"):
        result[f"ratio_{name}_cpu"] = result[name]["samples_per_s_cpu"] / ref["samples_per_s_cpu"]
        result[f"ratio_{name}_wall"] = result[name]["samples_per_s_wall"] / ref["samples_per_s_wall"]
    # the cached posterior gives the same target sample as encoding each step: same draws, same losses
    result["max_loss_difference_ours"] = float(np.max(np.abs(np.subtract(
        totals["ours_encode_each_step"]["losses"], totals["ours_encode_once"]["losses"]))))
    step_cpu = result["ours_encode_once"]["cpu_s"] / args.steps
    result["encode_once"] = {"cpu_s": once.encode_cpu_s, "examples": len(examples),
                             "ms_per_example": 1e3 * once.encode_cpu_s / len(examples),
                             "equals_cached_steps": once.encode_cpu_s / step_cpu}

    print(f"toy IP2P (toy SD, UNet widened to 8 channels), {resolution} px, batch {args.batch_size}, "
          f"{args.steps} timed steps each in turns of {args.chunk}, torch threads {torch.get_num_threads()}")
    print(f"examples: {source}; {len(examples)} held in memory")
    labels = {"diffusers_example": "diffusers' example step (encodes each step)",
              "ours_encode_each_step": "ours, encode_batch + loss_on_latents each step",
              "ours_encode_once": "ours, encoded once (trainer default for the toy)"}
    for name, label in labels.items():
        r = result[name]
        print(f"{label:50s} {r['samples_per_s_cpu']:7.1f} samples/s CPU ({r['cpu_s']:6.1f} s)  "
              f"{r['samples_per_s_wall']:7.1f} samples/s wall ({r['wall_s']:6.1f} s)  mean loss {r['mean_loss']:.4f}")
    for name in ("ours_encode_each_step", "ours_encode_once"):
        print(f"ratio {name} / diffusers_example: {result[f'ratio_{name}_cpu']:.2f}x CPU time, "
              f"{result[f'ratio_{name}_wall']:.2f}x wall")
    print(f"largest loss difference between our two routes (same examples, same draws): "
          f"{result['max_loss_difference_ours']:.2e}")
    e = result["encode_once"]
    print(f"encoding the {e['examples']} examples once: {e['cpu_s']:.1f} s CPU ({e['ms_per_example']:.1f} ms/example), "
          f"the time of {e['equals_cached_steps']:.1f} cached steps, paid once per run")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
