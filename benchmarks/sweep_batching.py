"""A guidance sweep batched over settings against the same sweep one setting at a time.

`ip2p_lib.results.sweep.ip2p_outputs` edits every (setting, case) row of a sweep in batches of
`--rows` images, each row with its own s_T and s_I; the reference edits each setting's cases as
one batch (what `evaluate_edits` does, one call per setting), and a second reference one image
at a time. Same cases, same seeds, same outputs (checked); the committed toy InstructPix2Pix.

    .venv/bin/python benchmarks/sweep_batching.py --threads 1
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=16, help="held-out cases per setting")
    parser.add_argument("--settings", type=int, default=4, help="s_I values at s_T 7.5")
    parser.add_argument("--rows", type=int, default=64, help="images per batch in the batched sweep")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from ip2p_lib.results.common import load_profile_editor
    from ip2p_lib.results.sweep import ip2p_outputs, ip2p_settings
    from ip2p_lib.training.evaluate import heldout_cases

    editor = load_profile_editor("toy")
    cases = heldout_cases(args.cases, seed=0)
    settings = ip2p_settings(7.5, list(np.linspace(1.0, 2.2, args.settings)))
    runs = {"batched sweep": args.rows, "one batch per setting": args.cases, "one image at a time": 1}
    times, outputs = {}, {}
    for name, rows in runs.items():
        start = time.perf_counter()
        if rows == args.cases:  # per setting: the cases of one setting together
            outputs[name] = np.concatenate([ip2p_outputs(editor, cases, [s], steps=args.steps, rows=rows)
                                            for s in settings])
        else:
            outputs[name] = ip2p_outputs(editor, cases, settings, steps=args.steps, rows=rows)
        times[name] = time.perf_counter() - start
    edits = len(settings) * len(cases)
    reference = times["one batch per setting"]
    print(f"{len(settings)} settings x {len(cases)} cases, {args.steps} steps, {args.threads} thread(s)")
    print("| run | s per edit | speed against one batch per setting |\n|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds / edits:.3f} | {reference / seconds:.2f}x |")
    for name in runs:
        diff = np.abs(outputs[name].astype(int) - outputs["batched sweep"].astype(int)).max()
        print(f"{name}: largest pixel difference from the batched sweep {diff} (of 255)")


if __name__ == "__main__":
    main()
