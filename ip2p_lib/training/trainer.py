"""§3.2 Training InstructPix2Pix: models from `--init`, examples from the dataset, the loop, the folder.

    init (SD, 4-ch UNet) --surgery.widen_conv_in--> 8-ch UNet   (or an InstructPix2Pix folder as is)
    dataset --load_for_training--> pairs --encode (frozen VAE, text encoder)--> EncodedBatch
    step s: EncodedBatch of the sampler's examples --loss_on_latents--> loss    (objective.py)
    TrainLoop (loop.py): AdamW, EMA, checkpoints, accelerate
    end: the EMA UNet + the init's VAE, text encoder, tokenizer, scheduler
         --> StableDiffusionInstructPix2PixPipeline.save_pretrained(out)

Two recipes are named: `PAPER` (the paper's numbers: lr 1e-4 constant, EMA 0.9999, random
flip, 256 px, batch 1024 = 32 x 8 GPUs x 4 accumulation) and `TOY` (what the miniature world
trains with on 2 CPU cores; notebook 05 says why each number differs).

Encoding once. The VAE and the text encoder are frozen, and without a random crop or flip an
example always encodes the same way, so the trainer encodes the training set once
(`cache="auto"`) and each step only samples the target latent from the stored posterior
(the same draw as encoding each step). With a flip or a crop it encodes every batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ip2p_lib.infra.errors import UserError
from ip2p_lib.training.objective import (
    EncodedBatch,
    NullConditioning,
    check_models,
    encode_batch,
    loss_on_latents,
)

from ip2p_lib.training.recipes import CACHE_MODES, PAPER, RECIPES, TOY  # noqa: F401  (re-exported)

INIT_KINDS = ("sd", "ip2p")
REQUIRED_COLUMNS = ("original_image", "edited_image", "edit_prompt")
SAVE_PRECISIONS = ("fp32", "fp16")


@dataclass
class TrainConfig:
    """Everything that decides the weights (saved beside the run; a resumed run must match)."""

    data: str
    init: str
    steps: int = 10_000
    batch_size: int = 32              # per device, per micro-batch
    accumulation: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-2        # AdamW's default, as in the authors' and diffusers' code
    adam_betas: tuple[float, float] = (0.9, 0.999)
    clip_norm: float | None = None    # the authors clip nothing
    resolution: int | None = None     # None: the init's native size (UNet sample size x VAE factor)
    flip: bool = True
    ema_decay: float = 0.9999
    ema_warmup: str = "authors"
    mixed_precision: str = "no"
    split: str = "train"
    seed: int = 0
    cache: str = "auto"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        d.pop("cache")  # how the encoders run does not change the numbers
        return d





# ---------------------------------------------------------------- the models


@dataclass
class Models:
    """The parts of an InstructPix2Pix pipeline, the UNet already 8-channel."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: Any   # the init's inference scheduler (saved with the model)
    kind: str               # "sd" (widened here) or "ip2p" (fine-tuned as is)

    def noise_scheduler(self) -> Any:
        """The DDPM-form training scheduler with the init's betas and prediction type."""
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(self.scheduler_config)

    @property
    def native_resolution(self) -> int:
        return int(self.unet.config.sample_size) * 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_models(init: str | Path) -> Models:
    """Stable Diffusion (its UNet widened to 8 input channels by surgery) or an InstructPix2Pix
    model (fine-tuned as it is), from a local folder or a hub id; `UserError` for anything else."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from ip2p_lib.infra.models import from_pretrained
    from ip2p_lib.surgery import widen_conv_in

    what = "Stable Diffusion or InstructPix2Pix model"
    unet = from_pretrained(UNet2DConditionModel, init, what=what, required_file="model_index.json", subfolder="unet")
    vae = from_pretrained(AutoencoderKL, init, what=what, subfolder="vae")
    text_encoder = from_pretrained(CLIPTextModel, init, what=what, subfolder="text_encoder")
    tokenizer = from_pretrained(CLIPTokenizer, init, what=what, subfolder="tokenizer")
    try:
        scheduler_config = DDPMScheduler.load_config(str(init), subfolder="scheduler")
    except (OSError, ValueError) as err:
        raise UserError(f"{init}: no scheduler config ({str(err).splitlines()[0]})") from err
    latent = vae.config.latent_channels
    if unet.config.in_channels == latent:
        kind = "sd"
        widen_conv_in(unet, 2 * latent)
    elif unet.config.in_channels == 2 * latent:
        kind = "ip2p"
    else:
        raise UserError(f"{init}: its UNet takes {unet.config.in_channels} input channels; an SD model has "
                        f"{latent} and an InstructPix2Pix model {2 * latent}")
    for frozen in (vae, text_encoder):
        frozen.requires_grad_(False)
        frozen.eval()
    return Models(unet, vae, text_encoder, tokenizer, scheduler_config, kind)


def save_pipeline(models: Models, unet: Any, out: str | Path, card: dict[str, Any] | None = None,
                  precision: str = "fp32") -> Path:
    """Write `out` as a diffusers InstructPix2Pix folder (safetensors) that
    `StableDiffusionInstructPix2PixPipeline.from_pretrained` and `ip2p edit` load.

    `precision` "fp16" stores the UNet, VAE and text encoder in half precision (the toy models
    are committed so: half the bytes; loaders cast back to float32 on a CPU) and writes
    tokenizer.json without indentation (same content, half its size)."""
    import copy

    import diffusers
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from diffusers.schedulers import EulerAncestralDiscreteScheduler

    if precision not in SAVE_PRECISIONS:
        raise UserError(f"save precision must be one of {', '.join(SAVE_PRECISIONS)}, got {precision!r}")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    parts = {name: copy.deepcopy(m).to(dtype) for name, m in
             (("vae", models.vae), ("text_encoder", models.text_encoder), ("unet", unet))}
    cls = getattr(diffusers, models.scheduler_config.get("_class_name", ""), EulerAncestralDiscreteScheduler)
    pipe = StableDiffusionInstructPix2PixPipeline(
        **parts, tokenizer=models.tokenizer, scheduler=cls.from_config(models.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    out = Path(out)
    pipe.save_pretrained(out, safe_serialization=True)
    if precision == "fp16":  # stored in half, loaded in float32 by default (transformers reads "dtype" from the config)
        for config_file in out.glob("*/config.json"):
            config = json.loads(config_file.read_text())
            changed = {k: "float32" for k in ("dtype", "torch_dtype") if config.get(k) == "float16"}
            if changed:
                config_file.write_text(json.dumps({**config, **changed}, indent=2, sort_keys=True) + "\n")
    tokenizer_file = out / "tokenizer" / "tokenizer.json"
    if precision == "fp16" and tokenizer_file.exists():
        tokenizer_file.write_text(json.dumps(json.loads(tokenizer_file.read_text()), separators=(",", ":"),
                                             ensure_ascii=False))
    if card is not None:
        (out / "training.json").write_text(json.dumps({**card, "save_precision": precision}, indent=2))
    return out


# ---------------------------------------------------------------- the examples


def check_cache(mode: str, flip: bool, dataset: Any) -> bool:
    """Whether to encode the training set once: only when every example always encodes the same."""
    if mode not in CACHE_MODES:
        raise UserError(f"cache must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
    fixed = not flip and tuple(dataset.resize_range) == (dataset.resolution, dataset.resolution)
    if mode == "on" and not fixed:
        raise UserError("cannot encode the training set once with a random flip or crop: use --cache off or --no-flip")
    return fixed and mode != "off"


@torch.no_grad()
def encode_dataset(models: Models, dataset: Any, batch_size: int = 64, progress: bool = True) -> EncodedBatch:
    """Every example of `dataset`, encoded by the frozen VAE and text encoder (in order)."""
    from tqdm.auto import tqdm

    parts = []
    for lo in tqdm(range(0, len(dataset), batch_size), desc="encoding the training set", disable=not progress,
                   mininterval=5):
        batch = collate([dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))])
        parts.append(encode_batch(models.vae, models.text_encoder, models.tokenizer, batch))
    return EncodedBatch(*(torch.cat([getattr(p, f) for p in parts]) for f in
                          ("target_mean", "target_std", "image", "text")))


def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """A list of {"original", "edited", "edit_prompt"} examples as one batch."""
    return {"original": torch.stack([e["original"] for e in examples]),
            "edited": torch.stack([e["edited"] for e in examples]),
            "edit_prompt": [e["edit_prompt"] for e in examples]}


def check_dataset(data: str | Path, resolution: int, flip: bool, split: str, seed: int) -> Any:
    """The training split of `data` as `load_for_training` gives it; `UserError` when unusable."""
    from ip2p_lib.dataset.training import load_for_training

    try:
        dataset = load_for_training(data, resolution, flip=flip, crop="random", split=split, seed=seed)
    except (KeyError, ValueError) as err:
        raise UserError(f"{data}: not a training set with original_image, edited_image and edit_prompt "
                        f"columns ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from err
    columns = set(getattr(getattr(dataset.source, "table", None), "column_names", None) or REQUIRED_COLUMNS)
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise UserError(f"{data}: not a training set: it lacks column(s) {', '.join(missing)} "
                        f"(it needs {', '.join(REQUIRED_COLUMNS)})")
    if len(dataset) == 0:
        raise UserError(f"{data}: the {split} split has no examples")
    return dataset


# ---------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What a finished run reports (also written as `training.json` beside the model)."""

    out: str
    steps: int
    effective_batch: int
    examples: int
    epochs: float
    wall_s: float
    loss_first: float
    loss_last: float
    describe: dict[str, Any] = field(default_factory=dict)


