"""A small GPT-2 pretrained on the world's captions, made on the fly.

The project's toy LM (`data/toy/models/lm`, made by `ip2p toy pretrain lm`) is the stand-in for
GPT-3: a GPT-2 with its own byte-level BPE tokenizer, pretrained on world captions only.
This module makes a smaller one of the same kind in a minute, for the tests and for notebook
01 when the toy LM is not there yet. Byte-level BPE can spell any text, so the instruction
words and the delimiters ("##", "%%", "END"), which no caption contains, still get tokens.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ip2p_lib.infra.models import toy_model_dir
from ip2p_lib.infra.paths import shown
from ip2p_lib.toyworld import random_caption, sample_scene

def toy_lm_path() -> Path:
    """`data/toy/models/lm`, the project's pretrained toy LM (it may not be there yet)."""
    return toy_model_dir("lm", check=False)


def world_captions(n: int, seed: int = 0) -> list[str]:
    """`n` random captions of random scenes (half of them name a position)."""
    rng = np.random.default_rng(seed)
    return [random_caption(sample_scene(rng), rng) for _ in range(n)]


def make_caption_lm(
    out_dir: str | Path,
    n_captions: int = 4000,
    steps: int = 300,
    n_layer: int = 3,
    n_embd: int = 96,
    n_head: int = 4,
    n_positions: int = 256,
    vocab_size: int = 400,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
) -> dict[str, float]:
    """Train a tokenizer and a small GPT-2 on world captions; save both to `out_dir`.

    Each training text is one caption followed by `<|endoftext|>`. Returns the first and last
    loss and the seconds taken. `steps=0` saves the untrained (random) model. The default
    architecture is the toy LM's (3 layers, width 96, 256 positions)."""
    from ip2p_lib.toyworld.pretrain.lm import LMConfig, build_lm, train_bpe

    torch.manual_seed(seed)
    captions = world_captions(n_captions, seed)
    tokenizer = train_bpe(captions, vocab_size)
    cfg = LMConfig(vocab_size=vocab_size, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_positions=n_positions)
    model = build_lm(cfg, len(tokenizer))
    encoded = [tokenizer(c + tokenizer.eos_token)["input_ids"] for c in captions]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        rows = [encoded[i] for i in rng.integers(len(encoded), size=batch_size)]
        width = max(map(len, rows))
        ids = torch.full((batch_size, width), tokenizer.pad_token_id)
        labels = torch.full((batch_size, width), -100)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(r)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        for group in optimizer.param_groups:  # linear decay to 10 %
            group["lr"] = lr * (1 - 0.9 * (step + 1) / steps)
        losses.append(float(loss.detach()))
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"first_loss": losses[0] if losses else float("nan"), "last_loss": losses[-1] if losses else float("nan"),
            "seconds": time.perf_counter() - start}


def resolve_toy_lm(fallback_dir: str | Path, fallback_steps: int = 300, **options: Any) -> tuple[Path, str]:
    """The toy LM's folder, and a note. If `data/toy/models/lm` is missing (it comes from
    `ip2p toy pretrain lm`), train a stand-in of the same architecture into `fallback_dir`
    (`options` go to `make_caption_lm`)."""
    path = toy_lm_path()
    if (path / "config.json").exists():
        return path, f"toy LM: {shown(path)}"
    fallback = Path(fallback_dir)
    if not (fallback / "config.json").exists():
        make_caption_lm(fallback, steps=fallback_steps, **options)
    return fallback, (f"NOTE: the toy LM {shown(path)} is missing (make it with `ip2p toy pretrain lm`); using a stand-in "
                      f"of the same architecture pretrained here for {fallback_steps} steps on world captions: {shown(fallback)}")
