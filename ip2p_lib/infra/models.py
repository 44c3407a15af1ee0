"""Loaders, one per role, for both profiles: the same call gives the toy stand-in or the real model.

| role | `toy` (committed under data/toy/models/) | `full` (Hugging Face hub) |
|---|---|---|
| `load_sd` | `sd/`: toy Stable Diffusion (diffusers folder) | `stable-diffusion-v1-5/stable-diffusion-v1-5` |
| `load_clip` | `clip/`: toy CLIP (open_clip `local-dir:` folder) | open_clip `ViT-L-14`, `openai` weights |
| `load_lm` | `lm/`: toy GPT-2 and its tokenizer (transformers folder) | any causal LM id (default `openai-community/gpt2`) |

A folder or hub model that is not on this machine gives one `UserError` that says what to
download and how, instead of a traceback from deep inside a library.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.paths import data_dir

SD_FULL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CLIP_FULL = ("ViT-L-14", "openai")
CLIP_FULL_HUB = "timm/vit_large_patch14_clip_224.openai"  # where open_clip fetches those weights
LM_FULL = "openai-community/gpt2"
TOY_FOLDERS = {"sd": "sd", "clip": "clip", "lm": "lm"}
PRETRAIN_COMMAND = {"sd": "ip2p toy pretrain sd", "clip": "ip2p toy pretrain clip", "lm": "ip2p toy pretrain lm"}


def _check_profile(profile: str) -> None:
    if profile not in ("toy", "smoke", "full"):
        raise UserError(f"unknown profile {profile!r}; choose toy, smoke or full")


def toy_model_dir(role: str) -> Path:
    """The committed folder of a toy model (`sd`, `clip` or `lm`); a UserError if it is missing."""
    if role not in TOY_FOLDERS:
        raise UserError(f"unknown model role {role!r}; choose one of {', '.join(TOY_FOLDERS)}")
    folder = data_dir() / "toy" / "models" / TOY_FOLDERS[role]
    marker = {"sd": "model_index.json", "clip": "open_clip_config.json", "lm": "config.json"}[role]
    if not (folder / marker).exists():
        raise UserError(f"the toy {role} model is missing ({folder / marker} not found); "
                        f"train it with `{PRETRAIN_COMMAND[role]}` or restore data/toy/models from git")
    return folder


def _hub_error(what: str, repo: str, err: Exception) -> UserError:
    """One-line error for a full-profile model that is not on this machine (see `hub.download_hint`)."""
    from ip2p_lib.infra.hub import download_hint

    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    where = "is not in the local Hugging Face cache (offline mode)" if offline else "is not available on this machine"
    detail = str(err).splitlines()[0][:200] if str(err) else ""
    return UserError(f"{what} {where}: {download_hint(repo)} [{type(err).__name__}: {detail}]")


def load_sd(profile: str = "toy", **kwargs: Any) -> Any:
    """A `StableDiffusionPipeline`: toy SD for `toy`/`smoke`, SD 1.5 for `full` (kwargs go to
    `from_pretrained`, e.g. `torch_dtype`). The safety checker is off in both (the miniature
    world has nothing to check; the paper's data pipeline used its own NSFW filter)."""
    _check_profile(profile)
    from diffusers import StableDiffusionPipeline

    if profile != "full":
        return StableDiffusionPipeline.from_pretrained(toy_model_dir("sd"), local_files_only=True, **kwargs)
    try:
        return StableDiffusionPipeline.from_pretrained(SD_FULL, safety_checker=None, requires_safety_checker=False, **kwargs)
    except (OSError, ValueError) as err:
        raise _hub_error("Stable Diffusion 1.5", SD_FULL, err) from err


def load_open_clip_folder(folder: Path) -> tuple[Any, Any]:
    """An open_clip model and its eval transform from a `local-dir:` folder (fp32, eval mode)."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{Path(folder).resolve()}", precision="fp32")
    return model.eval(), preprocess


def load_clip(profile: str = "toy") -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) from open_clip: toy CLIP or ViT-L/14 with OpenAI's weights.
    `preprocess` maps a PIL image to the model's input (resize, crop, CLIP normalisation)."""
    import open_clip

    _check_profile(profile)
    if profile != "full":
        folder = toy_model_dir("clip")
        model, preprocess = load_open_clip_folder(folder)
        return model, preprocess, open_clip.get_tokenizer(f"local-dir:{folder.resolve()}")
    name, tag = CLIP_FULL
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag)
    except Exception as err:  # open_clip wraps hub failures in RuntimeError
        raise _hub_error(f"open_clip {name} with {tag!r} weights", CLIP_FULL_HUB, err) from err
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def load_lm(profile: str = "toy", name: str | None = None) -> tuple[Any, Any]:
    """(causal LM, tokenizer): the toy GPT-2 for `toy`/`smoke`; for `full`, the transformers model
    `name` (default `openai-community/gpt2`). The paper's GPT-3 is reached through the OpenAI
    API by the text stage's back ends, not by this loader."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _check_profile(profile)
    if profile != "full":
        folder = toy_model_dir("lm")
        return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    repo = name or LM_FULL
    try:
        return AutoModelForCausalLM.from_pretrained(repo).eval(), AutoTokenizer.from_pretrained(repo)
    except (OSError, ValueError) as err:
        raise _hub_error(f"the language model {repo}", repo, err) from err
