"""`ip2p toy pretrain {clip,vae,sd,lm,all}`: train the miniature world's stand-ins.

Each command is resumable: it keeps `checkpoint-<step>` folders in `--run-dir` (default
`runs/toy_pretrain/<model>/`) and running the same command again continues from the last.
With `--out` (default: the committed folder under `data/toy/models/`) the finished model is
exported there with its model card.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.models import TOY_MODELS, toy_model_dir
from ip2p_lib.infra.paths import repo_root
from ip2p_lib.toyworld.pretrain.common import check_run_dir

MODELS = ("vae", "clip", "lm", "sd")
INIT_FROM = ("clip", "sd")  # the models that can continue from an exported one (`--init-from`)


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
    pre = toy_sub.add_parser("pretrain", help="train toy CLIP, toy SD (VAE, UNet) and the toy LM",
                             description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pre.add_argument("model", choices=(*MODELS, "all"), help="which model; `all` runs vae, clip, lm, sd in order")
    pre.add_argument("--run-dir", type=Path, default=None,
                     help="checkpoint folder (default runs/toy_pretrain/<model>; with `all`, one subfolder a model)")
    pre.add_argument("--out", type=Path, default=None,
                     help="export folder (default the committed one under data/toy/models/; `all` always uses those)")
    pre.add_argument("--steps", type=int, default=None,
                     help="training steps, at least 1 (default: the committed model's)")
    pre.add_argument("--lr", type=float, default=None, help="peak learning rate, > 0 (default: the committed model's)")
    pre.add_argument("--init-from", type=Path, default=None,
                     help="clip and sd: continue from this exported model's weights instead of a random "
                          "initialisation (default: none)")
    pre.add_argument("--set", action="append", default=None, metavar="FIELD=VALUE",
                     help="override one field of the model's training config, e.g. --set min_snr_gamma=0; repeatable "
                          "(default: none; the fields are the config table of the model card)")
    pre.add_argument("--threads", type=int, default=2, help="torch CPU threads, at least 1 (default 2)")
    pre.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    pre.add_argument("--no-export", action="store_true",
                     help="train and evaluate only (default: export to --out with a model card)")
    pre.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")
    pre.add_argument("--eval-only", action="store_true",
                     help="sd only: export and judge the EMA weights of the checkpoint in --run-dir, without training "
                          "(an interim model while a run is unfinished; default: train)")
    pre.set_defaults(func=run)


def _check(args: argparse.Namespace, models: tuple[str, ...]) -> list[tuple[str, Path, Path | None]]:
    """Every check a user can fail, before torch loads; returns (model, run folder, export folder)."""
    if args.eval_only and models != ("sd",):
        raise UserError("--eval-only is for `ip2p toy pretrain sd` (the other models finish within minutes)")
    if args.steps is not None:
        checks.number(args.steps, "--steps", int, minimum=1)
    if args.lr is not None:
        checks.number(args.lr, "--lr", above=0)
    checks.number(args.threads, "--threads", int, minimum=1)
    checks.seed(args.seed)
    if args.init_from is not None:
        for model in models:
            if model not in INIT_FROM:
                raise UserError(f"--init-from is for {' and '.join(INIT_FROM)}, not {model}")
            checks.model_folder(args.init_from, "--init-from", TOY_MODELS[model].marker, f"toy {model}", hub=False)
    plan = []
    for model in models:
        run_dir = args.run_dir if (args.run_dir and len(models) == 1) else None
        run_dir = run_dir or (args.run_dir / model if args.run_dir else default_run_dir(model))
        out = None if args.no_export else (args.out if (args.out and len(models) == 1) else default_out(model))
        if not args.eval_only:
            checks.output_folder(run_dir, "--run-dir")
        check_run_dir(Path(run_dir), need_checkpoint=args.eval_only)
        if out is not None:
            checks.output_folder(out, "--out")
        plan.append((model, Path(run_dir), out))
    if "sd" in models:  # toy SD trains on the frozen toy VAE and toy CLIP: present, or made first
        for part in ("vae", "clip"):
            if part not in models or args.no_export:
                toy_model_dir(part)  # a UserError naming the command that makes it
    return plan


def apply_override(cfg: Any, assignment: str) -> None:
    """Set one config field from `FIELD=VALUE`, converted to the type of the field's default."""
    import dataclasses

    field, sep, text = assignment.partition("=")
    names = [f.name for f in dataclasses.fields(cfg)]
    if not sep or field not in names:
        raise UserError(f"--set {assignment!r}: expected FIELD=VALUE with FIELD one of {', '.join(names)}")
    current = getattr(cfg, field)
    try:
        if isinstance(current, bool):
            if text.lower() not in ("true", "false", "1", "0"):
                raise ValueError(text)
            value: Any = text.lower() in ("true", "1")
        elif isinstance(current, (tuple, list)):
            value = tuple(type(current[0])(x) for x in text.split(","))
        elif current is None:
            value = None if text.lower() == "none" else text
        else:
            value = type(current)(text)
    except ValueError:
        raise UserError(f"--set {field}={text}: not a valid {type(current).__name__} (the default is {current!r})") from None
    setattr(cfg, field, value)


def run(args: argparse.Namespace) -> int:
    """Check everything, then run each model's `main` in dependency order (sd needs vae and clip)."""
    import importlib

    models = MODELS if args.model == "all" else (args.model,)
    for model, run_dir, out in _check(args, models):
        module = importlib.import_module(f"ip2p_lib.toyworld.pretrain.{model}")
        cfg = module.default_config()
        cfg.seed = args.seed
        if args.steps is not None:
            cfg.steps = args.steps
        if args.lr is not None:
            cfg.lr = args.lr
        if args.init_from is not None:
            cfg.init_from = str(Path(args.init_from).resolve())
        for assignment in args.set or []:
            apply_override(cfg, assignment)
        if args.eval_only:
            from ip2p_lib.toyworld.pretrain.sd import evaluate_checkpoint

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
