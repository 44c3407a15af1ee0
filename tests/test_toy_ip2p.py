"""The committed toy InstructPix2Pix (`data/toy/models/ip2p`): its folder, `ip2p edit --model toy`, and that it edits.

The quality floors are far below what the card measures on 500 cases, so that only a broken model,
editor or loader (not chance over a few cases) fails them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ip2p_lib.cli import main
from ip2p_lib.infra.models import toy_model_dir
from ip2p_lib.toyworld.oracle import judge

MODEL = toy_model_dir("ip2p", check=False)
N_CASES = 20


@pytest.fixture(scope="module")
def cases():
    from ip2p_lib.training.evaluate import heldout_cases

    exclude = set(json.loads((MODEL / "training_captions.json").read_text()))
    return heldout_cases(N_CASES, seed=7, kinds=("recolor", "background"), exclude_captions=exclude)


def test_the_folder_is_within_its_budget_with_its_card():
    size = sum(f.stat().st_size for f in MODEL.rglob("*") if f.is_file())
    assert size <= 15 * 2**20, f"{size / 2**20:.1f} MiB"
    card = (MODEL / "README.md").read_text()
    assert "ip2p train --data data/generated/toy/train --init data/toy/models/sd" in card
    assert "## Quality" in card and "## Run" in card
    info = json.loads((MODEL / "training.json").read_text())
    assert info["save_precision"] == "fp16" and info["result"]["effective_batch"] == 32
    from safetensors import safe_open

    with safe_open(MODEL / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor("conv_in.weight").shape[1] == 8


def test_ip2p_edit_model_toy_uses_it(cases, tmp_path):
    case = cases[0]
    Image.fromarray(case.image).save(tmp_path / "in.png")
    torch.set_num_threads(1)
    assert main(["edit", str(tmp_path / "in.png"), case.instruction, "-o", str(tmp_path / "out.png"), "--model", "toy",
                 "--steps", "20", "--seed", "0"]) == 0
    out = np.asarray(Image.open(tmp_path / "out.png"))
    assert out.shape == case.image.shape and not np.array_equal(out, case.image)
    assert judge(out).found


def test_it_recolours_and_changes_backgrounds_of_held_out_scenes(cases):
    from ip2p_lib.editor import InstructPix2PixEditor
    from ip2p_lib.training.evaluate import evaluate_edits

    torch.set_num_threads(1)
    editor = InstructPix2PixEditor.from_pretrained(str(MODEL))
    report = evaluate_edits(editor, cases, s_T=7.5, s_I=1.5, steps=20, seed=0, batch_size=N_CASES)
    rates = report.rates()
    assert rates["edit_success"] >= 0.8, report.table()
    assert rates["success"] >= 0.2, report.table()  # the input returned scores 0 here
