"""The `hf` back end: fine-tune and sample any local transformers causal LM.

Fine-tuning (`finetune_hf`) is the authors' recipe on a small scale: each seed triple becomes
prompt + completion, and the loss covers the completion tokens only (labels -100 on the
prompt and the padding). The model is never asked to predict the caption it is given, only
to continue it: at generation time the caption is always given, so learning to write
captions would spend capacity on a task it never has to do.

Sampling (`HFBackend.complete`) uses the paper's settings. transformers has no OpenAI-style
frequency penalty; `FrequencyPenaltyLogitsProcessor` implements OpenAI's definition,

    logit[j] -= frequency_penalty * count_j + presence_penalty * (count_j > 0),

where count_j is how often token j occurs in the completion so far. It is not transformers'
`repetition_penalty` (CTRL's), which divides a positive logit (multiplies a negative one) by a
constant for every token seen anywhere, prompt included, however often: a penalty that ignores
counts and punishes copying the caption, which is exactly what an edited caption must do.

Each row of a batch samples with its own `torch.Generator`, seeded by the caller
(`SeededRowSampler`): transformers' own sampling draws all rows from one generator, so a row's
tokens would depend on its batch-mates and on how many calls came before, and a resumed run
would not write what an uninterrupted one writes.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.models import load_causal_lm_folder
from ip2p_lib.text.backends import SamplingSettings, WordListModeration, completion_seed
from ip2p_lib.text.format import EDIT_END, make_completion, make_prompt


def load_causal_lm(path: str | Path, device: str | torch.device | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a local folder or a cached hub id, eval mode, pad token set.

    Loaded with the one model loader (`ip2p_lib.infra.models.load_causal_lm_folder`), so a missing
    model is one `UserError` saying what to download. A missing pad token becomes the EOS
    token (or a new `<|pad|>`); padding goes on the left, so every prompt in a batch ends
    where generation starts."""
    model, tokenizer = load_causal_lm_folder(path)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
            model.resize_token_embeddings(len(tokenizer))
    tokenizer.padding_side = "left"
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
    return model, tokenizer


