"""The samplers an edit can use: diffusers schedulers by short name (the paper's is Euler ancestral)."""

from __future__ import annotations

from typing import Any

from ip2p_lib.infra.errors import UserError


SCHEDULERS: dict[str, str] = {
    "euler_ancestral": "EulerAncestralDiscreteScheduler",  # the paper's sampler (k-diffusion's euler_ancestral)
    "euler": "EulerDiscreteScheduler",
    "ddim": "DDIMScheduler",
    "ddpm": "DDPMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "dpm_solver": "DPMSolverMultistepScheduler",
    "unipc": "UniPCMultistepScheduler",
}


def scheduler_class(name: str) -> Any:
    """The diffusers scheduler class for `name`: a key of `SCHEDULERS` or a class name."""
    import diffusers

    cls_name = SCHEDULERS.get(name.lower().replace("-", "_"), name)
    cls = getattr(diffusers, cls_name, None)
    if cls is None or not cls_name.endswith("Scheduler"):
        raise UserError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)} or a diffusers scheduler class name")
    return cls


def make_scheduler(name: str, config: Any) -> Any:
    """A fresh scheduler of kind `name` from a model folder's scheduler `config` (fresh,
    because schedulers keep step state)."""
    return scheduler_class(name).from_config(config)
