"""`ip2p train`: train InstructPix2Pix on an edit dataset (§3.2), resumably.

    ip2p train --data data/generated/toy/train --init data/toy/models/sd --out runs/ip2p --recipe toy
    ip2p train --data DIR --init stable-diffusion-v1-5/stable-diffusion-v1-5 --out OUT --recipe paper
    ip2p train --data DIR --init timbrooks/instruct-pix2pix --out OUT --steps 2000   (fine-tune the release)
    accelerate launch --num_processes 2 -m ip2p_lib.cli train ...                (several processes)

`--init` is Stable Diffusion (its UNet is widened to 8 input channels) or an InstructPix2Pix
model (fine-tuned as it is). Kill it at any moment and run the same command again: it goes on
from the last checkpoint (in `--run-dir`, default OUT.run) and ends with the same weights.
Options given on the command line override the recipe's numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError

# option name -> (TrainConfig field, type, help)
NUMBERS = {
    "steps": (int, 1, "optimizer steps"),
    "batch_size": (int, 1, "examples per device per micro-batch"),
    "accumulation": (int, 1, "micro-batches per optimizer step (gradient accumulation)"),
    "lr": (float, 0.0, "AdamW learning rate, constant"),
    "resolution": (int, 8, "training side in pixels (default: the recipe's, else the init's native size)"),
    "ema_decay": (float, 0.0, "EMA decay"),
}


def _config(args: argparse.Namespace) -> "object":
    from ip2p_lib.training.recipes import RECIPES

    values = dict(RECIPES[args.recipe])
    for name, (kind, minimum, _) in NUMBERS.items():
        given = getattr(args, name)
        if given is not None:
            values[name] = checks.number(given, "--" + name.replace("_", "-"), kind, minimum=minimum)
    if args.flip is not None:
        values["flip"] = args.flip
    if args.clip_norm is not None:
        values["clip_norm"] = checks.number(args.clip_norm, "--clip-norm", float, minimum=0.0) or None
    if args.ema_warmup is not None:
        values["ema_warmup"] = args.ema_warmup
    if args.threads:
        checks.number(args.threads, "--threads", int, minimum=1)
    checks.number(args.checkpoint_every, "--checkpoint-every", float, minimum=0.0)
    if args.snapshot_every is not None:
        checks.number(args.snapshot_every, "--snapshot-every", int, minimum=1)
    from ip2p_lib.training.trainer import TrainConfig

    return TrainConfig(data=str(args.data), init=str(args.init), mixed_precision=args.mixed_precision,
                       seed=checks.seed(args.seed), cache=args.cache, **values)


def _command(args: argparse.Namespace) -> str:
    """The `ip2p train` command that reproduces this run (for the model card)."""
    import shlex

    words = ["ip2p", "train", "--data", str(args.data), "--init", str(args.init), "--out", str(args.out),
             "--recipe", args.recipe]
    for name in [*NUMBERS, "clip_norm", "ema_warmup", "run_dir", "snapshot_every"]:
        value = getattr(args, name)
        if value is not None:
            words += ["--" + name.replace("_", "-"), str(value)]
    if args.flip is not None:
        words.append("--flip" if args.flip else "--no-flip")
    if args.save_precision != "fp32":
        words += ["--save-precision", args.save_precision]
    if args.mixed_precision != "no":
        words += ["--mixed-precision", args.mixed_precision]
    if str(args.seed) != "0":
        words += ["--seed", str(args.seed)]
    if args.threads:  # CPU float sums depend on the thread count: part of what reproduces the weights
        words += ["--threads", str(args.threads)]
    return " ".join(shlex.quote(w) for w in words)


def _train(args: argparse.Namespace) -> int:
    config = _config(args)  # every number checked before torch loads
    if not Path(args.data).is_dir():
        raise UserError(f"--data: no dataset folder at {args.data}; make one with `ip2p pairs generate` and "
                        "`ip2p pairs filter`")
    checks.model_folder(args.init, "--init", "model_index.json", "Stable Diffusion or InstructPix2Pix model")
    checks.output_folder(args.out, "--out")
    if args.run_dir is not None:
        checks.output_folder(args.run_dir, "--run-dir")
    import datasets
    import diffusers
    import torch
    import transformers

    from ip2p_lib.training.trainer import train

    diffusers.utils.logging.disable_progress_bar()  # one progress bar: the training steps
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()

    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(config, args.out, run_dir=args.run_dir, progress=not args.quiet,
                   checkpoint_every_s=args.checkpoint_every, snapshot_every=args.snapshot_every, command=_command(args),
                   save_precision=args.save_precision)
    if result is not None:
        print(f"saved {result.out}: {result.steps} steps, effective batch {result.effective_batch}, "
              f"{result.epochs} epochs of {result.examples} examples, loss {result.loss_first:.4f} -> "
              f"{result.loss_last:.4f}, {result.wall_s:.0f} s training")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ip2p train`."""
    from ip2p_lib.training.recipes import CACHE_MODES, EMA_WARMUPS

    p = sub.add_parser("train", help="§3.2: train InstructPix2Pix on an edit dataset (resumable)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="training set: our shards or the authors' layout (required)")
    p.add_argument("--init", required=True, help="Stable Diffusion or InstructPix2Pix folder or hub id (required)")
    p.add_argument("--out", type=Path, required=True, help="where to save the model (diffusers folder) (required)")
    p.add_argument("--run-dir", type=Path, help="checkpoints and log.jsonl (default OUT.run)")
    p.add_argument("--recipe", choices=("toy", "paper"), default="toy",
                   help="toy: the miniature world's numbers; paper: lr 1e-4, batch 32 x 4 accumulation (x 8 GPUs "
                   "in the paper), EMA 0.9999, flip, 256 px (default toy)")
    for name, (_, _, text) in NUMBERS.items():
        p.add_argument("--" + name.replace("_", "-"), help=f"{text} (default: the recipe's)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flip of each pair (default: the recipe's; toy: off, its instructions say "
                   "left and right)")
    p.add_argument("--clip-norm", help="clip the gradient norm to this, 0 for none (default: the recipe's)")
    p.add_argument("--ema-warmup", choices=EMA_WARMUPS, help="EMA decay warm-up (default authors: (1+n)/(10+n))")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no",
                   help="accelerate's mixed precision (default no; the authors train in fp32)")
    p.add_argument("--cache", choices=CACHE_MODES, default="auto",
                   help="encode the training set once when no flip or crop changes it (default auto)")
    p.add_argument("--save-precision", choices=("fp32", "fp16"), default="fp32",
                   help="weights of the saved model; fp16 halves the folder (default fp32)")
    p.add_argument("--seed", default=0, help="run seed: examples, noise and dropout of every step (default 0)")
    p.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints (default %(default)s)")
    p.add_argument("--snapshot-every", type=int, help="also save the EMA UNet every N steps, for sample grids (default: never)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: a bar with loss and samples/s)")
    p.set_defaults(func=_train)
