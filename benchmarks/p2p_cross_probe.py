"""Probe: Prompt-to-Prompt's cross-attention edits against the authors' self-attention sharing, on toy SD.

The same caption pairs (recolour / reshape / background / resize, balanced, with a position phrase;
built by `p2p_pairs_probe.caption_pairs`) are sampled by the paired sampler (`generate_pairs`: same
start latent and ancestral noise per pair) with each attention-control variant and fraction p, and
the oracle says whether image 1 made the asked change (`changed`) and kept the rest (`preserved`);
`success` is both. "none" ignores p, so it runs once.

    .venv/bin/python benchmarks/p2p_cross_probe.py --out figures/toy/p2p_cross_probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from p2p_pairs_probe import caption_pairs  # the sibling probe (this folder is on sys.path when run as a script)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=48, help="caption pairs (default 48, 12 per edit kind)")
    ap.add_argument("--steps", type=int, default=20, help="Euler ancestral steps (default 20)")
    ap.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    ap.add_argument("--ps", default="0.3,0.6,0.9", help="attention fractions p (default 0.3,0.6,0.9)")
    ap.add_argument("--variants", default="none,self,replace,refine,both", help="sampler variants to compare")
    ap.add_argument("--batch-size", type=int, default=48, help="pairs per UNet call (default 48)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ip2p_lib.infra.models import load_sd
    from ip2p_lib.p2p import PairSpec, generate_pairs
    from ip2p_lib.p2p.evaluate import oracle_verdicts

    pipe = load_sd("toy")
    pipe.set_progress_bar_config(disable=True)
    pairs = caption_pairs(args.pairs, with_position=True, seed=args.seed)
    c0, c1 = [q[2] for q in pairs], [q[3] for q in pairs]
    seeds = [args.seed * 100_000 + i for i in range(len(pairs))]
    rows: list[dict[str, Any]] = []
    start = time.time()
    for variant in args.variants.split(","):
        for p in [float(x) for x in args.ps.split(",")]:
            if variant == "none" and rows and rows[-1]["variant"] == "none":   # p does nothing: copy the row
                rows.append(rows[-1] | {"p": p})
                continue
            t0 = time.time()
            specs = [PairSpec(a, b, s, args.cfg, p, args.steps, variant) for a, b, s in zip(c0, c1, seeds)]
            images = generate_pairs(pipe, specs, batch_size=args.batch_size)
            v = oracle_verdicts(images.image_0, images.image_1, c0, c1)
            row = {"variant": variant, "p": p, "changed": float(v["changed"].mean()),
                   "preserved": float(v["preserved"].mean()), "success": float(v["success"].mean()),
                   "faithful_0": float(v["faithful_0"].mean())}
            for kind in ("recolor", "reshape", "background", "resize"):
                row[f"{kind}_success"] = float(v["success"][v["kind"] == kind].mean())
            rows.append(row)
            print({k: round(x, 3) if isinstance(x, float) else x for k, x in row.items()}, f"{time.time() - t0:.0f} s",
                  flush=True)
    seconds = time.time() - start
    print(f"\nsuccess (changed and preserved), {len(pairs)} pairs, {args.steps} steps, cfg {args.cfg}, {seconds:.0f} s")
    ps = [float(x) for x in args.ps.split(",")]
    print("variant".ljust(14) + "".join(f"p={p:<8}" for p in ps))
    for variant in args.variants.split(","):
        print(variant.ljust(14) + "".join(f"{r['success']:<10.3f}" for r in rows if r["variant"] == variant))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        settings = vars(args) | {"out": str(args.out), "seconds": round(seconds)}
        args.out.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
