"""The named training recipes and option choices (no torch here: `ip2p train --help` stays fast).

`PAPER`: the paper's numbers (lr 1e-4 constant, EMA 0.9999, random flip, 256 px, batch 1024 =
32 x 8 GPUs x 4 accumulation, 10k steps). `TOY`: what the miniature world trains with on CPU;
notebook 05 says why each number differs."""

from __future__ import annotations

from typing import Any

PAPER: dict[str, Any] = dict(steps=10_000, batch_size=32, accumulation=4, lr=1e-4, clip_norm=None, resolution=256,
                             flip=True, ema_decay=0.9999, ema_warmup="authors")
# A small model learns faster at a higher learning rate; no flip, because toy instructions say
# "left" and "right"; a shorter EMA horizon for thousands, not tens of thousands, of steps.
TOY: dict[str, Any] = dict(steps=12_000, batch_size=32, accumulation=1, lr=5e-4, clip_norm=1.0, resolution=64,
                           flip=False, ema_decay=0.999, ema_warmup="authors")
RECIPES: dict[str, dict[str, Any]] = {"paper": PAPER, "toy": TOY}

CACHE_MODES = ("auto", "on", "off")
EMA_WARMUPS = ("authors", "power", "none")
