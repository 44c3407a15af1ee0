"""The GPU path of one edit: seconds, peak memory and the FLOP floor, ours against diffusers.

An SD 1.5-shaped InstructPix2Pix with random weights (speed and memory do not depend on the
weight values): `UNet2DConditionModel` with SD 1.5's config and 8 input channels, SD 1.5's
`AutoencoderKL`, CLIP ViT-L/14's text tower, a CLIP tokenizer built offline. Each dtype
(fp16, bf16; attention by SDPA, `AttnProcessor2_0`) times `InstructPix2PixEditor.edit` and
diffusers' `StableDiffusionInstructPix2PixPipeline`, built on the same module objects: 512 px,
100 Euler ancestral steps, s_T = 7.5, s_I = 1.5, the three guidance branches one UNet batch.
The two take turns after one warm-up each; the warm-ups also give how far apart their pictures are.

    ratio       = our seconds per edit / diffusers'                    target <= 1.0
    peak        = torch.cuda.max_memory_allocated() during an edit    target <= 8 GB (the authors ask for 18)
    FLOP / edit = steps * F_unet(3 rows) + F_vae_encode + F_vae_decode + F_text(2 rows)
    floor       = FLOP per edit / dense matmul FLOP/s in the same dtype; target: measured <= 2 x floor

FLOPs are counted by `FlopCounterMode` on the meta device (`p2p.cost.count_flops`: matrix products
and convolutions, 2 per multiply-add); the matmul rate is the best of several n x n x n products.

    python benchmarks/gpu_edit.py --out DIR          # the GPU measurement (needs CUDA): DIR/gpu_edit.json
    python benchmarks/gpu_edit.py --tiny --out DIR   # tiny models, 64 px, 4 steps, fp32 on the CPU: tests the code path
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ip2p_lib.infra.models import SD15_TEXT_ENCODER_CONFIG, SD15_UNET_CONFIG, SD15_VAE_CONFIG
from ip2p_lib.infra.random_models import tiny_clip_tokenizer, tiny_unet_config

PROMPT = "make the sky red"
S_TEXT, S_IMAGE = 7.5, 1.5  # the paper's s_T and s_I
SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
TARGET_RATIO, TARGET_PEAK_GB, AUTHORS_PEAK_GB, TARGET_FLOOR = 1.0, 8.0, 18.0, 2.0


@dataclass(frozen=True)
class Sizes:
    """The model shapes: only these change between the real measurement and the tiny test."""

    unet: dict[str, Any]
    vae: dict[str, Any]
    text: dict[str, Any]
    tokens: int  # text tokens per prompt (77 for SD)
    vocab: int | None  # text-encoder vocabulary (None: the tokenizer's)


SD15 = Sizes(unet={**SD15_UNET_CONFIG, "in_channels": 8}, vae=SD15_VAE_CONFIG, text=SD15_TEXT_ENCODER_CONFIG,
             tokens=77, vocab=49408)
TINY = Sizes(unet={**tiny_unet_config(in_channels=8, cross_attention_dim=32), "block_out_channels": (32, 64)},
             vae={"block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
                  "up_block_types": ("UpDecoderBlock2D",) * 2, "latent_channels": 4, "norm_num_groups": 8},
             text={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2},
             tokens=16, vocab=None)


@dataclass
class Settings:
    """What is measured: the real run by default, `tiny()` for the CPU test."""

    device: str = "cuda"
    dtypes: list[str] = field(default_factory=lambda: ["fp16", "bf16"])
    size: int = 512  # image side in pixels
    steps: int = 100
    runs: int = 3  # timed edits per method and dtype, after one warm-up each
    matmul_n: int = 8192  # side of the matrices whose product gives the dense rate

    @classmethod
    def tiny(cls) -> "Settings":
        """The CPU test: 64 px, 4 steps, fp32, a small matmul."""
        return cls(device="cpu", dtypes=["fp32"], size=64, steps=4, runs=2, matmul_n=256)


def build_models(sizes: Sizes, device: str) -> dict[str, Any]:
    """UNet, VAE, text encoder (random weights, built on `device`, fp32), tokenizer and scheduler.

    `device="meta"` builds them without memory, to count FLOPs."""
    from diffusers import AutoencoderKL, EulerAncestralDiscreteScheduler, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor2_0
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = tiny_clip_tokenizer(model_max_length=sizes.tokens)  # speed does not depend on the vocabulary
    config = CLIPTextConfig(**sizes.text, vocab_size=sizes.vocab or len(tokenizer), max_position_embeddings=sizes.tokens,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id)
    with torch.device(device):  # parameters are created where they will run: no fp32 copy on the host
        unet, vae, text_encoder = UNet2DConditionModel(**sizes.unet), AutoencoderKL(**sizes.vae), CLIPTextModel(config)
    for model in (unet, vae):
        model.set_attn_processor(AttnProcessor2_0())  # F.scaled_dot_product_attention
    return {"unet": unet.eval(), "vae": vae.eval(), "text_encoder": text_encoder.eval(), "tokenizer": tokenizer,
            "scheduler": EulerAncestralDiscreteScheduler(**SD_SCHEDULER)}


def edit_flops(sizes: Sizes, size: int, steps: int) -> dict[str, float]:
    """FLOPs of one edit of a `size` px image, counted on the meta device (nothing runs)."""
    from ip2p_lib.p2p.cost import count_flops

    m = build_models(sizes, "meta")
    unet, vae = m["unet"], m["vae"]
    side = size // 2 ** (len(vae.config.block_out_channels) - 1)  # the latent's side (64 at 512 px)
    with torch.device("meta"), torch.no_grad():
        z = torch.zeros(3, unet.config.in_channels, side, side)  # the three branches, one batch
        hidden = torch.zeros(3, sizes.tokens, unet.config.cross_attention_dim)
        flops = {
            "unet_step": count_flops(lambda: unet(z, torch.tensor([500]), encoder_hidden_states=hidden)),
            "vae_encode": count_flops(lambda: vae.encode(torch.zeros(1, 3, size, size)).latent_dist.mode()),
            "vae_decode": count_flops(lambda: vae.decode(torch.zeros(1, vae.config.latent_channels, side, side))),
            "text_encode": count_flops(lambda: m["text_encoder"](torch.zeros(2, sizes.tokens, dtype=torch.long))),
        }
    flops["unet_all_steps"] = steps * flops["unet_step"]
    flops["edit"] = flops["unet_all_steps"] + flops["vae_encode"] + flops["vae_decode"] + flops["text_encode"]
    return flops


def sync(device: str) -> None:
    """Wait for the GPU to finish its queued work (CUDA runs asynchronously)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_rate(n: int, dtype: torch.dtype, device: str, reps: int = 5, inner: int = 10) -> float:
    """The dense matmul rate in FLOP/s: the best of `reps` timings of `inner` n x n x n products."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: picks the kernel
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(inner):
            torch.matmul(a, b)
        sync(device)
        best = min(best, (time.perf_counter() - start) / inner)
    return 2 * n**3 / best  # n^2 outputs, n multiply-adds each


def timed(fn: Callable[[], Any], device: str) -> tuple[float, int | None, int | None]:
    """Seconds `fn()` takes, and the peak GPU memory in bytes during it, allocated by tensors (weights
    included) and reserved by PyTorch's allocator (what nvidia-smi shows, less the context); None on the CPU."""
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    fn()
    sync(device)
    seconds = time.perf_counter() - start
    return (seconds, torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()) if cuda else (seconds, None, None)


