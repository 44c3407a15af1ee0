"""Attention control through diffusers' attention-processor API (§3.1.2).

Prompt-to-Prompt edits the attention *probabilities* of a UNet while it samples. diffusers
lets us do that without forking the UNet: `unet.set_attn_processor` puts our processor into
every `Attention` module, and the processor hands each layer's probabilities to a
*controller*, which may rewrite them before they weight the values.

    with controlled(unet, controller):       # every attention layer now calls the controller
        ...sample...                         # the original processors come back afterwards

The public Prompt-to-Prompt code found attention modules by class name; when a newer
diffusers renamed the class, nothing was hooked, nothing failed, and the "edited" pairs were
plain independent samples (google/prompt-to-prompt #72). Here the controller counts its calls
per step (`Controller.calls`), and `controlled(..., expect_calls=True)` fails loudly if a
sampling run never reached it.

Batch layout of a paired sampling step (see `PairLayout`): rows
[uncond image 0 (n), uncond image 1 (n), cond image 0 (n), cond image 1 (n)], the layout of the
authors' CFG batch [uncond, uncond, cond caption 0, cond caption 1] with n pairs stacked.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, Iterator

import torch


@dataclass(frozen=True)
class AttentionCall:
    """Where an attention call happens: the layer's name, self or cross attention, the side of its
    (square) query grid, and the sampling step the controller is at."""

    layer: str
    is_cross: bool
    resolution: int
    step: int


@dataclass(frozen=True)
class PairLayout:
    """Rows of a paired CFG batch: n pairs, four groups of n rows each."""

    pairs: int

    def rows(self, half: str, image: int) -> slice:
        """The rows of `half` ("uncond" or "cond") for image 0 or 1 of every pair."""
        group = {"uncond": 0, "cond": 2}[half] + image
        return slice(group * self.pairs, (group + 1) * self.pairs)


def pair_counts(controller: "Controller") -> set[int]:
    """The pair counts that `controller` (and the controllers it holds) were built for."""
    found = {controller.layout.pairs} if isinstance(getattr(controller, "layout", None), PairLayout) else set()
    for child in getattr(controller, "controllers", ()):
        found |= pair_counts(child)
    return found


class Controller:
    """Sees every attention call and may rewrite it; counts its calls per step.

    Two ways to rewrite: `edit_probs` gets the probabilities (batch, heads, queries, keys),
    which costs a materialised attention matrix; `edit_qkv` gets queries, keys and values
    (batch, heads, tokens, head dim) and lets the fused attention kernel run. A controller says
    which it needs per call with `needs_probs`. The base class changes nothing; its counts are
    how tests and the sampler know the hook reached the UNet."""

    def __init__(self) -> None:
        self.step = 0
        self.num_steps = 1
        self.calls: Counter[int] = Counter()

    def begin_step(self, step: int, num_steps: int) -> None:
        """Called by the sampler before each UNet call."""
        self.step, self.num_steps = step, num_steps

    def needs_probs(self, call: AttentionCall) -> bool:
        """Whether this call must go through `edit_probs` (default: no)."""
        return False

    def edit_probs(self, probs: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        """The probabilities to use; return `probs` itself when nothing changes."""
        return probs

    def edit_qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The queries, keys and values to use (only called when `needs_probs` is False)."""
        return q, k, v


