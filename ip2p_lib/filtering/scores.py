"""The four CLIP similarities of a generated pair (§3.1.2; the authors' `ClipSimilarity`).

    sim_0         = cos(I0, T0)                 image 0 against the input caption
    sim_1         = cos(I1, T1)                 image 1 against the edited caption
    sim_direction = cos(I1 - I0, T1 - T0)       directional similarity (StyleGAN-NADA): does the
                                                image change point the way the caption change does?
    sim_image     = cos(I0, I1)                 are the two images still of the same scene?

I and T are CLIP's image and text embeddings. One scorer serves every open_clip model: toy CLIP
in the toy profile, ViT-L/14 with OpenAI's weights in the full one. Images go in as uint8
arrays or as float tensors in [0, 1] and get the model's own preprocessing (resize of the
shorter side, centre crop, CLIP mean/std); a float image outside [0, 1] is refused, because
feeding [-1, 1] decoder outputs to CLIP (as the authors' evaluation script does) shifts every
score without an error.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch

SCORE_NAMES = ("sim_0", "sim_1", "sim_direction", "sim_image")


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def similarities(i0: torch.Tensor, i1: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor) -> dict[str, np.ndarray]:
    """The four scores from embeddings (rows are samples; any scale: each is normalised first)."""
    i0, i1, t0, t1 = (_normalize(x.float()) for x in (i0, i1, t0, t1))
    cos = torch.nn.functional.cosine_similarity
    return {"sim_0": cos(i0, t0).numpy(), "sim_1": cos(i1, t1).numpy(),
            "sim_direction": cos(i1 - i0, t1 - t0).numpy(), "sim_image": cos(i0, i1).numpy()}


def as_unit_images(images: Any) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] from uint8 (N, H, W, 3) arrays or float tensors already in [0, 1]."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"uint8 images must be (N, H, W, 3), got {images.shape}")
        return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    x = torch.as_tensor(images)
    if not x.is_floating_point():
        raise ValueError(f"images must be uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1], got {x.dtype}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"float images must be (N, 3, H, W), got {tuple(x.shape)}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        if lo < -1e-3 and hi <= 1 + 1e-3:
            hint = "they look like [-1, 1] decoder outputs: pass (x + 1) / 2"
        elif lo >= -1e-3:
            hint = "they look like 0-255 values: divide by 255"
        else:
            hint = "they look already normalised (CLIP mean/std?): pass the images themselves, in [0, 1]"
        raise ValueError(f"CLIP scores need images in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; {hint}")
    return x.float()


class ClipScorer:
    """Batched CLIP embeddings and the four similarities for an open_clip model (moved to
    `device` when one is given; else it stays where it is)."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 64, device: str | torch.device | None = None) -> None:
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.model = model.eval().to(self.device)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        self.size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1)
        self.interpolation = cfg.get("interpolation", "bicubic")

    @classmethod
    def from_profile(cls, profile: str = "toy", **kwargs: Any) -> "ClipScorer":
        """Toy CLIP (toy/smoke) or ViT-L/14 with OpenAI's weights (full)."""
        from ip2p_lib.infra.models import load_clip

        model, _, tokenizer = load_clip(profile)
        return cls(model, tokenizer, **kwargs)

    def preprocess(self, images: Any) -> torch.Tensor:
        """The model's own preprocessing on [0, 1] images: shorter side to the input size, centre
        crop, CLIP mean/std (open_clip's transform, on tensors)."""
        from torchvision.transforms.v2 import functional as F
        from torchvision.transforms import InterpolationMode

        x = as_unit_images(images)
        if tuple(x.shape[-2:]) != self.size:
            mode = InterpolationMode.BICUBIC if self.interpolation == "bicubic" else InterpolationMode.BILINEAR
            x = F.resize(x, [min(self.size)], interpolation=mode, antialias=True).clamp(0, 1)
            x = F.center_crop(x, list(self.size))
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_embeddings(self, images: Any) -> torch.Tensor:
        x = self.preprocess(images)
        out = [self.model.encode_image(x[i:i + self.batch_size].to(self.device)).float().cpu()
               for i in range(0, len(x), self.batch_size)]
        return _normalize(torch.cat(out))

    @torch.no_grad()
    def text_embeddings(self, captions: Sequence[str]) -> torch.Tensor:
        unique = sorted(set(captions))
        out = [self.model.encode_text(self.tokenizer(unique[i:i + self.batch_size]).to(self.device)).float().cpu()
               for i in range(0, len(unique), self.batch_size)]
        table = dict(zip(unique, _normalize(torch.cat(out))))
        return torch.stack([table[c] for c in captions])

    def embeddings(self, image_0: Any, image_1: Any, caption_0: Sequence[str],
                   caption_1: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit embeddings (I0, I1, T0, T1) of the pairs, each (n, dim)."""
        n = len(caption_0)
        if not (len(image_0) == len(image_1) == n == len(caption_1)):
            raise ValueError(f"need as many images as captions: {len(image_0)}, {len(image_1)}, {n}, {len(caption_1)}")
        return (self.image_embeddings(image_0), self.image_embeddings(image_1),
                self.text_embeddings(list(caption_0)), self.text_embeddings(list(caption_1)))

    def scores(self, image_0: Any, image_1: Any, caption_0: Sequence[str], caption_1: Sequence[str]) -> dict[str, np.ndarray]:
        """The four similarities of each pair (see the module docstring)."""
        return similarities(*self.embeddings(image_0, image_1, caption_0, caption_1))


def scores_table(scores: Mapping[str, np.ndarray]) -> list[dict[str, float]]:
    """Per-sample dicts {sim_0, sim_1, sim_direction, sim_image}."""
    return [dict(zip(SCORE_NAMES, map(float, row))) for row in zip(*(scores[k] for k in SCORE_NAMES))]
