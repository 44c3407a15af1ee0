"""Pair generators compared by the oracle: every attention-control variant and fraction p on the
same caption pairs, seeds and noise (`ip2p_lib.p2p.sweep`), per edit kind, with toy CLIP's scores.

Caption pairs are held-out scenes with one edit each (recolour / reshape / background / resize /
move in turn); `--position` sets the share of captions naming the object's region (the same phrase
in both captions). "none" does not depend on p, so it runs once.

    .venv/bin/python benchmarks/p2p_variants.py --pairs 60 --out figures/toy/p2p_variants.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=60, help="caption pairs (default 60: 12 per edit kind)")
    ap.add_argument("--kinds", default="recolor,reshape,background,resize,move", help="edit kinds, in turn")
    ap.add_argument("--position", type=float, default=0.5, help="share of captions with a position phrase (default 0.5)")
    ap.add_argument("--steps", type=int, default=20, help="Euler ancestral steps (default 20)")
    ap.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    ap.add_argument("--ps", default="0.1,0.3,0.6,0.9,1.0", help="attention fractions p (default 0.1,0.3,0.6,0.9,1.0)")
    ap.add_argument("--variants", default="none,self,refine,both",
                    help="variants (default none,self,refine,both; replace needs captions with equal word counts, which moves break)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ap.add_argument("--out", type=Path, help="write the rows and summaries as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ip2p_lib.filtering import ClipScorer
    from ip2p_lib.infra.models import load_sd
    from ip2p_lib.p2p.sweep import summary, sweep, toy_caption_pairs

    pipe = load_sd("toy")
    pipe.set_progress_bar_config(disable=True)
    pairs = toy_caption_pairs(args.pairs, args.seed, tuple(args.kinds.split(",")), p_position=args.position)
    ps = [float(x) for x in args.ps.split(",")]
    settings = [(v, 0.0 if v == "none" else p) for v in args.variants.split(",") for p in (ps[:1] if v == "none" else ps)]
    t0 = time.perf_counter()
    frame, _ = sweep(pipe, ClipScorer.from_profile("toy"), pairs, settings, args.steps, args.cfg, args.seed)
    seconds = time.perf_counter() - t0
    overall = summary(frame)
    per_kind = frame.pivot_table(index=["variant", "p"], columns="kind", values="success").round(3)
    print(overall.to_string())
    print(per_kind.to_string())
    print(f"{len(frame)} pairs in {seconds:.0f} s ({len(frame) / seconds:.2f} pairs/s)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                  "seconds": seconds, "summary": overall.reset_index().to_dict("records"),
                  "success_per_kind": per_kind.reset_index().to_dict("records"), "rows": frame.to_dict("records")}
        args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
