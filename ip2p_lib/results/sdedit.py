"""SDEdit (Meng et al. 2022), the paper's baseline in Figure 8: noise the input image part way,
then denoise it towards the EDITED caption with the text-to-image model (img2img).

The authors' repository has no SDEdit code; this is diffusers' img2img pipeline built on the
text-to-image model's own parts (toy SD in the toy profile, SD 1.5 in the full one). `strength`
says how far: int(strength * steps) of the `steps`-step schedule run, from the matching noise
level. Low strength keeps the input and changes little; high strength follows the caption and
forgets the input. That trade is the curve Figure 8 draws.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ip2p_lib.training.evaluate import EditCase, EditFn, EvalReport, evaluate_edits

def sdedit_fn(sd_pipe: Any, strength: float, steps: int = 20, guidance_scale: float = 7.5) -> EditFn:
    """SDEdit as an `EditFn`: img2img on `sd_pipe`'s parts at `strength`, towards each case's
    edited caption, with classifier-free guidance `guidance_scale`. One generator per case, so a
    case's output does not depend on its batch."""
    import torch
    from diffusers import StableDiffusionImg2ImgPipeline
    from PIL import Image

    img2img = StableDiffusionImg2ImgPipeline(**sd_pipe.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)

    def run(batch: Sequence[EditCase], seeds: Sequence[int]) -> np.ndarray:
        generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        return img2img(prompt=[c.edited_caption for c in batch], image=[Image.fromarray(c.image) for c in batch],
                       strength=strength, num_inference_steps=steps, guidance_scale=guidance_scale,
                       generator=generators, output_type="np").images

    return run


def sdedit(
    sd_pipe: Any,
    cases: Sequence[EditCase],
    strength: float,
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = False,
) -> EvalReport:
    """The SDEdit baseline (`sdedit_fn`) on `cases`, judged as any editor."""
    settings = {"strength": strength, "steps": steps, "guidance_scale": guidance_scale}
    return evaluate_edits(sdedit_fn(sd_pipe, strength, steps, guidance_scale), cases, seed=seed,
                          batch_size=batch_size, name=f"SDEdit {strength:g}", settings=settings, progress=progress)
