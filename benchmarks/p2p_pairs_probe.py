"""Probe: how consistent are toy SD's caption pairs under self-attention sharing, and can toy CLIP tell?

A measurement for the stand-ins (not the Prompt-to-Prompt implementation of notebook 02): for
caption pairs (input caption, edited caption) of recolour / reshape / background / resize edits,
both images start from the same latent and receive the same ancestral noise; image 1 takes
image 0's self-attention probabilities, in the unconditional and conditional halves, at every
layer, for the first p of the steps (the authors' data recipe, PAPER_NOTES.md §3.1.2). The
oracle (`toyworld.edit_score`) says whether the asked change was made and everything else kept;
toy CLIP's four similarities are then scored by how well they separate good pairs from bad (AUC).

    .venv/bin/python benchmarks/p2p_pairs_probe.py --pairs 64 --out figures/toy/p2p_probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ip2p_lib.infra.prompts import encode_prompts
from ip2p_lib.toyworld import apply, caption, edit_score, sample_edit
from ip2p_lib.toyworld.captions import random_caption_variant
from ip2p_lib.toyworld.pretrain.data import held_out_scenes

KINDS = ("recolor", "reshape", "background", "resize")


@dataclass
class Sharing:
    """What the attention processors read: whether to share now, and how many pairs per half."""

    active: bool = False
    pairs: int = 0
    calls: int = 0


class SharedSelfAttention:
    """Attention that, while `sharing.active`, gives image 1 of each pair image 0's self-attention
    probabilities. Batch rows are [uncond img0 (n), uncond img1 (n), cond img0 (n), cond img1 (n)]."""

    def __init__(self, sharing: Sharing) -> None:
        self.sharing = sharing

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: Any = None, **_: Any) -> torch.Tensor:
        if attn.spatial_norm is not None or hidden_states.ndim != 3:
            raise NotImplementedError("this probe handles the transformer blocks of UNet2DConditionModel only")
        is_self = encoder_hidden_states is None
        residual = hidden_states
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if is_self else encoder_hidden_states
        if not is_self and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = (attn.head_to_batch_dim(x) for x in (attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)))
        probs = attn.get_attention_scores(q, k, None)                      # (B * heads, queries, keys)
        if is_self and self.sharing.active:
            n, b = self.sharing.pairs, hidden_states.shape[0]
            probs = probs.view(b, attn.heads, *probs.shape[1:]).clone()
            probs[n:2 * n] = probs[0:n]                                    # unconditional half
            probs[3 * n:4 * n] = probs[2 * n:3 * n]                        # conditional half
            probs = probs.view(b * attn.heads, *probs.shape[2:])
            self.sharing.calls += 1
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@torch.no_grad()
def paired_samples(pipe: Any, captions0: list[str], captions1: list[str], p: float, steps: int, cfg: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Euler ancestral (v-prediction) for every pair at once, same start latent and same ancestral
    noise within a pair; image 1 shares image 0's self-attention for step < p * steps."""
    n = len(captions0)
    unet, sched = pipe.unet, pipe.scheduler
    sharing = Sharing(pairs=n)
    original = unet.attn_processors
    unet.set_attn_processor(SharedSelfAttention(sharing))
    try:
        cond = encode_prompts(pipe.text_encoder, pipe.tokenizer, [""] * (2 * n) + captions0 + captions1)
        sched.set_timesteps(steps)
        sigmas = sched.sigmas.float()
        gen = torch.Generator().manual_seed(seed)
        shape = (n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size)
        x = torch.randn(shape, generator=gen).repeat(2, 1, 1, 1) * sigmas[0]   # rows [img0 (n), img1 (n)]
        for i, t in enumerate(sched.timesteps):
            sigma, sigma_next = sigmas[i], sigmas[i + 1]
            sharing.active = i < p * steps
            model_in = torch.cat([x, x]) / (sigma ** 2 + 1) ** 0.5
            v = unet(model_in, t, encoder_hidden_states=cond).sample
            v_uncond, v_cond = v.chunk(2)
            v = v_uncond + cfg * (v_cond - v_uncond)                           # classifier-free guidance
            x0 = v * (-sigma / (sigma ** 2 + 1) ** 0.5) + x / (sigma ** 2 + 1)  # v-prediction -> x0
            sigma_up = (sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2) ** 0.5
            sigma_down = (sigma_next ** 2 - sigma_up ** 2) ** 0.5
            x = x + (x - x0) / sigma * (sigma_down - sigma)
            if sigma_next > 0:
                x = x + torch.randn(shape, generator=gen).repeat(2, 1, 1, 1) * sigma_up  # shared noise
        images = pipe.vae.decode(x / pipe.vae.config.scaling_factor).sample
    finally:
        unet.set_attn_processor(original)
    images = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return images[:n], images[n:], sharing.calls


