"""What every figure loads, by profile: the editor, SDEdit's text-to-image model, the CLIP scorer
and the test cases; and how a figure's sizes come from its profile.

toy / smoke: the committed toy InstructPix2Pix, toy SD, toy CLIP, and held-out toy cases (scenes
no training caption of the model describes, instructions in held-out wordings), which the oracle
judges. full: `timbrooks/instruct-pix2pix`, SD 1.5, CLIP ViT-L/14, and the test split of a
dataset folder (`--data`), scored by CLIP only.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

from ip2p_lib.editor.cli import FULL_MODEL
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.profiles import check_profile



def sizes(defaults: Mapping[str, Mapping[str, Any]], profile: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A figure's settings: its `defaults[profile]`, then `overrides` (None values ignored). An
    override that names no setting is an error, so a misspelt option is never silently dropped."""
    check_profile(profile)
    base = dict(defaults[profile])
    unknown = [k for k in overrides if k not in base]
    if unknown:
        raise TypeError(f"unknown settings {unknown}; this figure takes {', '.join(base)}")
    base.update({k: v for k, v in overrides.items() if v is not None})
    return base


def device() -> str:
    """cuda when a GPU is there, else cpu."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_model(profile: str) -> str:
    """The InstructPix2Pix model of a profile: the committed toy one, or the authors' release."""
    from ip2p_lib.infra.models import toy_model_dir

    return FULL_MODEL if check_profile(profile) == "full" else str(toy_model_dir("ip2p"))


def load_profile_editor(profile: str, model: str | None = None) -> Any:
    """The editor of `model` (default: the profile's), fp16 on a GPU in the full profile."""
    import torch

    from ip2p_lib.editor import load_editor
    from ip2p_lib.infra.models import toy_model_dir

    dev = device()
    dtype = torch.float16 if profile == "full" and dev == "cuda" else torch.float32
    parts = toy_model_dir("sd", check=False) if profile != "full" else None
    return load_editor(model or default_model(profile), parts=parts, device=dev, dtype=dtype)


def load_profile_sd(profile: str) -> Any:
    """SDEdit's text-to-image pipeline (toy SD or SD 1.5), progress bars off, on the device."""
    import torch

    from ip2p_lib.infra.models import load_sd

    dev = device()
    kwargs = {"torch_dtype": torch.float16} if profile == "full" and dev == "cuda" else {}
    pipe = load_sd(profile, **kwargs).to(dev)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.lru_cache(maxsize=2)
def load_profile_scorer(profile: str) -> Any:
    """The CLIP scorer of Figure 8's axes: toy CLIP, or ViT-L/14 (the authors' metric model).
    Loaded once per profile and process (every figure scores with it; it holds no state)."""
    from ip2p_lib.filtering import ClipScorer

    return ClipScorer.from_profile("full" if profile == "full" else "toy", device=device())


def model_training_captions(model: str | Path) -> set[str]:
    """The captions a model folder says it was trained on (`training_captions.json`, written by
    `ip2p train`); empty when it says nothing."""
    path = Path(model) / "training_captions.json"
    return set(json.loads(path.read_text())) if path.exists() else set()


def profile_cases(profile: str, n: int, seed: int = 0, data: str | None = None, model: str | None = None,
                  exclude_captions: set[str] | None = None, kinds: Any = None) -> list[Any]:
    """The test cases: toy held-out cases (scenes the model's training captions do not describe,
    plus `exclude_captions`), or the test split of the dataset folder `data` in the full profile."""
    if check_profile(profile) == "full":
        if data is None:
            raise UserError("the full profile needs a test set: --data FOLDER, a dataset folder of shards (e.g. "
                            "`ip2p pairs convert` of the authors' data); its test split is used")
        from ip2p_lib.results.metrics import dataset_cases

        return dataset_cases(data, n, resolution=512)
    from ip2p_lib.toyworld import EDIT_KINDS
    from ip2p_lib.training.evaluate import heldout_cases

    exclude = model_training_captions(model or default_model(profile)) | set(exclude_captions or ())
    return heldout_cases(n, seed=seed, kinds=kinds or EDIT_KINDS, exclude_captions=exclude)
