"""How well do InstructPix2Pix models edit held-out scenes? The oracle's verdicts, with baselines.

Draws N held-out cases (`ip2p_lib.training.evaluate.heldout_cases`: scenes no caption of
--exclude-data describes, held-out instruction wordings, kinds in turn), runs every model at every
--guidance pair and the baselines (no edit, the oracle target, SDEdit at each --sdedit strength
with the toy SD), and writes every report as JSON and prints a markdown table and wall times.

    .venv/bin/python benchmarks/ip2p_quality.py --models toy=runs/ip2p/model --n 500 \\
        --sdedit 0.3,0.5,0.7,0.9 --out figures/toy/ip2p_quality.json
    .venv/bin/python benchmarks/ip2p_quality.py --n 100 --sdedit 0.5      # baselines only
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

DEFAULT_EXCLUDE = "data/generated/toy/train"


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=[], metavar="NAME=FOLDER",
                        help="InstructPix2Pix folders to evaluate, each with a name for the table; a bare UNet "
                        "folder (a training snapshot, `ip2p train --snapshot-every`) takes the other parts from --parts")
    parser.add_argument("--parts", default="data/toy/models/sd",
                        help="where a bare UNet's VAE, text encoder, tokenizer and scheduler come from")
    parser.add_argument("--n", type=int, default=500, help="held-out cases (n / 5 of each kind)")
    parser.add_argument("--seed", type=int, default=0, help="draws the cases; case i is edited with seed + i")
    parser.add_argument("--exclude-data", default=DEFAULT_EXCLUDE,
                        help="dataset folder whose captions' scenes are left out ('none': exclude nothing)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps (SDEdit runs strength x steps of them)")
    parser.add_argument("--guidance", nargs="*", default=["7.5,1.5"], metavar="S_T,S_I",
                        help="text and image guidance pairs for the models")
    parser.add_argument("--sdedit", type=floats, default=[], metavar="S1,S2,...",
                        help="SDEdit strengths (e.g. 0.3,0.5,0.7,0.9); none by default")
    parser.add_argument("--sdedit-guidance", type=float, default=7.5, help="SDEdit's classifier-free guidance")
    parser.add_argument("--profile", default="toy", help="which Stable Diffusion SDEdit uses")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--per-case", action="store_true", help="also write each case's verdicts")
    parser.add_argument("--out", default="figures/toy/ip2p_quality.json")
    parser.add_argument("--card", metavar="NAME", help="write the table into the model card of --models NAME "
                        "(its README.md, from its training.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from ip2p_lib.editor import load_editor
    from ip2p_lib.infra.models import load_sd
    from ip2p_lib.results.sdedit import sdedit
    from ip2p_lib.training.evaluate import (
        evaluate_edits, heldout_cases, markdown_table, no_edit, oracle_target, training_captions,
    )

    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    models = dict(m.split("=", 1) for m in args.models)
    guidance = [tuple(floats(g)) for g in args.guidance]
    start = time.perf_counter()

    exclude = set() if args.exclude_data == "none" else training_captions(args.exclude_data)
    cases = heldout_cases(args.n, seed=args.seed, exclude_captions=exclude)
    print(f"{len(cases)} held-out cases (seed {args.seed}); {len(exclude)} training captions excluded")

    reports = [no_edit(cases), oracle_target(cases)]
    for name, folder in models.items():
        editor = load_editor(folder, args.parts, args.device)
        for s_T, s_I in guidance:
            label = name if len(guidance) == 1 else f"{name} s_T={s_T:g} s_I={s_I:g}"
            reports.append(evaluate_edits(editor, cases, s_T=s_T, s_I=s_I, steps=args.steps, seed=args.seed,
                                          batch_size=args.batch_size, name=label, settings={"model": folder},
                                          progress=True))
            print(f"{label}: {reports[-1].edit_seconds / len(cases):.3f} s per edit")
    if args.sdedit:
        pipe = load_sd(args.profile).to(args.device)
        for strength in args.sdedit:
            reports.append(sdedit(pipe, cases, strength, steps=args.steps, guidance_scale=args.sdedit_guidance,
                                  seed=args.seed, batch_size=args.batch_size, progress=True))
            print(f"{reports[-1].name}: {reports[-1].edit_seconds / len(cases):.3f} s per edit")
    wall = time.perf_counter() - start

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"n": len(cases), "seed": args.seed, "exclude_data": args.exclude_data, "steps": args.steps,
            "threads": args.threads, "device": args.device, "wall_s": wall,
            "reports": [r.to_dict(per_case=args.per_case) for r in reports]}
    out.write_text(json.dumps(data, indent=1) + "\n")
    print()
    print(markdown_table(reports))
    print(f"\nwall time {wall:.1f} s; wrote {out}")
    if args.card:
        from ip2p_lib.training.trainer import write_model_card

        command = "benchmarks/ip2p_quality.py " + " ".join(sys.argv[1:])
        quality = (f"The oracle on {len(cases)} held-out cases (scenes no training caption describes, held-out "
                   f"instruction wordings), {args.steps} Euler ancestral steps, seed {args.seed}; measured by\n"
                   f"`{command}` ({wall:.0f} s, {args.threads} thread(s)).\n\n" + markdown_table(reports) + "\n")
        print("card:", write_model_card(models[args.card], quality))


if __name__ == "__main__":
    main()