def encode_example(tokenizer: Any, triple: Mapping[str, str], max_length: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids of prompt + completion, and labels that are -100 on the prompt (no loss)."""
    prompt = tokenizer(make_prompt(triple["input"]), add_special_tokens=False)["input_ids"]
    completion = tokenizer(make_completion(triple["edit"], triple["output"]), add_special_tokens=False)["input_ids"]
    ids = prompt + completion
    labels = [-100] * len(prompt) + completion
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


def collate(examples: Sequence[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training: padding gets label -100 and attention mask 0."""
    width = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


@dataclass
class FinetuneResult:
    """Where the fine-tuned model is, and its loss after every step."""

    path: Path
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


def finetune_hf(
    model_path: str | Path,
    triples: Sequence[Mapping[str, str]],
    out_dir: str | Path,
    epochs: float = 1.0,
    batch_size: int = 8,
    lr: float = 1e-4,
    warmup: float = 0.05,
    seed: int = 0,
    device: str | None = None,
    max_length: int = 256,
    dropout: float | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> FinetuneResult:
    """Fine-tune a local causal LM on triples in the authors' format; save it to `out_dir`.

    `epochs` defaults to the paper's one (fractions allowed); AdamW with linear warm-up and
    linear decay; the mean loss per completion token of each step is recorded. `dropout`
    replaces the model's dropout probabilities while fine-tuning (None keeps them)."""
    from tqdm.auto import tqdm

    if not triples:
        raise UserError("no triples to fine-tune on")
    torch.manual_seed(seed)
    model, tokenizer = load_causal_lm(model_path, device)
    tokenizer.padding_side = "right"
    if dropout is not None:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
    examples = [encode_example(tokenizer, t, max_length) for t in triples]
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    total = max(1, round(epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    warm = max(1, int(warmup * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / max(1, total - warm)))
    )
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    bar = tqdm(range(total), desc="fine-tuning", disable=not progress)
    for step in bar:
        if len(order) < batch_size:  # a fresh shuffle every epoch
            order += torch.randperm(len(examples), generator=generator).tolist()
        batch = collate([examples[i] for i in order[:batch_size]], tokenizer.pad_token_id)
        del order[:batch_size]
        batch = {k: v.to(model.device) for k, v in batch.items()}
        loss = model(**batch).loss  # transformers shifts labels; -100 positions are ignored
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if on_step:
            on_step(step, losses[-1])
    model.eval()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(out)
    settings = dict(base=str(model_path), n_triples=len(triples), epochs=epochs, steps=total,
                    batch_size=batch_size, lr=lr, warmup=warmup, dropout=dropout, seed=seed)
    seconds = time.perf_counter() - start
    (out / "finetune.json").write_text(json.dumps({**settings, "seconds": seconds, "losses": losses}, indent=1))
    return FinetuneResult(out, losses, seconds, settings)


class FrequencyPenaltyLogitsProcessor:
    """OpenAI's frequency and presence penalties as a transformers logits processor.

    Counts cover the generated tokens only (after `prompt_length`), as OpenAI's do. It runs
    before temperature and top-p, as in OpenAI's definition (penalised logits are sampled)."""

    def __init__(self, frequency_penalty: float, presence_penalty: float, prompt_length: int) -> None:
        self.frequency_penalty = frequency_penalty
        self.presence_penalty = presence_penalty
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[:, self.prompt_length:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.frequency_penalty * counts - self.presence_penalty * (counts > 0).to(scores.dtype)


class StopOnText:
    """Stop each sequence once its generated text contains `stop` (a per-row stopping criterion)."""

    def __init__(self, stop: str, tokenizer: Any, prompt_length: int, window: int = 8) -> None:
        self.stop, self.tokenizer, self.prompt_length, self.window = stop, tokenizer, prompt_length, window

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        tails = input_ids[:, max(self.prompt_length, input_ids.shape[1] - self.window):]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([self.stop in t for t in texts], dtype=torch.bool, device=input_ids.device)


class SeededRowSampler:
    """Sampling with one generator per row, as the last logits processor of a greedy `generate`.

    Row r draws its k-th token by inverse transform sampling: with u = its own k-th uniform
    number in [0, 1), the first token j whose cumulative probability exceeds u, where the
    probabilities are the softmax of the scores that the processors before this one left
    (penalised, divided by the temperature, top-p filtered). It returns scores that are 0 at the
    drawn token and -inf elsewhere, so that the greedy step picks exactly that token. Each row's
    uniforms are drawn up front from its own generator, so its tokens depend on its own seed and
    scores only, and a step costs one vectorised draw for the whole batch."""

    def __init__(self, generators: Sequence[torch.Generator], steps: int, prompt_length: int) -> None:
        self.uniforms = torch.stack([torch.rand(steps, generator=g, device=g.device) for g in generators])
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        k = input_ids.shape[1] - self.prompt_length  # tokens generated so far
        cdf = torch.softmax(scores.float(), dim=-1).cumsum(dim=-1)
        u = self.uniforms[:, k:k + 1].to(cdf.device) * cdf[:, -1:]  # scaled by the total, which rounding moves off 1
        drawn = torch.searchsorted(cdf, u, right=True).clamp(max=scores.shape[-1] - 1)
        return torch.full_like(scores, float("-inf")).scatter_(1, drawn, 0.0)


class HFBackend:
    """Generation with a local causal LM (a folder, e.g. the fine-tuned toy LM)."""

    name = "hf"

    def __init__(self, model: str | Path, device: str | None = None, batch_size: int = 64, seed: int = 0,
                 moderation: Callable[[Sequence[str]], list[bool]] | None = None) -> None:
        checks.seed(seed, "seed")
        self.model, self.tokenizer = load_causal_lm(model, device)
        self.batch_size = batch_size
        self.seed = seed
        self.calls = 0
        self.moderation = moderation or WordListModeration()

    def moderate(self, texts: Sequence[str]) -> list[bool]:
        return self.moderation(texts)

    @torch.no_grad()
    def complete(self, prompts: Sequence[str], settings: SamplingSettings = SamplingSettings(),
                 seeds: Sequence[int] | None = None) -> list[str | None]:
        """One sampled completion per prompt, cut before the stop sequence.

        Prompt i samples with generator seed `seeds[i]`; without `seeds`, the seeds come from the
        back end's seed, the number of this call and i (reproducible, new draws per call)."""
        from transformers import LogitsProcessorList, StoppingCriteriaList, TemperatureLogitsWarper, TopPLogitsWarper

        self.calls += 1
        if seeds is None:
            seeds = [completion_seed(self.seed, self.calls, i) for i in range(len(prompts))]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        out: list[str | None] = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = list(prompts[i:i + self.batch_size])
            enc = self.tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
            length = enc["input_ids"].shape[1]
            room = getattr(self.model.config, "max_position_embeddings", None) or getattr(self.model.config, "n_positions", None)
            max_new = min(settings.max_tokens, room - length) if room else settings.max_tokens
            if max_new <= 0:
                out += [None] * len(chunk)
                continue
            processors: list[Any] = [FrequencyPenaltyLogitsProcessor(settings.frequency_penalty,
                                                                     settings.presence_penalty, length)]
            if settings.temperature > 0:  # sample; temperature 0 is greedy decoding
                generators = [torch.Generator(self.model.device).manual_seed(s) for s in seeds[i:i + self.batch_size]]
                processors.append(TemperatureLogitsWarper(settings.temperature))
                if settings.top_p < 1.0:  # OpenAI has no top-k: none here
                    processors.append(TopPLogitsWarper(settings.top_p))
                processors.append(SeededRowSampler(generators, max_new, length))
            ids = self.model.generate(
                **enc,
                do_sample=False,  # greedy over the scores SeededRowSampler leaves: its draw, or the argmax
                max_new_tokens=max_new,
                logits_processor=LogitsProcessorList(processors),
                stopping_criteria=StoppingCriteriaList([StopOnText(settings.stop, self.tokenizer, length)]),
                pad_token_id=self.tokenizer.pad_token_id,
            )
            texts = self.tokenizer.batch_decode(ids[:, length:], skip_special_tokens=True)
            out += [t.split(settings.stop)[0] for t in texts]
        return out


@torch.no_grad()
def part_losses(model: Any, tokenizer: Any, triples: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Mean loss per token of the instruction part and of the edited-caption part of the
    completion (teacher-forced): where a fine-tuned model is sure and where it is not."""
    sums = {"instruction": [0.0, 0], "edited_caption": [0.0, 0]}
    model.eval()
    for t in triples:
        ids, labels = encode_example(tokenizer, t)
        n_prompt = labels.count(-100)
        n_edit = len(tokenizer(t["edit"] + EDIT_END, add_special_tokens=False)["input_ids"])
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids], device=model.device)).logits[0].float(), -1)
        for k in range(n_prompt, len(ids)):
            part = sums["instruction" if k < n_prompt + n_edit else "edited_caption"]
            part[0] -= float(logp[k - 1, ids[k]])
            part[1] += 1
    return {name: total / max(count, 1) for name, (total, count) in sums.items()}
