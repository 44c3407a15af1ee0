"""Yield and cost of the toy pair generator, and the paper's run estimated from FLOPs.

Reads a folder written by `ip2p pairs generate` (every sample with its CLIP scores), judges
every pair with the oracle, and for N = 1, 2, 4, ... samples per caption pair (the first N of
each pair's samples) applies the filter: kept pairs per caption pair, caption pairs with a
kept sample, precision by the oracle, and generated pairs per kept pair. Cost: pairs/s of the
sampler measured in this process (or --pairs-per-second), CPU-hours per 1,000 kept pairs.
The full-profile estimate counts FLOPs of SD 1.5's UNet and VAE decoder on the meta device
(no weights, no compute) for the authors' settings: 100 Euler ancestral steps, a CFG batch of
4 rows per pair, 454,445 caption pairs x 100 samples (`ip2p_lib.p2p.cost`, which notebook 02 shows too).

    .venv/bin/python benchmarks/pairs_yield.py --data data/generated/toy/pairs --out figures/toy/pairs_yield.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ip2p_lib.p2p.cost import (
    A100_PEAK_TFLOPS, A100_UTILISATION, PAPER_CAPTION_PAIRS, PAPER_SAMPLES, generation_cost, sd15_flops,
)


def measure_pairs_per_second(pairs: int, steps: int, threads: int) -> float:
    from ip2p_lib.infra.models import load_sd
    from ip2p_lib.p2p.sampler import PairSpec, generate_pairs

    torch.set_num_threads(threads)
    pipe = load_sd("toy")
    specs = [PairSpec("a large red circle on a gray background", "a large blue circle on a gray background",
                      i, 10.0, 0.5, steps) for i in range(pairs)]
    generate_pairs(pipe, specs[:4], batch_size=4)  # warm-up
    t0 = time.perf_counter()
    generate_pairs(pipe, specs, batch_size=32)
    return pairs / (time.perf_counter() - t0)


def yield_table(frame: Any, good: np.ndarray, thresholds: Any, samples: list[int]) -> list[dict[str, Any]]:
    from ip2p_lib.dataset.shards import scores_of
    from ip2p_lib.filtering import select

    rows = []
    for n in samples:
        m = (frame["sample"] < n).to_numpy()
        sub = frame[m]
        scores = scores_of(sub)
        keep = select(scores, list(sub["triple_index"]), thresholds)
        g = good[m]
        pairs = sub["triple_index"].nunique()
        kept_pairs = sub["triple_index"][keep].nunique()
        rows.append({"samples_per_caption_pair": n, "generated": int(m.sum()), "kept": int(keep.sum()),
                     "kept_per_caption_pair": keep.sum() / pairs, "caption_pairs_with_a_kept_sample": kept_pairs / pairs,
                     "precision": float(g[keep].mean()) if keep.any() else float("nan"),
                     "generated_per_kept": m.sum() / max(1, keep.sum())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="folder of `ip2p pairs generate`")
    ap.add_argument("--thresholds", default="toy", help="filter preset (default toy)")
    ap.add_argument("--pairs-per-second", type=float, help="skip the speed measurement and use this")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the speed measurement (default 1)")
    ap.add_argument("--a100-tflops", type=float, default=A100_PEAK_TFLOPS * A100_UTILISATION,
                    help="assumed sustained A100 throughput, TFLOP/s (default 40%% of the 312 dense fp16 peak)")
    ap.add_argument("--out", type=Path, help="write the results as JSON here")
    args = ap.parse_args()
    from ip2p_lib.dataset.shards import images_of, read_table, scores_of
    from ip2p_lib.filtering import PRESETS, select
    from ip2p_lib.p2p.evaluate import oracle_verdicts

    frame = read_table(args.data)
    run = json.loads((args.data / "run.json").read_text())
    t0 = time.perf_counter()
    verdict = oracle_verdicts(images_of(frame, "original_image"), images_of(frame, "edited_image"),
                              list(frame["original_prompt"]), list(frame["edited_prompt"]))
    good = verdict["success"] & verdict["faithful_0"]
    print(f"{len(frame)} pairs of {frame['triple_index'].nunique()} caption pairs judged in {time.perf_counter() - t0:.0f} s; "
          f"oracle: {good.mean():.3f} good")
    per_pair = run["samples_per_pair"]
    samples = [n for n in (1, 2, 4, 8, 16, 32, 64, 100) if n <= per_pair]
    rows = yield_table(frame, good, PRESETS[args.thresholds], samples)
    from ip2p_lib.filtering.calibrate import filter_report, roc_auc

    scores = scores_of(frame)
    groups = list(frame["triple_index"])
    aucs = {k: roc_auc(v, good) for k, v in scores.items()}
    print("AUC against the oracle:", {k: round(v, 3) for k, v in aucs.items()})
    reports = {name: filter_report(scores, good, groups, t) for name, t in PRESETS.items()}
    for name, r in reports.items():
        print(name, {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items() if k != "thresholds"})
    keep = select(scores, groups, PRESETS[args.thresholds])
    per_kind = {}
    for kind in sorted(set(verdict["kind"])):
        m = verdict["kind"] == kind
        per_kind[kind or "unreadable"] = {"samples": int(m.sum()), "oracle_good": float(good[m].mean()),
                                          "kept": int((m & keep).sum()),
                                          "precision": float(good[m & keep].mean()) if (m & keep).any() else None}
    print("per kind:", per_kind)
    pps = args.pairs_per_second or measure_pairs_per_second(64, run["steps"], args.threads)
    for r in rows:
        r["cpu_hours_per_1000_kept"] = r["generated_per_kept"] * 1000 / pps / 3600
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})
    full = generation_cost(sd15_flops(), tflops=args.a100_tflops)
    print(f"full profile: {full['flops_per_pair'] / 1e12:.0f} TFLOP per pair, {full['total_flops']:.3g} FLOP for the paper's "
          f"{PAPER_CAPTION_PAIRS:,} x {PAPER_SAMPLES} pairs = {full['a100_hours']:,.0f} A100-hours at {args.a100_tflops:.0f} TFLOP/s")
    result = {"data": str(args.data), "run": run, "pairs": len(frame), "oracle_good": float(good.mean()),
              "thresholds": PRESETS[args.thresholds].to_dict(), "pairs_per_second": pps, "threads": args.threads,
              "yield": rows, "auc": aucs, "filters": reports, "per_kind": per_kind,
              "full_profile": full}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