def measure(models: dict[str, Any], dtype_name: str, s: Settings) -> dict[str, Any]:
    """Ours and diffusers' pipeline in one dtype, on the same modules: medians, peaks, their difference."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
    from PIL import Image

    from ip2p_lib.editor import InstructPix2PixEditor

    dtype = DTYPES[dtype_name]
    unet, vae, text_encoder, tokenizer = (models[k] for k in ("unet", "vae", "text_encoder", "tokenizer"))
    for module in (unet, vae, text_encoder):
        module.to(dtype=dtype)  # in place: the pipeline and the editor share these objects
    config = models["scheduler"].config
    editor = InstructPix2PixEditor(unet, vae, text_encoder, tokenizer, config, s.device, dtype)
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=EulerAncestralDiscreteScheduler.from_config(config), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (s.size, s.size, 3), dtype=np.uint8))

    def ours() -> np.ndarray:
        return editor.edit(image, PROMPT, steps=s.steps, s_text=S_TEXT, s_image=S_IMAGE, seed=0,
                           resolution=s.size, sizing="diffusers").array

    def theirs() -> np.ndarray:
        return pipe(PROMPT, image=image, num_inference_steps=s.steps, guidance_scale=S_TEXT,
                    image_guidance_scale=S_IMAGE, generator=torch.Generator("cpu").manual_seed(0),
                    output_type="np").images[0]

    diff = float(np.abs(ours() - theirs()).max())  # also the warm-ups
    runs: dict[str, list[tuple[float, int | None, int | None]]] = {"ours": [], "diffusers": []}
    for _ in range(s.runs):
        for name, fn in (("ours", ours), ("diffusers", theirs)):
            runs[name].append(timed(fn, s.device))
    out: dict[str, Any] = {"max_abs_diff_pixels": diff}
    for name, r in runs.items():
        seconds, allocated, reserved = zip(*r)
        out[name] = {"seconds": statistics.median(seconds), "runs_s": list(seconds),
                     "peak_gb": None if allocated[0] is None else max(allocated) / 1e9,
                     "peak_reserved_gb": None if reserved[0] is None else max(reserved) / 1e9}
    out["ratio"] = out["ours"]["seconds"] / out["diffusers"]["seconds"]
    return out


def judge(r: dict[str, Any]) -> dict[str, bool | None]:
    """Whether one dtype's results meet the three targets (None: not measured here)."""
    peak = r["ours"]["peak_gb"]
    return {"ratio": r["ratio"] <= TARGET_RATIO, "peak": None if peak is None else peak <= TARGET_PEAK_GB,
            "floor": r["ours"]["over_floor"] <= TARGET_FLOOR}


