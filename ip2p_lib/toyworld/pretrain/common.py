"""What every pretraining script shares: seeding, per-step draws, the loop, model cards.

The toy models train through the project's one loop, `ip2p_lib.infra.trainloop.TrainLoop`
(accelerate's checkpoints, diffusers' `EMAModel`), as InstructPix2Pix does; each model adds
only `step_fn(step) -> loss`. Resuming is exact by construction: the batch and the noise of
step `s` are drawn from generators seeded by `(seed, s)` (`step_rng`), so a run killed at any
moment and restarted from its last `checkpoint-<step>` folder computes what the uninterrupted
run computes (tests/test_pretrain_resume.py kills one with SIGKILL).

This module imports torch only inside its functions, so the command line can refuse a run
folder of the old loop (`check_run_dir`) before torch loads.
"""

from __future__ import annotations

import json
import os
import platform
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ip2p_lib.infra.errors import UserError

if TYPE_CHECKING:
    import torch

    from ip2p_lib.infra.trainloop import RunState, TrainLoop

OLD_CHECKPOINT = "checkpoint.pt"  # the single file of the loop before TrainLoop


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed Python, NumPy and torch; optionally fix torch's CPU thread count."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def step_rng(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """Generators for step `step` alone: the same batch and noise whenever this step runs.

    (The toy models' draws since they were first trained; `infra.trainloop.step_generator` is the
    same idea with the micro-batch and the process in the seed as well.)"""
    import torch

    rng = np.random.default_rng([seed, step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen


def check_run_dir(run_dir: Path, need_checkpoint: bool = False) -> None:
    """Refuse a run folder this loop cannot continue: one holding the old loop's single
    `checkpoint.pt`, or (with `need_checkpoint`) one with no checkpoint at all."""
    run_dir = Path(run_dir)
    if (run_dir / OLD_CHECKPOINT).exists():
        raise UserError(f"{run_dir / OLD_CHECKPOINT} was written by the old pretraining loop, which this version "
                        "cannot resume; use a new --run-dir (or delete that folder to start afresh)")
    if need_checkpoint:
        from ip2p_lib.infra.trainloop import checkpoints

        if not checkpoints(run_dir):
            raise UserError(f"no checkpoint in {run_dir}; start the run with `ip2p toy pretrain sd` first")


def make_loop(model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule: Any, steps: int,
              run_dir: Path, config: dict[str, Any], ema: Any = None, clip_norm: float | None = 1.0,
              checkpoint_every_s: float = 180.0, desc: str = "train", progress: bool = True) -> TrainLoop:
    """The project's `TrainLoop` for one toy model on the CPU, its `config` checked against the run's.

    The step functions build their batches on the CPU, so the accelerator is a CPU one. A later
    call may change `config["steps"]` (the warm-up/cosine schedule then stretches from the
    current step on); any other change is refused (`infra.trainloop.check_config`)."""
    from accelerate import Accelerator

    from ip2p_lib.infra.trainloop import LoopSettings, TrainLoop, check_config

    check_run_dir(run_dir)
    check_config(run_dir, config)
    settings = LoopSettings(steps=steps, batch=config.get("batch_size", 1), clip_norm=clip_norm,
                            checkpoint_every_s=checkpoint_every_s, progress=progress, desc=desc)
    return TrainLoop(Accelerator(cpu=True), model, optimizer, run_dir, settings, schedule=schedule, ema=ema)


def train(step_fn: Callable[[int], torch.Tensor], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
          schedule: Any, steps: int, run_dir: Path, config: dict[str, Any], **options: Any) -> RunState:
    """Run `step_fn(step) -> loss` from the last checkpoint up to `steps`, resumably
    (`options`: those of `make_loop`). Returns the run's `RunState` (step, wall time, losses)."""
    loop = make_loop(model, optimizer, schedule, steps, Path(run_dir), config, **options)
    return loop.run(lambda step, micro: step_fn(step))


def machine() -> str:
    """A one-line description of where a run happened (for model cards)."""
    import torch

    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def write_card(folder: Path, title: str, sections: dict[str, Any]) -> Path:
    """A README.md model card: a title, then one section per key (dicts become tables)."""
    lines = [f"# {title}", ""]
    for name, body in sections.items():
        lines += [f"## {name}", ""]
        if isinstance(body, dict):
            lines += ["| key | value |", "|---|---|"]
            lines += [f"| {k} | {json.dumps(v) if not isinstance(v, str) else v} |" for k, v in body.items()]
        else:
            lines.append(str(body))
        lines.append("")
    path = Path(folder) / "README.md"
    path.write_text("\n".join(lines))
    return path


def loss_summary(losses: list[float], window: int = 50) -> dict[str, float]:
    """First and last windowed mean loss, for cards and logs."""
    if not losses:
        return {}
    return {"first": float(np.mean(losses[:window])), "last": float(np.mean(losses[-window:]))}
