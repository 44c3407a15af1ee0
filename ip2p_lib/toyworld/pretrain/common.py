"""What every pretraining script shares: seeding, a resumable training loop, model cards.

Resuming is exact by construction: the batch and the noise of step `s` are drawn from
generators seeded by `(seed, s)` (see `step_rng`), so a run killed after its last
checkpoint and restarted reproduces the uninterrupted run. The checkpoint holds the model,
the optimizer, the learning-rate schedule, the EMA copy, the step and the loss history.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ip2p_lib.infra.errors import UserError

CHECKPOINT = "checkpoint.pt"


def seed_everything(seed: int, threads: int | None = None) -> None:
    """Seed Python, NumPy and torch; optionally fix torch's CPU thread count."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if threads:
        torch.set_num_threads(threads)


def step_rng(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    """Generators for step `step` alone: the same batch and noise whenever this step runs."""
    rng = np.random.default_rng([seed, step])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    return rng, gen


def warmup_cosine(warmup: int, total: int, floor: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up, then cosine decay to `floor`."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


class EMA:
    """Exponential moving average of a model's parameters (decay ramps up as in diffusers)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "shadow": self.shadow, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.shadow, self.updates = state["decay"], state["shadow"], state["updates"]


@dataclass
class RunState:
    """Progress of one training run: what the checkpoint stores besides the tensors."""

    step: int = 0
    elapsed_s: float = 0.0
    losses: list[float] = field(default_factory=list)


def save_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: Any, ema: EMA | None, state: RunState, config: dict[str, Any]) -> None:
    """Write everything needed to resume, atomically (a kill mid-write keeps the old file)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    blob = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(), "ema": ema.state_dict() if ema else None,
        "state": state.__dict__, "config": config,
        "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
    }
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)


def load_checkpoint(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule: Any, ema: EMA | None, config: dict[str, Any]) -> RunState:
    """Restore a run from `run_dir` if it has a checkpoint; a fresh `RunState` otherwise."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return RunState()
    blob = torch.load(path, map_location="cpu", weights_only=False)
    changed = sorted(k for k in set(config) | set(blob["config"]) if config.get(k) != blob["config"].get(k))
    if changed == ["steps"]:  # lengthening or shortening a run is allowed: the schedule stretches
        print(f"resuming {run_dir} at step {blob['state']['step']} with steps {blob['config']['steps']} -> {config['steps']}")
    elif changed:
        raise UserError(f"{run_dir} holds a run with a different configuration ({', '.join(changed)}); "
                        "use another --run-dir or delete that folder to start afresh")
    model.load_state_dict(blob["model"])
    optimizer.load_state_dict(blob["optimizer"])
    schedule.load_state_dict(blob["schedule"])
    if ema is not None and blob["ema"] is not None:
        ema.load_state_dict(blob["ema"])
    torch.set_rng_state(blob["torch_rng"])
    np.random.set_state(blob["numpy_rng"])
    return RunState(**blob["state"])


def train(
    step_fn: Callable[[int], torch.Tensor],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule: Any,
    steps: int,
    run_dir: Path,
    config: dict[str, Any],
    ema: EMA | None = None,
    clip_norm: float | None = 1.0,
    checkpoint_every_s: float = 180.0,
    desc: str = "train",
    progress: bool = True,
) -> RunState:
    """Run `step_fn(step) -> loss` from the last checkpoint up to `steps`, resumably.

    Checkpoints every `checkpoint_every_s` seconds and at the end. A later call may change
    `steps` (the warm-up/cosine schedule then stretches from the current step on); any other
    change of `config` is refused, so a run never silently mixes two recipes."""
    from tqdm.auto import tqdm

    state = load_checkpoint(run_dir, model, optimizer, schedule, ema, config)
    model.train()
    last_save = time.monotonic()
    bar = tqdm(total=steps, initial=state.step, desc=desc, disable=not progress, mininterval=5)
    while state.step < steps:
        t0 = time.monotonic()
        loss = step_fn(state.step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update(model)
        state.step += 1
        state.losses.append(float(loss.detach()))
        state.elapsed_s += time.monotonic() - t0
        bar.update(1)
        if state.step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(state.losses[-50:]):.4f}")
        if time.monotonic() - last_save > checkpoint_every_s or state.step == steps:
            save_checkpoint(run_dir, model, optimizer, schedule, ema, state, config)
            last_save = time.monotonic()
    bar.close()
    if state.step == steps and not (run_dir / CHECKPOINT).exists():
        save_checkpoint(run_dir, model, optimizer, schedule, ema, state, config)
    return state


def machine() -> str:
    """A one-line description of where a run happened (for model cards)."""
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