def table(results: dict[str, Any]) -> str:
    """The Markdown table: per dtype, time, ratio, peak memory and distance to the floor, with targets."""
    def gb(value: float | None) -> str:
        return "n/a (CPU)" if value is None else f"{value:.2f}"

    def met(ok: bool | None) -> str:
        return "n/a" if ok is None else ("yes" if ok else "NO")

    rows = ["| dtype | measure | ours | diffusers | target | met |", "|---|---|---|---|---|---|"]
    for name, r in results["dtypes"].items():
        o, d, ok = r["ours"], r["diffusers"], r["met"]
        rows += [
            f"| {name} | seconds per edit (median of {len(o['runs_s'])}) | {o['seconds']:.3f} | {d['seconds']:.3f} | | |",
            f"| {name} | ours / diffusers | {r['ratio']:.3f} | | <= {TARGET_RATIO:g} | {met(ok['ratio'])} |",
            f"| {name} | peak memory allocated, GB | {gb(o['peak_gb'])} | {gb(d['peak_gb'])} "
            f"| <= {TARGET_PEAK_GB:g} (authors: {AUTHORS_PEAK_GB:g}) | {met(ok['peak'])} |",
            f"| {name} | measured / floor ({r['floor_s']:.3f} s at {r['matmul_tflops']:.1f} TFLOP/s) "
            f"| {o['over_floor']:.2f} | {d['over_floor']:.2f} | <= {TARGET_FLOOR:g} | {met(ok['floor'])} |",
        ]
    return "\n".join(rows)


