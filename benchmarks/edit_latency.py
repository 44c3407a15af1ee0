"""Time one edit: our `InstructPix2PixEditor` against diffusers' `StableDiffusionInstructPix2PixPipeline`.

Same folder, image, instruction, steps, scales and seed; the two alternate, several runs each,
after one warm-up each. Prints both medians and the ratio ours / diffusers (lower is better).
It also checks that both produced the same picture.

    python benchmarks/edit_latency.py                 # a tiny random model, built in a temp folder
    python benchmarks/edit_latency.py --model PATH    # any InstructPix2Pix folder or cached hub id
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from PIL import Image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="InstructPix2Pix folder or hub id (default: build a tiny one)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=64, help="input image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least noise on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import StableDiffusionInstructPix2PixPipeline
    from diffusers.utils import logging as dlogging

    from ip2p_lib.editor import InstructPix2PixEditor
    from ip2p_lib.infra.random_models import build_tiny_ip2p

    dlogging.set_verbosity_error()
    tmp = None
    model = args.model
    if model is None:
        tmp = tempfile.TemporaryDirectory()
        model = str(build_tiny_ip2p(f"{tmp.name}/tiny_ip2p", unet_sample_size=args.size // 2))
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(model, safety_checker=None, requires_safety_checker=False).to(args.device)
    pipe.set_progress_bar_config(disable=True)
    editor = InstructPix2PixEditor.from_pretrained(model, device=args.device)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    prompt = "make the sky red"

    def ours() -> np.ndarray:
        return editor.edit(image, prompt, steps=args.steps, seed=args.seed, resolution=args.size, sizing="diffusers").array

    def theirs() -> np.ndarray:
        g = torch.Generator("cpu").manual_seed(args.seed)
        return pipe(prompt, image=image, num_inference_steps=args.steps, generator=g, output_type="np").images[0]

    diff = float(np.abs(ours() - theirs()).max())  # also the warm-up
    times: dict[str, list[float]] = {"ours": [], "diffusers": []}
    for _ in range(args.runs):
        for name, fn in (("ours", ours), ("diffusers", theirs)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"model {args.model or 'tiny random (built here)'}, {args.size}x{args.size} px, {args.steps} steps, "
          f"{args.runs} runs each, device {args.device}, torch threads {torch.get_num_threads()}")
    print(f"max abs diff ours vs diffusers: {diff:.2e}")
    print(f"median ours      {med['ours'] * 1000:8.1f} ms   runs {[round(t * 1000) for t in times['ours']]}")
    print(f"median diffusers {med['diffusers'] * 1000:8.1f} ms   runs {[round(t * 1000) for t in times['diffusers']]}")
    print(f"ratio ours/diffusers {med['ours'] / med['diffusers']:.3f}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
