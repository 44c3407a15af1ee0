"""Prompt-to-Prompt's own edit: cross-attention control (Hertz et al. 2022), beside the authors' recipe.

InstructPix2Pix's data code shares *self*-attention (`SelfAttentionSharing`). The Prompt-to-Prompt
paper edits the *cross*-attention maps M_t (queries = pixels, keys = prompt tokens) instead: while
sampling image 1 with caption 1, for the first `cross_fraction` of the steps its maps are image 0's,

    replace (same word count):  M*_t = M_t @ W                W (L, L) from `word_mapper`
    refine (words added/cut):   M*_t[..., j] = a_j M_t[..., m(j)] + (1 - a_j) M'_t[..., j]
                                                              m, a (L,) from `refine_mapper`

(M_t: image 0's maps, M'_t: image 1's own), and optionally, for the first `self_fraction`, image 1's
self-attention maps are image 0's at the coarse layers (resolution <= 16 on SD's 64x64 latents).
Both touch the conditional half of the CFG batch only; the unconditional half runs untouched.

    VARIANTS["replace"]       cross replace for the first p            (self injection off)
    VARIANTS["refine"]        cross refine for the first p             (self injection off)
    VARIANTS["replace+self"]  the authors' self sharing + cross replace, both for the first p
    VARIANTS["both"]          the authors' self sharing + cross refine, both for the first p

"replace" needs captions with the same number of words and raises otherwise (it does not fall
back to refine: a run labelled "replace" holds replace pairs only); use "refine" or "both".
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

import torch

from ip2p_lib.p2p.attention import AttentionCall, Controller, ControllerList, PairLayout, SelfAttentionSharing
from ip2p_lib.p2p.sampler import PairSpec, register_variant

# Prompt-to-Prompt injects self-attention at layers whose query grid is at most 16x16
# (`attn.shape[2] <= 16 ** 2` in its code): on SD's 64x64 latents, the two coarsest levels.
# Toy SD's latents are 16x16, so there 16 means every layer; its analogue would be 4.
P2P_SELF_MAX_RESOLUTION = 16


# ---------------------------------------------------------------- token bookkeeping


def word_spans(tokenizer: Any, prompt: str, length: int) -> tuple[list[list[int]], int]:
    """Token positions of each whitespace word in the padded sequence [start, words..., end, pad...],
    and the position of the first token after the words. Positions past the truncation (the end
    token always keeps position <= length - 1) are dropped."""
    words = prompt.split()
    pieces = [tokenizer.encode(w, add_special_tokens=False) for w in words]
    whole = tokenizer.encode(prompt, add_special_tokens=False)
    if [t for p in pieces for t in p] != whole:
        raise ValueError(f"the tokens of {prompt!r} word by word differ from its tokens as a whole; "
                         "the word mapping needs words that tokenize independently")
    last = length - 2                                    # the last position a word token can keep
    spans, pos = [], 1                                   # position 0 is the start token
    for p in pieces:
        spans.append([q for q in range(pos, pos + len(p)) if q <= last])
        pos += len(p)
    return spans, min(pos, last + 1)


def word_mapper(tokenizer: Any, prompt_0: str, prompt_1: str, length: int | None = None) -> torch.Tensor:
    """W (length, length) with probs_1 = probs_0 @ W: image 0's cross-attention over prompt-0
    tokens moved onto prompt 1's token positions, word i onto word i (Prompt-to-Prompt's replace).

    W[s, t] = 1 / |T_i| for s in the tokens S_i of word i in prompt 0 and t in its tokens T_i in
    prompt 1: each source token keeps its mass, spread evenly over the target word. (Prompt-to-
    Prompt's code pairs tokens one to one when |S_i| = |T_i|; this block form treats every word
    the same.) The start token maps to itself; end and padding tokens map in order from the end of
    the words (k-th after the words -> k-th after the words).

    Where prompt 1 has more tokens, prompt 0's last padding tokens run past `length`: they map onto
    the last column, so every row sums to 1 and mapped maps stay distributions. Where prompt 1 has
    fewer, its last padding columns receive nothing (zero): all of the source mass is placed already."""
    length = length or tokenizer.model_max_length
    words_0, words_1 = prompt_0.split(), prompt_1.split()
    if len(words_0) != len(words_1):
        raise ValueError(f"cross-attention replace needs captions with the same number of words: {prompt_0!r} has "
                         f"{len(words_0)}, {prompt_1!r} has {len(words_1)}; use refine (token alignment) instead")
    spans_0, end_0 = word_spans(tokenizer, prompt_0, length)
    spans_1, end_1 = word_spans(tokenizer, prompt_1, length)
    w = torch.zeros(length, length)
    w[0, 0] = 1.0                                                     # start token -> start token
    for s, t in zip(spans_0, spans_1):                                # word i -> word i
        if s and t:
            w[torch.tensor(s)[:, None], torch.tensor(t)[None, :]] = 1.0 / len(t)
    k = torch.arange(length - max(end_0, end_1))
    w[end_0 + k, end_1 + k] = 1.0                                     # end / padding, in order
    if end_1 > end_0:                                                 # sources past the end -> last column
        w[length - (end_1 - end_0):, length - 1] = 1.0
    return w


def token_alignment(tokens_0: Sequence[int], tokens_1: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Global (Needleman-Wunsch) alignment of two token-id sequences: match +1, mismatch -1, gap -1.

    Returns (mapper, alphas), both (len(tokens_1),): mapper[t] = the index in sequence 0 aligned to
    token t, alphas[t] = 1 if that token is equal to token t, else 0. A token of sequence 1 aligned
    to a gap (an insertion) gets alpha 0 and mapper = the sequence-0 token just before the gap (0
    at the start), a valid index whose weight is zero. Ties in the traceback (walked from the end)
    prefer a diagonal step, then a deletion from sequence 0, then an insertion into sequence 1."""
    a, b = [int(x) for x in tokens_0], [int(x) for x in tokens_1]
    n0, n1 = len(a), len(b)
    # score[i][j]: best score of aligning a[:i] with b[:j]
    score = [[-(i + j) if i == 0 or j == 0 else 0 for j in range(n1 + 1)] for i in range(n0 + 1)]
    for i in range(1, n0 + 1):
        for j in range(1, n1 + 1):
            diagonal = score[i - 1][j - 1] + (1 if a[i - 1] == b[j - 1] else -1)
            score[i][j] = max(diagonal, score[i - 1][j] - 1, score[i][j - 1] - 1)
    mapper = torch.zeros(n1, dtype=torch.long)
    alphas = torch.zeros(n1)
    i, j = n0, n1
    while j > 0:
        if i > 0 and score[i][j] == score[i - 1][j - 1] + (1 if a[i - 1] == b[j - 1] else -1):
            mapper[j - 1], alphas[j - 1] = i - 1, float(a[i - 1] == b[j - 1])   # aligned pair
            i, j = i - 1, j - 1
        elif i > 0 and score[i][j] == score[i - 1][j] - 1:
            i -= 1                                                            # a[i-1] deleted
        else:
            mapper[j - 1] = max(i - 1, 0)                                     # b[j-1] inserted
            j -= 1
    return mapper, alphas