def caption_pairs(n: int, with_position: bool, seed: int) -> list[tuple[Any, Any, str, str]]:
    """`n` (scene, edit, input caption, edited caption), the edit kinds balanced, one wording per pair."""
    rng = np.random.default_rng([seed, 11])
    out = []
    for i, scene in enumerate(held_out_scenes(n, offset=5)):
        edit = sample_edit(scene, rng, kinds=(KINDS[i % len(KINDS)],))
        wording = random_caption_variant(rng, p_position=1.0 if with_position else 0.0)
        out.append((scene, edit, caption(scene, **wording), caption(apply(scene, edit), **wording)))
    return out


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg)), ties counted half."""
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg)))


@torch.no_grad()
def clip_scores(images0: np.ndarray, images1: np.ndarray, captions0: list[str], captions1: list[str]) -> dict[str, np.ndarray]:
    """The paper's four similarities with toy CLIP: sim_0, sim_1, sim_image, sim_direction."""
    from ip2p_lib.infra.models import load_clip
    from ip2p_lib.toyworld.pretrain.clip import normalize_images
    from ip2p_lib.toyworld.pretrain.data import images_to_tensor

    model, _, tokenizer = load_clip("toy")
    i0, i1 = (model.encode_image(normalize_images(images_to_tensor(x)), normalize=True) for x in (images0, images1))
    t0, t1 = (model.encode_text(tokenizer(c), normalize=True) for c in (captions0, captions1))
    cos = torch.nn.functional.cosine_similarity
    return {"sim_0": cos(i0, t0).numpy(), "sim_1": cos(i1, t1).numpy(), "sim_image": cos(i0, i1).numpy(),
            "sim_direction": cos(i1 - i0, t1 - t0).numpy()}


def measure(pipe: Any, pairs: list, p: float, steps: int, cfg: float, seed: int) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    scenes, edits, c0, c1 = zip(*pairs)
    img0, img1, calls = paired_samples(pipe, list(c0), list(c1), p, steps, cfg, seed)
    if p > 0 and calls == 0:
        raise RuntimeError("no self-attention layer was hooked: sharing did nothing")
    scores = [edit_score(a, b, e) for a, b, e in zip(img0, img1, edits)]
    row = {"p": p, "changed": float(np.mean([s.changed for s in scores])),
           "kept": float(np.mean([s.preserved for s in scores])),
           "success": float(np.mean([s.success for s in scores]))}
    for kind in KINDS:
        row[f"{kind}_success"] = float(np.mean([s.success for s, e in zip(scores, edits) if e.kind == kind]))
    return row, img0, img1, np.array([s.success for s in scores])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=64, help="caption pairs per setting (default 64)")
    ap.add_argument("--steps", type=int, default=20, help="Euler ancestral steps (default 20)")
    ap.add_argument("--cfg", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    ap.add_argument("--ps", default="0,0.3,0.6,0.9,1.0", help="sharing fractions p (default 0,0.3,0.6,0.9,1.0)")
    ap.add_argument("--clip-pairs", type=int, default=128, help="pairs for the CLIP separation measurement (default 128)")
    ap.add_argument("--clip-p", type=float, default=0.8, help="p of the CLIP measurement (default 0.8)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from ip2p_lib.infra.models import load_sd

    pipe = load_sd("toy")
    pipe.set_progress_bar_config(disable=True)
    result: dict[str, Any] = {"settings": vars(args) | {"out": str(args.out)}, "tables": {}}
    for with_position in (False, True):
        name = "captions with a position phrase" if with_position else "captions without a position phrase"
        pairs = caption_pairs(args.pairs, with_position, args.seed)
        rows = []
        for p in [float(x) for x in args.ps.split(",")]:
            t0 = time.time()
            row, _, _, _ = measure(pipe, pairs, p, args.steps, args.cfg, args.seed)
            rows.append(row)
            print(name, {k: round(v, 3) for k, v in row.items()}, f"{time.time() - t0:.0f} s", flush=True)
        result["tables"][name] = rows
    pairs = caption_pairs(args.clip_pairs, False, args.seed + 1)
    _, img0, img1, ok = measure(pipe, pairs, args.clip_p, args.steps, args.cfg, args.seed + 1)
    scores = clip_scores(img0, img1, [q[2] for q in pairs], [q[3] for q in pairs])
    top = np.argsort(-scores["sim_image"])[: max(1, len(ok) // 10)]
    result["clip"] = {"p": args.clip_p, "pairs": len(ok), "oracle_success": float(ok.mean()),
                      **{f"auc_{k}": auc(v, ok) for k, v in scores.items()},
                      "precision_top10pct_sim_image": float(ok[top].mean())}
    print("CLIP filter:", {k: round(v, 3) if isinstance(v, float) else v for k, v in result["clip"].items()})
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
