"""The cost model of the paper's pair generation (ip2p_lib.p2p.cost): the FLOP count it rests on
scales with the rows of the CFG batch as the formula assumes, and the arithmetic is the formula."""

import pytest
import torch

from ip2p_lib.p2p import cost


def test_generation_cost_is_steps_times_rows_times_a_row_plus_two_decodes():
    flops = {"unet_row": 3.0e12, "vae_decode": 5.0e12}
    one = cost.pair_flops(flops, steps=10)
    assert one == 10 * 4 * 3.0e12 + 2 * 5.0e12
    run = cost.generation_cost(flops, steps=10, caption_pairs=7, samples=3, tflops=100.0)
    assert run["pairs"] == 21 and run["total_flops"] == 21 * one
    assert run["a100_hours"] == pytest.approx(21 * one / 100e12 / 3600)
    assert run["a100_seconds_per_pair"] * run["pairs"] / 3600 == pytest.approx(run["a100_hours"])


def test_a_cfg_batch_of_four_rows_costs_four_rows():
    # pair_flops multiplies one counted row by 4; count a batch of 4 on the meta device and compare.
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    from ip2p_lib.infra.models import SD15_UNET_CONFIG

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
        counts = []
        for rows in (1, 4):
            with FlopCounterMode(display=False) as count:
                unet(torch.randn(rows, 4, 64, 64), torch.tensor([500] * rows),
                     encoder_hidden_states=torch.randn(rows, 77, 768))
            counts.append(count.get_total_flops())
    assert counts[1] == 4 * counts[0]
    assert cost.sd15_flops()["unet_row"] == counts[0]


def test_the_count_on_the_meta_device_is_the_count_of_the_real_model():
    # sd15_flops counts a model built without weights; a small real model counted both ways agrees.
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from ip2p_lib.infra.random_models import tiny_unet_config

    config = tiny_unet_config()
    vae_config = {"block_out_channels": (8, 16), "down_block_types": ("DownEncoderBlock2D",) * 2,
                  "up_block_types": ("UpDecoderBlock2D",) * 2, "latent_channels": 4, "norm_num_groups": 4}
    torch.manual_seed(0)
    real = cost.sd_flops(UNet2DConditionModel(**config), AutoencoderKL(**vae_config), tokens=9)
    with torch.device("meta"):
        meta = cost.sd_flops(UNet2DConditionModel(**config), AutoencoderKL(**vae_config), tokens=9)
    assert real == meta and real["unet_row"] > 0 and real["vae_decode"] > 0
