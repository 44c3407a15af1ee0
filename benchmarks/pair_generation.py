"""Pairs per second: the batched paired sampler against one pair per call, as the authors' loop does it.

Both sample the same Prompt-to-Prompt pairs (§3.1.2) with the same model (toy SD), the same
settings (Euler ancestral, `--steps` steps, cfg and p drawn per sample from the paper's ranges)
and the same seeds:

- batched: `generate_pairs(pipe, specs, batch_size=32)`: 32 pairs in each UNet call (128 rows:
  [uncond img0, uncond img1, cond img0, cond img1] x 32), self-attention sharing done by giving
  image 1 image 0's queries and keys, so the fused attention kernel runs;
- one pair per call (the authors' generation script): `generate_batch(pipe, [spec])` with a
  controller that materialises the attention probabilities of every layer (their attention
  forward computes softmax(q k^T) and then weights the values), image 1 taking image 0's
  probabilities.

The two take turns in this process, one chunk of `--batch-size` pairs each, after one warm-up
pair each (so a neighbour's load on a shared core falls on both alike); we report wall time and
this process's CPU time (the fairer number on a shared core), pairs/s and the ratio. Both must
give the same pictures: the largest 8-bit difference is printed.

    taskset -c 1 .venv/bin/python benchmarks/pair_generation.py --threads 1 --out figures/toy/pair_generation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ip2p_lib.p2p.attention import AttentionCall, SelfAttentionSharing
from ip2p_lib.p2p.sampler import PairImages, PairSpec, draw_specs, generate_batch, generate_pairs


class MaterialisedSharing(SelfAttentionSharing):
    """The authors' route: every attention call goes through explicit probabilities (`edit_probs`)."""

    def needs_probs(self, call: AttentionCall) -> bool:
        return True


def caption_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (input caption, edited caption) of the miniature world: one edit each, kinds in turn."""
    from ip2p_lib.toyworld import apply, caption, sample_edit, sample_scenes

    kinds = ("recolor", "reshape", "background", "resize")
    rng = np.random.default_rng(seed)
    return [(caption(s), caption(apply(s, sample_edit(s, rng, kinds=(kinds[i % len(kinds)],)))))
            for i, s in enumerate(sample_scenes(n, seed=30_000 + seed))]


def specs_for(pairs: int, steps: int, seed: int) -> list[PairSpec]:
    """One sample per caption pair; seed, cfg ~ U(7.5, 15) and p ~ U(0.1, 0.9) per sample (the paper's)."""
    rng = np.random.default_rng(seed)
    return [draw_specs(c0, c1, 1, rng, steps=steps)[0] for c0, c1 in caption_pairs(pairs, seed)]


def one_pair_per_call(pipe: Any, specs: list[PairSpec]) -> PairImages:
    outs = [generate_batch(pipe, [s], controller=MaterialisedSharing(s.p, 1)) for s in specs]
    return PairImages(np.concatenate([o.image_0 for o in outs]), np.concatenate([o.image_1 for o in outs]),
                      sum(o.attention_calls for o in outs))


def timed(fn: Callable[[], PairImages]) -> tuple[PairImages, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64, help="pairs sampled by each method (default 64)")
    ap.add_argument("--batch-size", type=int, default=32,
                    help="pairs per UNet call of the batched sampler (default 32)")
    ap.add_argument("--steps", type=int, default=20, help="Euler ancestral steps (default 20)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the specs (default 0)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from diffusers.utils import logging as dlogging

    from ip2p_lib.infra.models import load_sd

    dlogging.set_verbosity_error()
    pipe = load_sd("toy")
    pipe.set_progress_bar_config(disable=True)
    specs = specs_for(args.pairs, args.steps, args.seed)
    warm = specs_for(1, args.steps, args.seed + 1)
    generate_pairs(pipe, warm, batch_size=args.batch_size)  # warm-ups: first calls allocate and load kernels
    one_pair_per_call(pipe, warm)

    b_wall = b_cpu = l_wall = l_cpu = 0.0
    parts: dict[str, list[PairImages]] = {"batched": [], "looped": []}
    for start in range(0, len(specs), args.batch_size):  # the two methods take turns, chunk by chunk
        chunk = specs[start:start + args.batch_size]
        out, wall, cpu = timed(lambda: generate_pairs(pipe, chunk, batch_size=args.batch_size))
        parts["batched"].append(out)
        b_wall, b_cpu = b_wall + wall, b_cpu + cpu
        out, wall, cpu = timed(lambda: one_pair_per_call(pipe, chunk))
        parts["looped"].append(out)
        l_wall, l_cpu = l_wall + wall, l_cpu + cpu
    batched, looped = (PairImages(np.concatenate([p.image_0 for p in v]), np.concatenate([p.image_1 for p in v]),
                                  sum(p.attention_calls for p in v)) for v in parts.values())
    levels = max(int(np.abs(batched.image_0.astype(np.int16) - looped.image_0).max()),
                 int(np.abs(batched.image_1.astype(np.int16) - looped.image_1).max()))
    n = len(specs)
    result = {
        "settings": {**vars(args), "out": str(args.out), "model": "toy SD", "torch_threads": torch.get_num_threads()},
        "batched": {"wall_s": b_wall, "cpu_s": b_cpu,
                    "pairs_per_s_wall": n / b_wall, "pairs_per_s_cpu": n / b_cpu},
        "one_pair_per_call": {"wall_s": l_wall, "cpu_s": l_cpu,
                              "pairs_per_s_wall": n / l_wall, "pairs_per_s_cpu": n / l_cpu},
        "speedup_wall": l_wall / b_wall,
        "speedup_cpu": l_cpu / b_cpu,
        "max_level_difference": levels,
    }
    print(f"toy SD, {n} pairs, {args.steps} steps, cfg ~ U(7.5, 15), p ~ U(0.1, 0.9), "
          f"torch threads {torch.get_num_threads()}")
    for name, label in (("batched", f"batched ({args.batch_size} pairs/call, fused attention)"),
                        ("one_pair_per_call", "one pair per call (materialised probabilities)")):
        r = result[name]
        print(f"{label:52s} {r['pairs_per_s_cpu']:6.2f} pairs/s CPU ({r['cpu_s']:6.1f} s)   "
              f"{r['pairs_per_s_wall']:6.2f} pairs/s wall ({r['wall_s']:6.1f} s)")
    print(f"speedup batched / one per call: {result['speedup_cpu']:.2f}x CPU time, {result['speedup_wall']:.2f}x wall")
    print(f"largest 8-bit difference between the two methods' pictures: {levels}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
