"""Toy language model: a small GPT-2 that knows the world's captions (stand-in for GPT-3).

The paper fine-tunes GPT-3 on 700 human-written (caption, instruction, edited caption)
triples. Before fine-tuning, GPT-3 already knows how people describe images; the stand-in
gets the same head start here: it is pretrained on captions and other descriptive text of
the miniature world, and NEVER on edit instructions or triples (teaching those is notebook
01's job, and its effect must be visible there).

Its tokenizer is a byte-level BPE trained with the `tokenizers` library on the same text.
Byte-level BPE represents every byte, so newlines survive and the paper's fine-tuning
format (`input\\n##\\n`, `edit\\n%%\\noutput\\nEND`) is expressible later without new tokens.

A quarter of the documents are *series* (`series`): captions of similar pictures in one
wording, each one attribute away from the line above, as in a catalogue. GPT-3 has read
countless such near-duplicate lists; without them the toy LM only knows that after a newline
comes an unrelated caption, and after fine-tuning it copies the input caption badly (notebook
01 measures the difference: 55% consistent triples without series, 71% with).

Objective: next-token cross-entropy, L = -1/N sum_t log p(x_t | x_<t).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ip2p_lib.toyworld import (EDIT_KINDS, CaptionParseError, Scene, apply, caption, parse_caption, random_caption,
                               sample_edit, sample_scene)
from ip2p_lib.toyworld.captions import POSITION_PHRASES, SIZE_WORDS, random_caption_variant
from ip2p_lib.toyworld.pretrain import common
from ip2p_lib.infra.trainloop import RunState, warmup_cosine

EOS = "<|endoftext|>"


@dataclass
class LMConfig:
    """Architecture, tokenizer and optimisation of the toy LM (defaults: the committed model)."""

    vocab_size: int = 400
    n_embd: int = 96
    n_layer: int = 3
    n_head: int = 4
    n_positions: int = 256
    p_series: float = 0.25
    tokenizer_docs: int = 5000
    steps: int = 1200
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 50
    lr_floor: float = 0.1
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def describe(scene: Scene, rng: np.random.Generator) -> str:
    """Descriptive sentences about a scene (not a caption): what a picture's alt text adds."""
    size = SIZE_WORDS[scene.size][rng.integers(2)]
    where = POSITION_PHRASES[(scene.hpos, scene.vpos)][0]
    sentences = [f"the {scene.shape} is {size} and {scene.color}.", f"it is {where}.",
                 f"the background is {scene.background}.", f"the {scene.color} {scene.shape} is {where}."]
    order = rng.permutation(len(sentences))[: rng.integers(1, len(sentences) + 1)]
    return " ".join(sentences[i] for i in order)


def series(rng: np.random.Generator) -> str:
    """A gallery of similar pictures, one caption per line in one wording: each picture differs
    from the one above in one attribute (a catalogue: "a red t-shirt / a blue t-shirt").

    Web text is full of such near-duplicate lists; they are where a language model learns that
    a caption can be copied with one word changed. There is no instruction in it."""
    scene = sample_scene(rng)
    variant = random_caption_variant(rng)
    kinds = EDIT_KINDS if variant["with_position"] else tuple(k for k in EDIT_KINDS if k != "move")
    lines = [caption(scene, **variant)]
    for _ in range(int(rng.integers(1, 5))):
        scene = apply(scene, sample_edit(scene, rng, kinds=kinds))
        lines.append(caption(scene, **variant))
    return "\n".join(lines)


def document(rng: np.random.Generator, p_series: float = 0.0) -> str:
    """One pretraining document: a caption; a caption and a description; a list of captions;
    or (with probability `p_series`) a `series` of similar pictures. `evaluate_lm` scores
    perplexity with `p_series=0`, so models pretrained with and without series compare.

    The first line is always a caption, so free-running samples can be scored by parsing it."""
    if p_series and rng.uniform() < p_series:
        return series(rng)
    kind = rng.integers(3)
    scene = sample_scene(rng)
    if kind == 0:
        return random_caption(scene, rng)
    if kind == 1:
        return random_caption(scene, rng) + "\n" + describe(scene, rng)
    return "\n".join(random_caption(sample_scene(rng), rng) for _ in range(rng.integers(2, 6)))


def train_bpe(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE (`tokenizers`) trained on `texts`, wrapped as a transformers tokenizer
    whose one special token, `<|endoftext|>`, serves as BOS, EOS, pad and unk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def train_tokenizer(cfg: LMConfig) -> Any:
    """The toy LM's tokenizer: `train_bpe` on `cfg.tokenizer_docs` world documents (deterministic)."""
    rng = np.random.default_rng([cfg.seed, 10**9])
    return train_bpe([document(rng, cfg.p_series) for _ in range(cfg.tokenizer_docs)], cfg.vocab_size)


def build_lm(cfg: LMConfig, vocab_size: int) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                        n_positions=cfg.n_positions, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                        loss_type="ForCausalLM")
    return GPT2LMHeadModel(config)