def train(config: TrainConfig, out: str | Path, run_dir: str | Path | None = None, progress: bool = True,
          checkpoint_every_s: float = 300.0, snapshot_every: int | None = None,
          accelerator: Any = None, command: str | None = None, save_precision: str = "fp32") -> TrainResult:
    """Train InstructPix2Pix per `config`, resumably in `run_dir`; save the EMA model to `out`.

    `snapshot_every`: also save the EMA UNet every so many steps under `run_dir/snapshots/`
    (notebook 05's grid of samples over training). Rerun the same call after a kill: it resumes
    from the last checkpoint and ends with the same weights."""
    from ip2p_lib.dataset.training import open_source
    from ip2p_lib.infra.trainloop import (EpochSampler, LoopSettings, TrainLoop, check_config, constant_schedule,
                                          make_accelerator, make_ema, step_generator)

    run_dir = Path(run_dir) if run_dir is not None else Path(str(out) + ".run")
    if not Path(config.data).is_dir():
        raise UserError(f"no dataset folder at {config.data}: make one with `ip2p pairs generate` and `ip2p pairs filter`")
    open_source(config.data)  # a folder that holds no dataset fails here, before any model loads
    accelerator = accelerator or make_accelerator(config.mixed_precision)
    models = load_models(config.init)
    resolution = config.resolution or models.native_resolution
    if resolution % (2 ** (len(models.vae.config.block_out_channels) - 1) * 2 ** (len(models.unet.config.block_out_channels) - 1)):
        raise UserError(f"resolution {resolution} is not a multiple of the model's 2^depth factor")
    dataset = check_dataset(config.data, resolution, config.flip, config.split, config.seed)
    if accelerator.is_main_process:
        check_config(run_dir, {**config.to_json(), "resolution": resolution})
    accelerator.wait_for_everyone()

    scheduler = models.noise_scheduler()
    check_models(models.unet, models.vae, scheduler)
    torch.manual_seed(config.seed)
    unet = models.unet
    unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.lr, betas=tuple(config.adam_betas),
                                  weight_decay=config.weight_decay)
    ema = make_ema(unet, config.ema_decay, config.ema_warmup)
    settings = LoopSettings(steps=config.steps, batch=config.batch_size, accumulation=config.accumulation,
                            clip_norm=config.clip_norm, checkpoint_every_s=checkpoint_every_s, progress=progress,
                            desc="ip2p train")
    loop = TrainLoop(accelerator, unet, optimizer, run_dir, settings, schedule=constant_schedule(optimizer), ema=ema)
    device = accelerator.device
    models.vae.to(device)
    models.text_encoder.to(device)
    null = NullConditioning.from_encoder(models.text_encoder, models.tokenizer)
    scaling = models.vae.config.scaling_factor
    sampler = EpochSampler(len(dataset), config.batch_size, config.seed, accelerator.num_processes,
                           config.accumulation)
    use_cache = check_cache(config.cache, config.flip, dataset)
    cache: list[EncodedBatch] = []  # filled at the first step: a finished run re-exported encodes nothing
    rank = accelerator.process_index

    def encoded_examples(step: int, micro: int) -> EncodedBatch:
        idx = sampler.indices(step, micro, rank)
        if use_cache:
            if not cache:
                cache.append(encode_dataset(models, dataset, progress=progress))
            return cache[0].index(torch.as_tensor(idx))
        first = sampler.first_sample(step, micro, rank)
        examples = []
        for j, i in enumerate(idx):
            dataset.set_epoch((first + j) // len(dataset))  # the example's augmentation draw: (seed, epoch, i)
            examples.append(dataset[int(i)])
        return encode_batch(models.vae, models.text_encoder, models.tokenizer, collate(examples))

    def step_fn(step: int, micro: int) -> torch.Tensor:
        encoded = encoded_examples(step, micro)
        loss, _ = loss_on_latents(loop.model, scheduler, encoded, scaling, null,
                                  step_generator(config.seed, step, micro, rank))
        return loss

    t0 = time.monotonic()
    # snapshots are taken between steps: run in segments ending at each snapshot step
    targets = sorted({*(range(snapshot_every, config.steps, snapshot_every) if snapshot_every else ()), config.steps})
    state = None
    for target in targets:
        loop.settings = replace(settings, steps=target)
        state = loop.run(step_fn, n_examples=len(dataset))
        if snapshot_every and target < config.steps and state.step == target and accelerator.is_main_process:
            save_unet_snapshot(loop, models, run_dir / "snapshots" / f"unet-{target:06d}")
    loop.settings = settings
    wall = time.monotonic() - t0
    result = None
    if accelerator.is_main_process:
        final_unet = _copy_model(loop.unwrapped)
        loop.ema_weights_to(final_unet)
        losses = state.losses
        describe = loop.describe(len(dataset))
        window = max(1, min(50, len(losses) // 4))  # first and last quarter of a short run
        result = TrainResult(out=str(out), steps=state.step, effective_batch=loop.effective_batch,
                             examples=len(dataset), epochs=describe.get("epochs", 0.0), wall_s=round(state.elapsed_s, 1),
                             loss_first=float(np.mean(losses[:window])), loss_last=float(np.mean(losses[-window:])),
                             describe=describe)
        from ip2p_lib.toyworld.pretrain.common import machine

        save_pipeline(models, final_unet, out, card={"config": {**config.to_json(), "resolution": resolution},
                                                     "result": asdict(result), "init_kind": models.kind,
                                                     "this_call_wall_s": round(wall, 1), "command": command,
                                                     "machine": machine()}, precision=save_precision)
        (Path(out) / "training_log.jsonl").write_text((run_dir / "log.jsonl").read_text())
        write_training_captions(config.data, out)
        write_model_card(out)
    accelerator.wait_for_everyone()
    return result


def _copy_model(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).eval()


def save_unet_snapshot(loop: Any, models: Models, folder: Path) -> None:
    """The EMA UNet at this step, as a diffusers UNet folder (fp16 safetensors)."""
    if (folder / "config.json").exists():
        return
    unet = _copy_model(loop.unwrapped)
    loop.ema_weights_to(unet)
    unet.to(torch.float16).save_pretrained(folder, safe_serialization=True)


def write_training_captions(data: str | Path, out: str | Path) -> None:
    """`training_captions.json` beside the model: every caption of its dataset (all splits), so that
    an evaluation can leave out the scenes it was trained on (`evaluate.heldout_cases`)."""
    from ip2p_lib.dataset.shards import shard_files
    from ip2p_lib.training.evaluate import training_captions

    if shard_files(data):  # our shards; the authors' layout has no scenes to hold out
        (Path(out) / "training_captions.json").write_text(json.dumps(sorted(training_captions(data))))


def write_model_card(folder: str | Path, quality: str | None = None) -> Path:
    """README.md for a trained folder from its `training.json`, plus a measured-quality section
    (markdown, e.g. from `benchmarks/ip2p_quality.py --card`) when given; keeps an earlier one otherwise."""
    from ip2p_lib.toyworld.pretrain.common import write_card

    folder = Path(folder)
    info = json.loads((folder / "training.json").read_text())
    old = (folder / "README.md").read_text() if (folder / "README.md").exists() else ""
    if quality is None and "## Quality" in old:
        quality = old.split("## Quality", 1)[1].strip()
    result, config = info["result"], info["config"]
    data = Path(config["data"])
    sections: dict[str, Any] = {
        "What it is": (f"An InstructPix2Pix model (diffusers `StableDiffusionInstructPix2PixPipeline`, EMA weights, "
                       f"safetensors) trained by `ip2p train` from {config['init']} "
                       f"({'UNet widened to 8 channels' if info.get('init_kind') == 'sd' else 'fine-tuned'})."),
        "Command": f"```\n{info.get('command') or '(called from Python)'}\n```",
        "Training config": config,
        "Run": {"optimizer steps": result["steps"], "effective batch": result["effective_batch"],
                "per device x processes x accumulation": "{per_device_batch} x {processes} x {accumulation}".format(
                    **result["describe"]),
                "training examples": result["examples"], "epochs": result["epochs"],
                "training wall time (s)": result["wall_s"], "machine": info.get("machine", ""),
                "loss first/last (mean of 50 steps)": f"{result['loss_first']:.4f} / {result['loss_last']:.4f}"},
        "Data": (f"`{data}`: the recipe is in data/toy/DATASETS.md (generated with `ip2p pairs generate`, kept by "
                 "`ip2p pairs filter`)." + (f" Filter summary: `{json.dumps(json.loads((data / 'filter.json').read_text()))}`"
                                           if (data / "filter.json").exists() else "")),
    }
    if quality:
        sections["Quality"] = quality
    return write_card(folder, f"InstructPix2Pix model: {folder.name}", sections)
