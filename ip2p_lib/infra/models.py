"""The one model loader: a local folder or a Hugging Face hub id, and the toy stand-ins by role.

| role | `toy` (committed under data/toy/models/) | `full` (Hugging Face hub) |
|---|---|---|
| `load_sd` | `sd/`: toy Stable Diffusion (diffusers folder) | `stable-diffusion-v1-5/stable-diffusion-v1-5` |
| `load_clip` | `clip/`: toy CLIP (open_clip `local-dir:` folder) | open_clip `ViT-L-14`, `openai` weights |
| `load_lm` | `lm/`: toy GPT-2 and its tokenizer (transformers folder) | any causal LM id (default `openai-community/gpt2`) |

Everything goes through the library's own `from_pretrained(name)` (or open_clip's loader);
this module only decides what a name means and turns "not cached and offline" (or "no such
folder") into one `UserError` that says what to download and how, instead of a stack trace
from deep inside huggingface_hub. `toy_model_dir` is the one place that names the toy folders.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.paths import data_dir
from ip2p_lib.infra.profiles import check_profile

SD_FULL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CLIP_FULL = ("ViT-L-14", "openai")
CLIP_FULL_HUB = "timm/vit_large_patch14_clip_224.openai"  # where open_clip fetches those weights
LM_FULL = "openai-community/gpt2"

# Stable Diffusion v1.5's architecture (SD_FULL's unet/config.json and vae/config.json, the keys that
# differ from diffusers' defaults): to count its parameters and FLOPs on the meta device, without
# downloading anything (notebooks 02 and 04). The generator of §3.1.2 and the base of §3.2 alike.
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "norm_num_groups": 32,
}
SD15_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "sample_size": 512,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
}
# SD 1.5's text encoder, OpenAI CLIP ViT-L/14's text tower (SD_FULL's text_encoder/config.json, the keys
# that differ from transformers' CLIPTextConfig defaults): 12 layers of width 768, 77 tokens.
SD15_TEXT_ENCODER_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
}

_TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub.constants.ENV_VARS_TRUE_VALUES


@dataclass(frozen=True)
class ToyModel:
    """Where a toy model lives under `data/toy/models/`, a file every complete copy has, and
    what makes it."""

    folder: str
    marker: str
    made_by: str


TOY_MODELS: dict[str, ToyModel] = {
    "sd": ToyModel("sd", "model_index.json", "`ip2p toy pretrain sd`"),
    "vae": ToyModel("sd/vae", "config.json", "`ip2p toy pretrain vae`"),
    "clip": ToyModel("clip", "open_clip_config.json", "`ip2p toy pretrain clip`"),
    "lm": ToyModel("lm", "config.json", "`ip2p toy pretrain lm`"),
    "ip2p": ToyModel("ip2p", "model_index.json", "notebook 05_training"),
}


def toy_model_dir(role: str, check: bool = True) -> Path:
    """The folder of the toy model `role` (sd, vae, clip, lm or ip2p) under data/toy/models/.

    With `check`, a folder without its marker file is a `UserError` that names what makes the
    model; `check=False` only names the place (an export target, or a notebook's "if trained")."""
    if role not in TOY_MODELS:
        raise UserError(f"unknown model role {role!r}; choose one of {', '.join(TOY_MODELS)}")
    toy = TOY_MODELS[role]
    folder = data_dir() / "toy" / "models" / toy.folder
    if check and not (folder / toy.marker).exists():
        raise UserError(f"the toy {role} model is missing ({folder / toy.marker} not found); "
                        f"make it with {toy.made_by} or restore data/toy/models from git")
    return folder


# ---------------------------------------------------------------- hub ids and folders


def is_offline() -> bool:
    """Whether huggingface_hub works offline: HF_HUB_OFFLINE (else TRANSFORMERS_OFFLINE) is one
    of 1/true/yes/on in any case, read exactly as `huggingface_hub.constants` reads it."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return value is not None and value.upper() in _TRUE


def download_hint(repo_id: str) -> str:
    """The one instruction for fetching `repo_id` into the local cache."""
    return (
        f"download it once with `hf download {repo_id}` (older huggingface_hub: "
        f"`huggingface-cli download {repo_id}`) on a machine with network access and "
        "HF_HUB_OFFLINE unset, then run again"
    )


def hub_error(what: str, repo_id: str, err: Exception) -> UserError:
    """The one-line error for a hub model that is not on this machine: what, why, how to get it."""
    where = "is not in the local Hugging Face cache (offline mode)" if is_offline() else "could not be loaded from the hub"
    detail = str(err).splitlines()[0][:200] if str(err) else ""
    return UserError(f"{what} {repo_id!r} {where}: {download_hint(repo_id)} [{type(err).__name__}: {detail}]")


def _looks_like_path(name: str) -> bool:
    """True for names a user meant as a folder: absolute, ./ ../ ~ or ending in a separator."""
    return name.startswith(("/", "./", "../", "~", "\\")) or name.endswith(("/", os.sep)) or name.count("/") > 1


def from_pretrained(cls: Any, name_or_path: str | Path, what: str = "model", required_file: str | None = None,
                    **kwargs: Any) -> Any:
    """`cls.from_pretrained(name_or_path, **kwargs)` for a local folder or a hub id.

    `what` names the model in error messages; `required_file` (e.g. "model_index.json" for a
    pipeline) must exist in a local folder. Raises `UserError` when the folder is missing,
    incomplete or unreadable, the name is not a valid hub id, or the hub id is neither cached
    nor downloadable (offline).
    """
    name = str(name_or_path)
    local = Path(name).expanduser()
    if local.is_dir():
        if required_file and not (local / required_file).exists():
            raise UserError(f"{local} is not a {what} folder: it has no {required_file}")
        try:
            return cls.from_pretrained(str(local), **kwargs)
        except OSError as err:
            raise UserError(f"cannot load a {what} from {local}: {str(err).splitlines()[0] if str(err) else err!r}") from err
    if local.exists():
        raise UserError(f"{name} is a file, not a {what} folder or a hub id")
    if _looks_like_path(name):
        raise UserError(f"no {what} folder at {name}")

    from huggingface_hub.errors import HFValidationError, HfHubHTTPError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise UserError(f"{name!r} is neither a local {what} folder nor a valid hub id (owner/name)") from None
    try:
        return cls.from_pretrained(name, **kwargs)
    except (OSError, ValueError, HfHubHTTPError) as err:
        raise hub_error(what, name, err) from err


# ---------------------------------------------------------------- the models by role


def load_sd(profile: str = "toy", **kwargs: Any) -> Any:
    """A `StableDiffusionPipeline`: toy SD for `toy`/`smoke`, SD 1.5 for `full` (kwargs go to
    `from_pretrained`, e.g. `torch_dtype`). The safety checker is off in both (the miniature
    world has nothing to check; the paper's data pipeline used its own NSFW filter)."""
    check_profile(profile)
    from diffusers import StableDiffusionPipeline

    if profile != "full":
        return StableDiffusionPipeline.from_pretrained(toy_model_dir("sd"), local_files_only=True, **kwargs)
    return from_pretrained(StableDiffusionPipeline, SD_FULL, what="Stable Diffusion 1.5",
                           safety_checker=None, requires_safety_checker=False, **kwargs)


def load_open_clip_folder(folder: Path) -> tuple[Any, Any]:
    """An open_clip model and its eval transform from a `local-dir:` folder (fp32, eval mode)."""
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{Path(folder).resolve()}", precision="fp32")
    return model.eval(), preprocess


def load_clip(profile: str = "toy") -> tuple[Any, Any, Any]:
    """(model, preprocess, tokenizer) from open_clip: toy CLIP or ViT-L/14 with OpenAI's weights.
    `preprocess` maps a PIL image to the model's input (resize, crop, CLIP normalisation)."""
    import open_clip

    check_profile(profile)
    if profile != "full":
        folder = toy_model_dir("clip")
        model, preprocess = load_open_clip_folder(folder)
        return model, preprocess, open_clip.get_tokenizer(f"local-dir:{folder.resolve()}")
    name, tag = CLIP_FULL
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag)
    except Exception as err:  # open_clip wraps hub failures in RuntimeError
        raise hub_error(f"open_clip {name} with {tag!r} weights from", CLIP_FULL_HUB, err) from err
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


def load_lm(profile: str = "toy", name: str | None = None) -> tuple[Any, Any]:
    """(causal LM, tokenizer): the toy GPT-2 for `toy`/`smoke`; for `full`, the transformers model
    `name` (default `openai-community/gpt2`). The paper's GPT-3 is reached through the OpenAI
    API by the text stage's back ends, not by this loader."""
    check_profile(profile)
    return load_causal_lm_folder(toy_model_dir("lm") if profile != "full" else (name or LM_FULL))


def load_causal_lm_folder(source: str | Path) -> tuple[Any, Any]:
    """(causal LM in eval mode, its tokenizer) from a folder or hub id, through `from_pretrained`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = from_pretrained(AutoModelForCausalLM, source, what="causal LM", required_file="config.json")
    return model.eval(), from_pretrained(AutoTokenizer, source, what="tokenizer")
