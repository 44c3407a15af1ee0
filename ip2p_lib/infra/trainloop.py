"""The project's one training loop: accelerate for devices and checkpoints, EMAModel for the EMA.

It lives in `infra` because it is not a step of the paper: every model this project trains
(toy VAE, CLIP, SD and LM in `toyworld.pretrain`, and InstructPix2Pix in `training.trainer`) runs through `TrainLoop.run(step_fn)`. What each model
adds is only `step_fn(step, micro) -> loss`.

The loop is built on the field's parts, not written again:

- `accelerate.Accelerator`: the device, mixed precision, several processes (DDP, gloo on CPU),
  and `save_state` / `load_state` for checkpoints (model, optimizer, and every object given
  to `register_for_checkpointing`: the learning-rate schedule, the EMA, the run's progress);
- `diffusers.training_utils.EMAModel`: the EMA of the weights, with its decay warm-up.

Resuming is exact by construction. Step `s` draws its examples and its noise from generators
seeded by (seed, s) (`step_generator`, `EpochSampler`), never from a generator that runs
along the whole run, so a run killed at any moment and started again from its last
checkpoint computes the same steps as one that never stopped: on CPU the weights agree bit
for bit (tests/test_training.py and tests/test_pretrain_resume.py kill runs with SIGKILL).

Checkpoints are folders `checkpoint-<step>` under the run folder. Each is written as
`checkpoint-<step>.tmp` and renamed when complete, so a kill while saving leaves the previous
one intact; older ones are removed after the rename.

The effective batch (what the authors' users could not read off their logs, their issue #45):

    effective batch = per-device batch x processes x gradient accumulation

(the paper: 32 x 8 GPUs x 4 = 1024). The loop logs it with the optimizer steps, the samples
seen and the epochs.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from diffusers.training_utils import EMAModel

from ip2p_lib.infra.errors import UserError

CHECKPOINT_PREFIX = "checkpoint-"
CONFIG_FILE = "train_config.json"
LOG_FILE = "log.jsonl"


# ---------------------------------------------------------------- randomness by step


def step_generator(seed: int, step: int, micro: int = 0, rank: int = 0) -> torch.Generator:
    """A CPU generator for (optimizer step, micro-batch, process) alone: the same draws whenever
    that micro-batch runs, whatever ran before it."""
    rng = np.random.default_rng([seed, step, micro, rank])
    return torch.Generator().manual_seed(int(rng.integers(2**62)))


@dataclass(frozen=True)
class EpochSampler:
    """Which examples a micro-batch trains on: epoch after epoch of fresh permutations.

    Sample number k of the run (counted over all processes and micro-batches) is position
    k mod n of permutation (seed, k // n). Micro-batch `micro` of step `step` on process
    `rank` takes the next `batch` numbers of its slot, so the processes of one step see
    disjoint examples and the run's order does not depend on where it was interrupted."""

    n: int
    batch: int
    seed: int = 0
    processes: int = 1
    accumulation: int = 1

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UserError("the training set is empty: nothing to train on")

    @property
    def effective_batch(self) -> int:
        return self.batch * self.processes * self.accumulation

    def first_sample(self, step: int, micro: int = 0, rank: int = 0) -> int:
        return ((step * self.accumulation + micro) * self.processes + rank) * self.batch

    def indices(self, step: int, micro: int = 0, rank: int = 0) -> np.ndarray:
        """The example indices of one micro-batch (length `batch`)."""
        k = self.first_sample(step, micro, rank) + np.arange(self.batch)
        epochs = k // self.n
        out = np.empty(self.batch, dtype=np.int64)
        for e in np.unique(epochs):
            perm = np.random.default_rng([self.seed, int(e)]).permutation(self.n)
            sel = epochs == e
            out[sel] = perm[k[sel] % self.n]
        return out

    def epochs_at(self, step: int) -> float:
        """Epochs completed after `step` optimizer steps."""
        return step * self.effective_batch / self.n


# ---------------------------------------------------------------- what a checkpoint holds besides tensors


@dataclass
class RunState:
    """Progress of one run: the optimizer steps done, the wall time and the loss per step.

    Registered with `Accelerator.register_for_checkpointing`, so it is saved with the weights."""

    step: int = 0
    elapsed_s: float = 0.0
    losses: list[float] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.elapsed_s, self.losses = state["step"], state["elapsed_s"], list(state["losses"])


class ScheduleState:
    """A `torch.optim.lr_scheduler` wrapped for `register_for_checkpointing`.

    (The schedule is deliberately NOT `accelerator.prepare`d: a prepared schedule steps once per
    process per call, which would make a two-process run's warm-up twice as short.)"""

    def __init__(self, schedule: Any) -> None:
        self.schedule = schedule

    def state_dict(self) -> dict[str, Any]:
        return self.schedule.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.schedule.load_state_dict(state)


class ConstantEMA(EMAModel):
    """EMAModel with the constant decay from the first update on: no warm-up at all.

    (EMAModel itself always warms up: its decay is min(decay, (1 + n) / (10 + n)), or the power
    form with use_ema_warmup, and its first update copies the weights.)"""

    def get_decay(self, optimization_step: int) -> float:
        return self.decay




def make_ema(model: torch.nn.Module, decay: float, warmup: str = "authors", power: float = 2 / 3) -> EMAModel:
    """`diffusers.training_utils.EMAModel` of `model`'s parameters.

    `warmup`: "authors" = min(decay, (1 + n) / (10 + n)) at update n (the authors' LitEma, and
    EMAModel's default); "power" = min(decay, 1 - (1 + n)^-power) (EMAModel's
    use_ema_warmup); "none" = the constant `decay` from the first update (a short run's EMA
    then stays near the initial weights: notebook 05 shows it)."""
    if warmup == "authors":
        return EMAModel(model.parameters(), decay=decay)
    if warmup == "power":
        return EMAModel(model.parameters(), decay=decay, use_ema_warmup=True, power=power)
    if warmup == "none":
        return ConstantEMA(model.parameters(), decay=decay)
    raise ValueError(f"EMA warm-up must be authors, power or none, got {warmup!r}")


def make_accelerator(mixed_precision: str = "no", **kwargs: Any) -> Any:
    """An `accelerate.Accelerator` that also spans several CPU processes.

    Without a GPU, Accelerator() in a process started by `accelerate launch --multi_gpu` /
    torchrun stays single-process (accelerate 1.x); `cpu=True` makes it use gloo (MULTI_CPU)."""
    from accelerate import Accelerator

    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available(), **kwargs)


