"""Profiles: one code path, two scales (plus `smoke`, the smallest sizes, for CI).

A notebook's first code cell (tagged `parameters`) holds its `toy` defaults. The runner
injects `profile` and the notebook's overrides for the chosen profile from
`NOTEBOOK_PARAMS`; a test checks that every override names a variable the notebook's
parameters cell defines, so an override can never be silently ignored.
"""

from __future__ import annotations

from typing import Any

from ip2p_lib.infra.errors import UserError

PROFILES: tuple[str, ...] = ("toy", "smoke", "full")

# notebook stem -> profile -> parameter overrides (toy defaults live in the notebook itself)
NOTEBOOK_PARAMS: dict[str, dict[str, dict[str, Any]]] = {
    "00_overview": {
        "toy": {},
        "smoke": {"n_grid": 3, "n_oracle": 60, "n_degraded": 40, "n_per_region": 1},
        "full": {},
    },
    "01_instructions_and_captions": {
        "toy": {},
        "smoke": {"epochs": 5, "n_eval": 60, "fallback_steps": 60},
        "full": {"seed_file": "data/full/human-written-prompts.jsonl", "n_full": 1000},
    },
    "02_prompt_to_prompt": {
        "toy": {},
        "smoke": {
            "steps": 4,
            "batch_size": 8,
            "n_pairs": 4,
            "self_ps": [0.5, 1.0],
            "replace_ps": [0.5],
            "both_ps": [0.5],
            "n_position": 4,
            "position_ps": [1.0],
            "n_move": 2,
            "move_settings": [["none", 0.0], ["self", 0.9], ["replace", 0.9]],
            "n_figure3": 2,
            "map_steps": [0, 3],
        },
        "full": {"steps": 100, "batch_size": 8, "threads": 8},
    },
    "03_clip_filtering": {
        "toy": {},
        "smoke": {"n_caption_pairs": 10, "samples_per_pair": 4, "steps": 10, "batch_size": 40, "n_drift_scenes": 6,
                  "n_gallery": 3},
        "full": {"steps": 50, "batch_size": 8},
    },
    "04_unet_surgery": {
        "toy": {},
        "smoke": {"latent_size": 8, "n_trials": 3},
        "full": {"instantiate_sd15": True},
    },
    "05_training": {
        "toy": {},
        "smoke": {"n_triples": 20, "train_steps": 6, "snapshot_every": 3, "batch_size": 4, "n_eval": 10, "eval_steps": 4,
                  "n_grid": 2},
        "full": {"n_triples": 2000, "train_steps": 200, "snapshot_every": 50, "batch_size": 8, "n_eval": 20,
                 "eval_steps": 50, "threads": 8},
    },
    "06_dual_guidance": {
        "toy": {},
        "smoke": {
            "train_steps": 150,
            "batch": 256,
            "n_samples": 150,
            "sample_steps": 40,
            "n_eval": 270,
            "edit_steps": 4,  # 3 Euler ancestral steps on the toy scheduler (squaredcos, trailing) give non-finite values
            "check_scales": [0.0, 1.5, 7.5],
        },
        "full": {"edit_model": "timbrooks/instruct-pix2pix", "edit_steps": 100, "edit_resolution": 512},
    },
    "07_results": {
        "toy": {},
        "smoke": {"threads": 1},  # each figure's own smoke sizes (`small` in the notebook)
        "full": {"data": "data/full/test", "steps": 100, "n_grid": 10, "n_tradeoff": 100, "n_gallery": 24, "threads": 8},
    },
}


def check_profile(profile: str) -> str:
    """`profile` if it is one of `PROFILES`, else a `UserError` that lists them."""
    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return profile


def notebook_parameters(stem: str, profile: str) -> dict[str, Any]:
    """The parameters papermill injects into notebook `stem` for `profile`."""
    check_profile(profile)
    overrides = NOTEBOOK_PARAMS.get(stem, {}).get(profile, {})
    return {"profile": profile, **overrides}


# Notebooks whose toy run takes under two minutes on a 2-core CPU (their wall times are in
# figures/toy/measurements.json): `make test` re-executes them with nbval and compares the
# committed outputs of their `nbval-check-output` cells; `make verify-notebooks` checks all.
NBVAL_IN_TESTS: tuple[str, ...] = ("00_overview", "04_unet_surgery", "06_dual_guidance")