def refine_mapper(tokenizer: Any, prompt_0: str, prompt_1: str,
                  length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mapper (length,), alphas (length,)) for the padded sequences the UNet sees: the start
    token, words and end token of both prompts aligned by `token_alignment`, then the padding of
    prompt 1 mapped in order onto prompt 0's (k-th after the end token -> k-th after it, the last
    position where prompt 0 runs out), alpha 1 where the tokens are equal."""
    length = length or tokenizer.model_max_length
    ids_0, ids_1 = (tokenizer(p, truncation=True, max_length=length).input_ids for p in (prompt_0, prompt_1))
    padded_0 = tokenizer(prompt_0, padding="max_length", truncation=True, max_length=length).input_ids
    padded_1 = tokenizer(prompt_1, padding="max_length", truncation=True, max_length=length).input_ids
    head_mapper, head_alphas = token_alignment(ids_0, ids_1)
    k = torch.arange(length - len(ids_1))
    tail = (len(ids_0) + k).clamp(max=length - 1)
    mapper = torch.cat([head_mapper, tail])
    tail_alphas = torch.tensor([float(padded_0[s] == padded_1[t])
                                for s, t in zip(tail.tolist(), range(len(ids_1), length))])
    return mapper, torch.cat([head_alphas, tail_alphas])


# ---------------------------------------------------------------- controllers


def _per_pair(x: torch.Tensor | float | Sequence[float], pairs: int) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64).expand(pairs).clone()


class _CrossAttentionControl(Controller):
    """Prompt-to-Prompt's schedule on a paired batch: image 1's conditional cross-attention is
    rewritten from image 0's for step < cross_fraction * steps (`_map`), and its conditional
    self-attention becomes image 0's for step < self_fraction * steps at resolutions up to
    `self_max_resolution` (through `SelfAttentionSharing`, on the fused kernel).

    `tokens` is the key count the mappers cover (77 for SD); `edits` counts the calls that were
    rewritten, by "cross" and "self"."""

    def __init__(self, tokens: int, cross_fraction: torch.Tensor | float, self_fraction: torch.Tensor | float,
                 pairs: int, self_max_resolution: int = P2P_SELF_MAX_RESOLUTION) -> None:
        super().__init__()
        self.tokens = tokens
        self.layout = PairLayout(pairs)
        self.cross_fraction = _per_pair(cross_fraction, pairs)
        self.self_injection = SelfAttentionSharing(self_fraction, pairs, halves=("cond",),
                                                   max_resolution=self_max_resolution)
        self.edits: Counter[str] = Counter()

    def begin_step(self, step: int, num_steps: int) -> None:
        super().begin_step(step, num_steps)
        self.self_injection.begin_step(step, num_steps)

    def _cross_active(self, call: AttentionCall) -> torch.Tensor | None:
        if not call.is_cross:
            return None
        mask = call.step < self.cross_fraction * self.num_steps           # pairs still in their window
        return mask if bool(mask.any()) else None

    def needs_probs(self, call: AttentionCall) -> bool:
        return self._cross_active(call) is not None                       # self-attention: fused kernel

    def _map(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Image 1's new cross-attention (n, heads, queries, keys) from image 0's and its own."""
        raise NotImplementedError

    def edit_probs(self, probs: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        if not call.is_cross:
            out = self.self_injection.edit_probs(probs, call)
            self.edits["self"] += out is not probs
            return out
        mask = self._cross_active(call)
        if mask is None:
            return probs
        if probs.shape[-1] != self.tokens:
            raise ValueError(f"the mappers cover {self.tokens} tokens, the attention has {probs.shape[-1]} keys")
        source, target = self.layout.rows("cond", 0), self.layout.rows("cond", 1)
        probs = probs.clone()
        mapped = self._map(probs[source], probs[target])
        mask = mask.to(probs.device)
        probs[target][mask] = mapped[mask]
        self.edits["cross"] += 1
        return probs

    def edit_qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.self_injection.edit_qkv(q, k, v, call)
        self.edits["self"] += out[0] is not q
        return out


class CrossAttentionReplace(_CrossAttentionControl):
    """Replace: image 1's cross-attention = image 0's @ W (one W (L, L) per pair, `word_mapper`)."""

    def __init__(self, mappers: torch.Tensor, cross_fraction: torch.Tensor | float, self_fraction: torch.Tensor | float,
                 pairs: int, self_max_resolution: int = P2P_SELF_MAX_RESOLUTION) -> None:
        if mappers.ndim != 3 or mappers.shape[0] != pairs or mappers.shape[1] != mappers.shape[2]:
            raise ValueError(f"mappers must be (pairs={pairs}, L, L), got {tuple(mappers.shape)}")
        super().__init__(mappers.shape[-1], cross_fraction, self_fraction, pairs, self_max_resolution)
        self.mappers = mappers.float()

    def _map(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return source @ self.mappers[:, None].to(source)                  # M*_t = M_t W, per pair, every head


class CrossAttentionRefine(_CrossAttentionControl):
    """Refine: image 1's cross-attention at token j = a_j * image 0's at token m(j) + (1 - a_j) * its own
    (one mapper m and alphas a (L,) per pair, `refine_mapper`). As in Prompt-to-Prompt, the blended
    rows are not renormalised (they sum to about 1)."""

    def __init__(self, mappers: torch.Tensor, alphas: torch.Tensor, cross_fraction: torch.Tensor | float,
                 self_fraction: torch.Tensor | float, pairs: int,
                 self_max_resolution: int = P2P_SELF_MAX_RESOLUTION) -> None:
        if mappers.shape != alphas.shape or mappers.ndim != 2 or mappers.shape[0] != pairs:
            raise ValueError(f"mappers and alphas must both be (pairs={pairs}, L), got "
                             f"{tuple(mappers.shape)} and {tuple(alphas.shape)}")
        super().__init__(mappers.shape[-1], cross_fraction, self_fraction, pairs, self_max_resolution)
        self.mappers, self.alphas = mappers.long(), alphas.float()

    def _map(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        index = self.mappers.to(source.device)[:, None, None, :].expand_as(source)
        alpha = self.alphas.to(source)[:, None, None, :]
        return alpha * source.gather(-1, index) + (1 - alpha) * target   # a_j M_t[m(j)] + (1 - a_j) M'_t[j]


# ---------------------------------------------------------------- sampler variants


def _length(tokenizer: Any) -> int:
    return int(tokenizer.model_max_length)


def replace_controller(specs: Sequence[PairSpec], tokenizer: Any, self_fraction: float = 0.0) -> CrossAttentionReplace:
    """Cross replace for the first p of each pair's steps (`self_fraction` of self injection)."""
    mappers = torch.stack([word_mapper(tokenizer, s.caption_0, s.caption_1, _length(tokenizer)) for s in specs])
    return CrossAttentionReplace(mappers, torch.tensor([s.p for s in specs]), self_fraction, len(specs))


def refine_controller(specs: Sequence[PairSpec], tokenizer: Any, self_fraction: float = 0.0) -> CrossAttentionRefine:
    """Cross refine for the first p of each pair's steps (`self_fraction` of self injection)."""
    maps = [refine_mapper(tokenizer, s.caption_0, s.caption_1, _length(tokenizer)) for s in specs]
    return CrossAttentionRefine(torch.stack([m for m, _ in maps]), torch.stack([a for _, a in maps]),
                                torch.tensor([s.p for s in specs]), self_fraction, len(specs))


def _with_self_sharing(specs: Sequence[PairSpec], cross: Controller) -> Controller:
    """The authors' self sharing (both halves, every resolution, first p) beside a cross controller."""
    return ControllerList(SelfAttentionSharing(torch.tensor([s.p for s in specs]), len(specs)), cross)


# Cross fraction = p, self injection off: the cross edit alone, to compare with the authors' "self".
# (The Prompt-to-Prompt paper's own defaults are cross ~0.8 and self ~0.2-0.4 of the steps.)
register_variant("replace", replace_controller)
register_variant("refine", refine_controller)
register_variant("replace+self", lambda specs, tok: _with_self_sharing(specs, replace_controller(specs, tok)))
register_variant("both", lambda specs, tok: _with_self_sharing(specs, refine_controller(specs, tok)))