# ---------------------------------------------------------------- checkpoints on disk


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints of `run_dir`, oldest first: (step, folder)."""
    found = []
    for p in Path(run_dir).glob(CHECKPOINT_PREFIX + "*"):
        tail = p.name[len(CHECKPOINT_PREFIX):]
        if p.is_dir() and tail.isdigit():
            found.append((int(tail), p))
    return sorted(found)


def check_config(run_dir: Path, config: dict[str, Any], may_change: tuple[str, ...] = ("steps",)) -> None:
    """Write `config` beside the run, or refuse to resume a run made with another one.

    Only the keys in `may_change` (the run's length) may differ: a run never silently mixes
    two recipes."""
    path = Path(run_dir) / CONFIG_FILE
    if path.exists():
        old = json.loads(path.read_text())
        changed = sorted(k for k in set(old) | set(config)
                         if k not in may_change and json.dumps(old.get(k)) != json.dumps(config.get(k)))
        if changed:
            detail = ", ".join(f"{k}: {old.get(k)!r} -> {config.get(k)!r}" for k in changed[:4])
            raise UserError(f"{run_dir} holds a run with another configuration ({detail}); "
                            "use another run folder, or delete it to start afresh")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True))
    os.replace(tmp, path)


# ---------------------------------------------------------------- the loop


@dataclass
class LoopSettings:
    """How the loop runs (not what it trains): length, batch bookkeeping, clipping, saving."""

    steps: int
    batch: int = 1                 # per device, per micro-batch (for the log only)
    accumulation: int = 1
    clip_norm: float | None = 1.0
    checkpoint_every_s: float = 180.0
    checkpoint_every_steps: int | None = None
    keep_checkpoints: int = 1
    log_every: int = 10
    progress: bool = True
    desc: str = "train"


class TrainLoop:
    """Run `step_fn(step, micro) -> loss` for `settings.steps` optimizer steps, resumably.

    `model`, `optimizer` are prepared by `accelerator` here; `schedule` (a torch lr scheduler,
    optional) and `ema` (an EMAModel, optional) are checkpointed with them. Call `run` again
    with more steps to continue a finished run."""

    def __init__(self, accelerator: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 run_dir: str | Path, settings: LoopSettings, schedule: Any = None, ema: Any = None) -> None:
        self.accelerator = accelerator
        self.run_dir = Path(run_dir)
        self.settings = settings
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.schedule, self.ema, self.state = schedule, ema, RunState()
        self._resumed = False
        accelerator.register_for_checkpointing(self.state)
        if schedule is not None:
            accelerator.register_for_checkpointing(ScheduleState(schedule))
        if ema is not None:
            accelerator.register_for_checkpointing(ema)

    @property
    def unwrapped(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)

    @property
    def effective_batch(self) -> int:
        return self.settings.batch * self.accelerator.num_processes * self.settings.accumulation

    # -- checkpoints

    def resume(self) -> int:
        """Load the newest complete checkpoint, if any, once per loop (a run in segments, such as the
        trainer's between snapshots, goes on from memory); return the step it reached."""
        if not self._resumed:
            found = checkpoints(self.run_dir)
            if found:
                self.accelerator.load_state(str(found[-1][1]))
            self._resumed = True
        return self.state.step

    def save(self) -> Path:
        """Write `checkpoint-<step>` atomically (tmp folder, then rename) and prune old ones."""
        acc = self.accelerator
        final = self.run_dir / f"{CHECKPOINT_PREFIX}{self.state.step}"
        tmp = self.run_dir / f"{CHECKPOINT_PREFIX}{self.state.step}.tmp"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()
        if acc.is_main_process:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for _, old in checkpoints(self.run_dir)[:-max(1, self.settings.keep_checkpoints)]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return final

    # -- logging

    def describe(self, n_examples: int | None = None) -> dict[str, Any]:
        """The numbers a log must show: optimizer steps, effective batch and how it is made."""
        out = {"optimizer_steps": self.settings.steps, "per_device_batch": self.settings.batch,
               "processes": self.accelerator.num_processes, "accumulation": self.settings.accumulation,
               "effective_batch": self.effective_batch,
               "samples": self.settings.steps * self.effective_batch}
        if n_examples:
            out["examples"] = n_examples
            out["epochs"] = round(out["samples"] / n_examples, 3)
        return out

    def _log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.run_dir / LOG_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")

    # -- the loop

    def run(self, step_fn: Callable[[int, int], torch.Tensor], n_examples: int | None = None) -> RunState:
        """Train from the last checkpoint up to `settings.steps`; checkpoint on time and at the end."""
        from tqdm.auto import tqdm

        acc, s = self.accelerator, self.settings
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.resume()
        if acc.is_main_process and s.progress:
            info = ", ".join(f"{k} {v}" for k, v in self.describe(n_examples).items())
            tqdm.write(f"{s.desc}: {info}; from step {self.state.step}")
        self.model.train()
        last_save = time.monotonic()
        bar = tqdm(total=s.steps, initial=self.state.step, desc=s.desc, mininterval=5,
                   disable=not (s.progress and acc.is_main_process))
        while self.state.step < s.steps:
            t0 = time.monotonic()
            total = torch.zeros((), device=acc.device)
            for micro in range(s.accumulation):
                # DDP averages gradients across processes only on the last micro-batch
                sync = nullcontext() if micro == s.accumulation - 1 else acc.no_sync(self.model)
                with sync:
                    loss = step_fn(self.state.step, micro)
                    acc.backward(loss / s.accumulation)
                total += loss.detach() / s.accumulation
            if s.clip_norm:
                acc.clip_grad_norm_(self.model.parameters(), s.clip_norm)
            self.optimizer.step()
            if self.schedule is not None:
                self.schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(self.unwrapped.parameters())
            mean_loss = float(acc.reduce(total, reduction="mean")) if acc.num_processes > 1 else float(total)
            self.state.step += 1
            self.state.losses.append(mean_loss)
            dt = time.monotonic() - t0
            self.state.elapsed_s += dt
            bar.update(1)
            if self.state.step % s.log_every == 0 or self.state.step == s.steps:
                recent = float(np.mean(self.state.losses[-s.log_every:]))
                bar.set_postfix(loss=f"{recent:.4f}", samples_per_s=f"{self.effective_batch / max(dt, 1e-9):.1f}")
                record = {"step": self.state.step, "loss": recent, "samples_seen": self.state.step * self.effective_batch,
                          "lr": self.optimizer.param_groups[0]["lr"], "elapsed_s": round(self.state.elapsed_s, 2)}
                if n_examples:
                    record["epoch"] = round(self.state.step * self.effective_batch / n_examples, 4)
                self._log(record)
            due_time = time.monotonic() - last_save > s.checkpoint_every_s
            due_step = bool(s.checkpoint_every_steps) and self.state.step % s.checkpoint_every_steps == 0
            if due_time or due_step or self.state.step == s.steps:
                self.save()
                last_save = time.monotonic()
        bar.close()
        if not checkpoints(self.run_dir) or checkpoints(self.run_dir)[-1][0] != self.state.step:
            self.save()
        return self.state

    def ema_weights_to(self, model: torch.nn.Module) -> torch.nn.Module:
        """Copy the EMA weights into `model` (the one to save); the training weights stay as they are."""
        if self.ema is not None:
            self.ema.copy_to(model.parameters())
        return model


def constant_schedule(optimizer: torch.optim.Optimizer) -> Any:
    """A constant learning rate (the paper: 1e-4, no warm-up) as a checkpointable schedule."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def warmup_cosine(warmup: int, total: int, floor: float) -> Callable[[int], float]:
    """Learning-rate multiplier: linear warm-up, then cosine decay to `floor` (the toy models')."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return factor
