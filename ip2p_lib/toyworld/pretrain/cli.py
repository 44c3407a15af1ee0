"""`ip2p toy pretrain {clip,vae,sd,lm,all}`: train the miniature world's stand-ins.

Each command is resumable: it keeps a checkpoint in `--run-dir` (default
`runs/toy_pretrain/<model>/`) and running the same command again continues from it.
With `--out` (default: the committed folder under `data/toy/models/`) the finished model is
exported there with its model card.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ip2p_lib.infra.models import toy_model_dir
from ip2p_lib.infra.paths import repo_root

MODELS = ("vae", "clip", "lm", "sd")


def default_run_dir(model: str) -> Path:
    """`runs/toy_pretrain/<model>/`: where a training run keeps its checkpoint."""
    return repo_root() / "runs" / "toy_pretrain" / model


def default_out(model: str) -> Path:
    """The committed folder of `model` (see `ip2p_lib.infra.models.TOY_MODELS`)."""
    return toy_model_dir(model, check=False)


def register(subparsers: Any) -> None:
    """Add `ip2p toy pretrain ...` (the `toy` group is created here if no one else made it)."""
    toy = subparsers.add_parser("toy", help="the miniature world's pretrained stand-ins")
    toy_sub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")
    toy_sub.required = True
    pre = toy_sub.add_parser("pretrain", help="train toy CLIP, toy SD (VAE, UNet) and the toy LM")
    pre.add_argument("model", choices=(*MODELS, "all"), help="which model; `all` runs vae, clip, lm, sd in order")
    pre.add_argument("--run-dir", type=Path, default=None, help="checkpoint folder (default runs/toy_pretrain/<model>)")
    pre.add_argument("--out", type=Path, default=None, help="export folder (default data/toy/models/...)")
    pre.add_argument("--steps", type=int, default=None, help="training steps (default: the committed model's)")
    pre.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the committed model's)")
    pre.add_argument("--init-from", type=Path, default=None,
                     help="clip and sd: continue from this exported model's weights instead of a random "
                          "initialisation (default: none)")
    pre.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--no-export", action="store_true", help="train and evaluate only")
    pre.add_argument("--quiet", action="store_true", help="no progress bars")
    pre.add_argument("--eval-only", action="store_true",
                     help="sd only: export and judge the EMA weights of the checkpoint in --run-dir, without training "
                          "(an interim model while a run is unfinished)")
    pre.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to each model's `main` in dependency order (sd needs vae and clip)."""
    import importlib

    from ip2p_lib.infra.errors import UserError

    models = MODELS if args.model == "all" else (args.model,)
    if args.eval_only and models != ("sd",):
        raise UserError("--eval-only is for `ip2p toy pretrain sd` (the other models finish within minutes)")
    for model in models:
        module = importlib.import_module(f"ip2p_lib.toyworld.pretrain.{model}")
        cfg = module.default_config()
        cfg.seed = args.seed
        if args.steps is not None:
            cfg.steps = args.steps
        if args.lr is not None:
            cfg.lr = args.lr
        if args.init_from is not None:
            if not hasattr(cfg, "init_from"):
                raise UserError(f"--init-from is for clip and sd, not {model}")
            cfg.init_from = str(Path(args.init_from).resolve())
        run_dir = args.run_dir if (args.run_dir and len(models) == 1) else None
        run_dir = run_dir or (args.run_dir / model if args.run_dir else default_run_dir(model))
        out = None if args.no_export else (args.out if (args.out and len(models) == 1) else default_out(model))
        if args.eval_only:
            from ip2p_lib.toyworld.pretrain.sd import evaluate_checkpoint

            if not (Path(run_dir) / "checkpoint.pt").exists():
                raise UserError(f"no checkpoint in {run_dir}; start the run with `ip2p toy pretrain sd` first")
            evaluate_checkpoint(cfg, run_dir, out, threads=args.threads)
            continue
        module.main(run_dir=run_dir, out=out, cfg=cfg, threads=args.threads, progress=not args.quiet)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run as `python -m ip2p_lib.toyworld.pretrain.cli vae ...` (same options as `ip2p toy pretrain`)."""
    parser = argparse.ArgumentParser(prog="ip2p")
    register(parser.add_subparsers(dest="command"))
    return run(parser.parse_args(["toy", "pretrain", *(argv or __import__("sys").argv[1:])]))


if __name__ == "__main__":
    raise SystemExit(main())