class ControllerList(Controller):
    """Several controllers applied in order (e.g. self-attention sharing and an attention store)."""

    def __init__(self, *controllers: Controller) -> None:
        super().__init__()
        self.controllers = controllers

    def begin_step(self, step: int, num_steps: int) -> None:
        super().begin_step(step, num_steps)
        for c in self.controllers:
            c.begin_step(step, num_steps)

    def needs_probs(self, call: AttentionCall) -> bool:
        return any(c.needs_probs(call) for c in self.controllers)

    def edit_probs(self, probs: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        for c in self.controllers:
            probs = c.edit_probs(probs, call)
        return probs

    def edit_qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        for c in self.controllers:
            q, k, v = c.edit_qkv(q, k, v, call)
        return q, k, v


class ControlledAttention:
    """An attention processor with diffusers' plain attention math (scores, softmax, weighted sum)
    that lets `controller` see and rewrite the probabilities between softmax and the weighted sum.

    Rewriting probabilities after the softmax is the same as rewriting the pre-softmax
    similarities the authors' code replaces, whenever whole rows are copied; and copying image
    0's probabilities onto image 1 is the same as giving image 1 image 0's queries and keys
    (softmax(q0 k0^T) v1), which lets self-attention sharing use the fused kernel."""

    def __init__(self, name: str, controller: Controller) -> None:
        self.name = name
        self.controller = controller

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        if getattr(attn, "norm_q", None) is not None or getattr(attn, "norm_k", None) is not None:
            raise NotImplementedError(f"{self.name}: attention with query/key norms is not handled here "
                                      "(Stable Diffusion 1.x/2.x has none)")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image_shape = None
        if hidden_states.ndim == 4:
            image_shape = hidden_states.shape
            b, c, h, w = image_shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, queries, _ = hidden_states.shape
        is_cross = encoder_hidden_states is not None
        keys = encoder_hidden_states.shape[1] if is_cross else queries
        attention_mask = attn.prepare_attention_mask(attention_mask, keys, batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        context = hidden_states if not is_cross else encoder_hidden_states
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        heads = attn.heads
        q, k, v = (x.view(batch, x.shape[1], heads, -1).transpose(1, 2)          # (batch, heads, tokens, dim)
                   for x in (query, attn.to_k(context), attn.to_v(context)))
        controller = self.controller
        call = AttentionCall(self.name, is_cross, math.isqrt(queries), controller.step)
        controller.calls[call.step] += 1
        if controller.needs_probs(call) or attention_mask is not None:
            flat = (x.reshape(batch * heads, x.shape[2], -1) for x in (q, k))
            probs = attn.get_attention_scores(*flat, attention_mask)               # (batch * heads, queries, keys)
            probs = controller.edit_probs(probs.view(batch, heads, queries, -1), call)
            out = probs.to(v.dtype) @ v
        else:
            q, k, v = controller.edit_qkv(q, k, v, call)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=attn.scale)
        out = out.transpose(1, 2).reshape(batch, queries, -1)
        out = attn.to_out[1](attn.to_out[0](out))
        if image_shape is not None:
            out = out.transpose(-1, -2).reshape(image_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def attention_layers(unet: Any) -> list[str]:
    """Names of the UNet's attention processors (diffusers' `unet.attn_processors` keys)."""
    return list(unet.attn_processors)


@contextlib.contextmanager
def controlled(unet: Any, controller: Controller, expect_calls: bool = True) -> Iterator[Controller]:
    """Route every attention layer of `unet` through `controller`; restore the processors after.

    With `expect_calls`, leaving the block after a UNet call that never reached the controller
    raises: a silent no-op is the classic Prompt-to-Prompt failure (see the module docstring)."""
    original = unet.attn_processors
    if not original:
        raise ValueError(f"{type(unet).__name__} has no attention layers to control")
    calls_before = sum(controller.calls.values())
    unet.set_attn_processor({name: ControlledAttention(name, controller) for name in original})
    try:
        yield controller
    finally:
        unet.set_attn_processor(original)
    if expect_calls and sum(controller.calls.values()) == calls_before:
        raise RuntimeError("the attention controller was never called: no attention layer was hooked, "
                           "so Prompt-to-Prompt would silently do nothing")


# ---------------------------------------------------------------- controllers


def _step_mask(fractions: torch.Tensor, step: int, num_steps: int) -> torch.Tensor:
    """Which pairs are still inside their first `fraction` of the steps (step < fraction * steps)."""
    return step < fractions * num_steps


class SelfAttentionSharing(Controller):
    """The authors' data recipe: while step < p * steps, image 1 of each pair uses image 0's
    self-attention probabilities, in the unconditional and the conditional halves, at every
    resolution. Cross-attention is left alone. `p` is one fraction per pair (the paper draws
    p ~ U(0.1, 0.9) per sample).

    `halves=("cond",)` and `max_resolution` give Prompt-to-Prompt's own self-attention injection,
    which touches the conditional half only, at resolutions up to 16 (SD's 64x64 latents: the
    16x16 and smaller layers)."""

    def __init__(self, p: torch.Tensor | float, pairs: int, halves: tuple[str, ...] = ("uncond", "cond"),
                 max_resolution: int | None = None) -> None:
        super().__init__()
        self.layout = PairLayout(pairs)
        self.p = torch.as_tensor(p, dtype=torch.float64).expand(pairs).clone()
        self.halves = halves
        self.max_resolution = max_resolution

    def _active(self, call: AttentionCall) -> torch.Tensor | None:
        if call.is_cross or (self.max_resolution is not None and call.resolution > self.max_resolution):
            return None
        mask = _step_mask(self.p, call.step, self.num_steps)
        return mask if bool(mask.any()) else None

    def _copy(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x, mask = x.clone(), mask.to(x.device)
        for half in self.halves:
            target, source = x[self.layout.rows(half, 1)], x[self.layout.rows(half, 0)]
            target[mask] = source[mask]
        return x

    def edit_probs(self, probs: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        mask = self._active(call)
        return probs if mask is None else self._copy(probs, mask)

    def edit_qkv(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 call: AttentionCall) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mask = self._active(call)
        return (q, k, v) if mask is None else (self._copy(q, mask), self._copy(k, mask), v)


class AttentionStore(Controller):
    """Keeps attention maps, averaged over heads, per (layer, step), for pictures.

    `rows` picks the batch rows to keep (default all); self-attention maps are kept only up to
    `max_self_resolution` (a 64x64 layer's map is 4096 x 4096 per row)."""

    def __init__(self, cross: bool = True, self_attention: bool = False, max_self_resolution: int = 16,
                 rows: slice | None = None) -> None:
        super().__init__()
        self.cross, self.self_attention = cross, self_attention
        self.max_self_resolution = max_self_resolution
        self.rows = rows if rows is not None else slice(None)
        self.maps: dict[tuple[str, int], torch.Tensor] = {}
        self.info: dict[str, AttentionCall] = {}

    def needs_probs(self, call: AttentionCall) -> bool:
        return self.cross if call.is_cross else (self.self_attention and call.resolution <= self.max_self_resolution)

    def edit_probs(self, probs: torch.Tensor, call: AttentionCall) -> torch.Tensor:
        keep = self.cross if call.is_cross else (self.self_attention and call.resolution <= self.max_self_resolution)
        if keep:
            self.maps[(call.layer, call.step)] = probs[self.rows].mean(dim=1).detach().float().cpu()
            self.info[call.layer] = call
        return probs

    def layers(self, is_cross: bool = True, resolution: int | None = None) -> list[str]:
        """Layer names stored, by kind and (optionally) query resolution."""
        return [name for name, c in self.info.items()
                if c.is_cross == is_cross and (resolution is None or c.resolution == resolution)]

    def average(self, is_cross: bool = True, resolution: int | None = None,
                steps: range | None = None) -> torch.Tensor:
        """(rows, resolution, resolution, keys): the mean map over layers of that resolution and
        over `steps` (default all). Needs one resolution: maps of different sizes do not average."""
        names = self.layers(is_cross, resolution)
        if not names:
            raise ValueError(f"no stored {'cross' if is_cross else 'self'}-attention maps at resolution {resolution}")
        sizes = {self.info[n].resolution for n in names}
        if len(sizes) != 1:
            raise ValueError(f"stored maps have resolutions {sorted(sizes)}: pass one of them as `resolution`")
        (side,) = sizes
        by_step: dict[int, list[torch.Tensor]] = defaultdict(list)
        for (name, step), m in self.maps.items():
            if name in names and (steps is None or step in steps):
                by_step[step].append(m)
        if not by_step:
            raise ValueError(f"no stored maps in steps {steps}")
        mean = torch.stack([torch.stack(v).mean(0) for v in by_step.values()]).mean(0)
        return mean.view(mean.shape[0], side, side, mean.shape[-1])