def environment(models: dict[str, Any], device: str) -> dict[str, Any]:
    """The device, library versions and attention settings, for the JSON."""
    import diffusers
    import transformers

    from ip2p_lib.infra.measurements import machine_info

    host = machine_info()
    env: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU {host['cpu']}",
        "host": host, "torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(),
        "attention_processors": sorted({type(p).__name__ for m in ("unet", "vae")
                                        for p in models[m].attn_processors.values()}),
        "text_encoder_attention": getattr(models["text_encoder"].config, "_attn_implementation", None),
    }
    if device.startswith("cuda"):
        env["gpu_memory_gb"] = torch.cuda.get_device_properties(0).total_memory / 1e9
        env["sdpa_backends_enabled"] = {k: getattr(torch.backends.cuda, f"{k}_sdp_enabled")()
                                        for k in ("flash", "mem_efficient", "cudnn", "math")}
    else:
        env["torch_threads"] = torch.get_num_threads()
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models, 64 px, 4 steps, fp32 on the CPU (tests the code path)")
    ap.add_argument("--out", type=Path, default=None, help="folder for gpu_edit.json (default: print only)")
    ap.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), help="default fp16 bf16 (tiny: fp32)")
    ap.add_argument("--steps", type=int, help="sampler steps (default 100; tiny 4)")
    ap.add_argument("--runs", type=int, help="timed edits per method and dtype (default 3; tiny 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads in tiny mode (default 1)")
    args = ap.parse_args()
    s = Settings.tiny() if args.tiny else Settings()
    s.dtypes, s.steps, s.runs = args.dtypes or s.dtypes, args.steps or s.steps, args.runs or s.runs
    if s.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_edit.py: no CUDA device; this measures the GPU path (use --tiny to test it on the CPU)")
    if args.tiny:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.set_verbosity_error()
    tlogging.set_verbosity_error()
    sizes = TINY if args.tiny else SD15
    label = "tiny" if args.tiny else "SD 1.5-shaped"
    print(f"counting the FLOPs of one {label} edit on the meta device ...", flush=True)
    flops = edit_flops(sizes, s.size, s.steps)
    print(f"building {label} UNet (8 input channels), VAE and CLIP text encoder, random weights, on {s.device} ...",
          flush=True)
    models = build_models(sizes, s.device)
    results: dict[str, Any] = {"settings": {**asdict(s), "tiny": args.tiny, "prompt": PROMPT, "s_text": S_TEXT,
                                            "s_image": S_IMAGE, "scheduler": "EulerAncestralDiscreteScheduler",
                                            "sizes": asdict(sizes)},
                               "environment": environment(models, s.device), "flops": flops, "dtypes": {}}
    for name in s.dtypes:
        print(f"{name}: matmul rate ({s.matmul_n}^3), then ours and diffusers in turns, {s.size} px, {s.steps} steps, "
              f"1 warm-up + {s.runs} timed edits each ...", flush=True)
        rate = matmul_rate(s.matmul_n, DTYPES[name], s.device)
        r = measure(models, name, s)
        r["matmul_tflops"], r["floor_s"] = rate / 1e12, flops["edit"] / rate
        for who in ("ours", "diffusers"):
            r[who]["over_floor"] = r[who]["seconds"] / r["floor_s"]
        r["met"] = judge(r)
        results["dtypes"][name] = r
        print(f"{name}: ours {r['ours']['seconds']:.3f} s, diffusers {r['diffusers']['seconds']:.3f} s, "
              f"max abs pixel difference {r['max_abs_diff_pixels']:.2e}", flush=True)

    env = results["environment"]
    print(f"\n{'TINY (code-path test, not a measurement): ' if args.tiny else ''}{env['device']}, torch {env['torch']}, "
          f"diffusers {env['diffusers']}; {s.size} px, {s.steps} steps, s_T {S_TEXT}, s_I {S_IMAGE}, Euler ancestral, "
          f"attention {', '.join(env['attention_processors'])}")
    print(f"FLOP per edit {flops['edit'] / 1e12:.4g} T: UNet {flops['unet_step'] / 1e12:.4g} T per step (3 rows) "
          f"x {s.steps}, VAE encode {flops['vae_encode'] / 1e12:.4g} T, decode {flops['vae_decode'] / 1e12:.4g} T, "
          f"text {flops['text_encode'] / 1e12:.4g} T; matmul {s.matmul_n}^3 for the rate\n")
    print(table(results))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / ("gpu_edit_tiny.json" if args.tiny else "gpu_edit.json")
        path.write_text(json.dumps(results, indent=2, default=str))
        print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
