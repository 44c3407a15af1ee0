"""Training data for the stand-ins: rendered scenes, their captions, and descriptive text.

Everything is generated on the fly from a seeded generator, so there is no dataset on disk
and no two steps see the same batch. Held-out evaluation sets use seeds that training
never draws (training uses `np.random.default_rng([seed, step])`, evaluation plain
integer seeds >= `HELD_OUT_SEED`).
"""

from __future__ import annotations

import numpy as np
import torch

from ip2p_lib.toyworld import Scene, random_caption, render, sample_scene, sample_scenes

HELD_OUT_SEED = 10_000


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float32 (N, 3, H, W) in [-1, 1] (what SD's VAE expects)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def scene_batch(rng: np.random.Generator, n: int) -> tuple[list[Scene], torch.Tensor]:
    """`n` random scenes and their renders as a [-1, 1] tensor."""
    scenes = [sample_scene(rng) for _ in range(n)]
    return scenes, images_to_tensor(np.stack([render(s) for s in scenes]))


def captioned_batch(rng: np.random.Generator, n: int, p_position: float = 0.5) -> tuple[list[Scene], torch.Tensor, list[str]]:
    """Scenes, renders and one random caption variant each (CLIP and SD training)."""
    scenes, images = scene_batch(rng, n)
    return scenes, images, [random_caption(s, rng, p_position) for s in scenes]


def held_out_scenes(n: int, offset: int = 0) -> list[Scene]:
    """`n` evaluation scenes from a seed no training step uses."""
    return sample_scenes(n, seed=HELD_OUT_SEED + offset)