def encode_docs(tokenizer: Any, docs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """`EOS doc EOS` per document, right-padded; labels are -100 on padding."""
    ids = [[tokenizer.eos_token_id, *tokenizer(d).input_ids, tokenizer.eos_token_id] for d in docs]
    width = max(map(len, ids))
    x = torch.full((len(ids), width), tokenizer.eos_token_id)
    labels = torch.full((len(ids), width), -100)
    for i, row in enumerate(ids):
        x[i, : len(row)] = torch.tensor(row)
        labels[i, : len(row)] = torch.tensor(row)
    return x, labels


def train_lm(cfg: LMConfig, run_dir: Path, progress: bool = True, checkpoint_every_s: float = 180.0) -> tuple[Any, Any, RunState]:
    """Train (or resume) the LM in `run_dir`. The tokenizer is retrained deterministically."""
    common.seed_everything(cfg.seed)
    tokenizer = train_tokenizer(cfg)
    model = build_lm(cfg, len(tokenizer))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup, cfg.steps, cfg.lr_floor))

    def step_fn(step: int) -> torch.Tensor:
        rng, _ = common.step_rng(cfg.seed, step)
        x, labels = encode_docs(tokenizer, [document(rng, cfg.p_series) for _ in range(cfg.batch_size)])
        return model(input_ids=x, attention_mask=(labels != -100).long(), labels=labels).loss

    state = common.train(step_fn, model, opt, sched, cfg.steps, Path(run_dir), cfg.to_dict(),
                         desc="lm", progress=progress, checkpoint_every_s=checkpoint_every_s)
    return model.eval(), tokenizer, state


@torch.no_grad()
def evaluate_lm(model: Any, tokenizer: Any, n_docs: int = 500, n_samples: int = 200, seed: int = 0) -> dict[str, float]:
    """Held-out perplexity (documents from an unused seed) and the fraction of free-running
    samples (temperature 1, from EOS, first line) that `parse_caption` accepts."""
    rng = np.random.default_rng([10**6, seed])
    nll, count = 0.0, 0
    for i in range(0, n_docs, 50):
        x, labels = encode_docs(tokenizer, [document(rng) for _ in range(50)])
        n = int((labels[:, 1:] != -100).sum())
        nll += float(model(input_ids=x, attention_mask=(labels != -100).long(), labels=labels).loss) * n
        count += n
    torch.manual_seed(seed)
    start = torch.full((n_samples, 1), tokenizer.eos_token_id)
    out = model.generate(start, attention_mask=torch.ones_like(start), do_sample=True, temperature=1.0, top_k=0, max_new_tokens=40,
                         pad_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    texts = [tokenizer.decode(row[1:], skip_special_tokens=True).split("\n")[0] for row in out]
    ok = 0
    for t in texts:
        try:
            parse_caption(t)
            ok += 1
        except CaptionParseError:
            pass
    return {"heldout_perplexity": math.exp(nll / count), "samples_parse": ok / n_samples, "_samples": texts[:8]}


def default_config() -> LMConfig:
    return LMConfig()


def main(run_dir: Path, out: Path | None, cfg: LMConfig, threads: int = 2, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate and (if `out`) export the toy LM (transformers folder + card)."""
    torch.set_num_threads(threads)
    model, tokenizer, state = train_lm(cfg, Path(run_dir), progress=progress)
    metrics = evaluate_lm(model, tokenizer)
    samples = metrics.pop("_samples")
    print(metrics, samples)
    if out is not None:
        model.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        common.write_card(Path(out), "Toy LM (GPT-2 architecture, stand-in for GPT-3 before fine-tuning)", {
            "What it stands in for": "GPT-3 `davinci` before the paper fine-tunes it on human-written triples.",
            "Config": {**cfg.to_dict(), "parameters": sum(p.numel() for p in model.parameters()), "tokenizer_vocab": len(tokenizer)},
            "Training": {"steps": state.step, "train_wall_s": round(state.elapsed_s), "machine": common.machine(),
                         "data": f"documents of world text: a caption; a caption then descriptive sentences; 2-5 captions "
                                 f"one per line; and ({cfg.p_series:.0%} of documents) a series: 2-5 captions of similar "
                                 f"pictures in one wording, each one attribute away from the line above. No edit "
                                 f"instructions, no triples.",
                         "loss_first_last": common.loss_summary(state.losses)},
            "Quality": {k: round(v, 4) for k, v in metrics.items()},
            "Samples (free-running, temperature 1, first line)": "\n".join(f"- `{s}`" for s in samples),
            "Reproduce": f"`ip2p toy pretrain lm --seed {cfg.seed} --threads {threads}`",
        })
    return metrics
