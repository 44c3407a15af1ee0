"""The cost of the paper's training (ip2p_lib.training.cost): the counter against hand counts, the
scaling with batch and steps, and the 256 px UNet against the 512 px count of p2p.cost. Meta device
and small CPU models only: nothing is downloaded."""

import pytest
import torch
from torch import nn

from ip2p_lib.training import cost


@pytest.fixture(scope="module")
def paper():
    return cost.paper_training_cost()


def test_forward_and_backward_of_a_small_conv_linear_model_match_a_hand_count():
    b, c_in, c_out, k, side, out = 3, 3, 8, 3, 6, 10
    model = nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(c_out * side**2, out))
    x = torch.randn(b, c_in, side, side)  # the input needs no gradient, as the UNet's input
    conv = 2 * b * c_out * c_in * k * k * side * side  # 2 FLOPs per multiply-add, per output pixel
    linear = 2 * b * (c_out * side**2) * out
    fwd, bwd = cost.forward_backward_flops(model, x)
    assert fwd == conv + linear
    # backward: the conv's weight gradient only (its input needs none); the linear's input and weight gradients
    assert bwd == conv + 2 * linear
    with torch.device("meta"):  # the same count where nothing is computed
        meta = nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(c_out * side**2, out))
        assert cost.forward_backward_flops(meta, torch.randn(b, c_in, side, side)) == (fwd, bwd)


def test_a_unet_batch_costs_batch_times_one_example():
    # the estimate multiplies one counted example by the batch: check that on a real (tiny) UNet
    from diffusers import UNet2DConditionModel

    from ip2p_lib.infra.random_models import tiny_unet_config

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**tiny_unet_config(in_channels=8))
    counts = []
    for rows in (1, 3):
        unet.zero_grad()
        counts.append(cost.forward_backward_flops(unet, torch.randn(rows, 8, 8, 8), torch.tensor([500] * rows),
                                                  encoder_hidden_states=torch.randn(rows, 7, 32)))
    (f1, b1), (f3, b3) = counts
    assert f3 == 3 * f1 and b3 == 3 * b1
    assert 1.5 < b1 / f1 <= 2.0  # backward ~ 2x forward: input and weight gradients, none for the input


def test_the_total_scales_linearly_with_batch_and_steps(paper):
    from dataclasses import replace

    assert replace(paper, batch=2 * paper.batch).total() == pytest.approx(2 * paper.total(), rel=1e-12)
    assert replace(paper, steps=3 * paper.steps).total() == pytest.approx(3 * paper.total(), rel=1e-12)
    assert paper.total() == paper.steps * paper.batch * (
        paper.unet_forward + paper.unet_backward + 2 * paper.vae_encode + paper.text_encode)
    assert paper.total(recompute=True) - paper.total() == pytest.approx(paper.steps * paper.batch * paper.unet_forward)


def test_the_256_px_unet_is_the_512_px_count_of_p2p_cost_rescaled(paper):
    # p2p.cost counts one 4-channel row at a 64x64 latent (512 px, ~0.80 TFLOP). At a 32x32 latent
    # (256 px): convolutions and per-pixel layers cost 1/4, self-attention's QK^T and PV (N^2 in the
    # N latent pixels) 1/16, the cross-attention keys and values of the 77 text tokens the same.
    from ip2p_lib.infra.models import SD15_UNET_CONFIG
    from ip2p_lib.p2p.cost import sd15_flops

    row_512 = sd15_flops()["unet_row"]
    assert row_512 == pytest.approx(0.80e12, rel=0.01)
    assert SD15_UNET_CONFIG["block_out_channels"] == (320, 640, 1280, 1280)
    # (latent downscale, channels, transformer blocks): 2 down + 3 up at 320, 640, 1280; 1 in the middle
    blocks = [(1, 320, 5), (2, 640, 5), (4, 1280, 5), (8, 1280, 1)]

    def self_attention(side):  # QK^T and PV: 2 N^2 C each
        return sum(n * 4 * ((side // s) ** 2) ** 2 * c for s, c, n in blocks)

    text_kv = sum(n * 2 * (2 * 77 * 768 * c) for _, c, n in blocks)  # to_k, to_v of the 77 text tokens
    conv_in_extra = 2 * 320 * 4 * 9 * 64 * 64  # 4 more input channels at 64x64
    row_512_8ch = row_512 + conv_in_extra
    per_pixel = row_512_8ch - text_kv - self_attention(64)
    expected_256 = per_pixel / 4 + self_attention(32) + text_kv
    # what remains unscaled (time embedding and its projections in each resnet, ~56 MFLOP) is < 1e-3
    assert paper.unet_forward == pytest.approx(expected_256, rel=1e-3)
    assert paper.resolution == 256 and paper.steps == 10_000 and paper.batch == 1024


def test_the_text_encoder_count_is_clip_l_by_hand(paper):
    # 12 layers of width 768, MLP 3072, 77 tokens: q, k, v, o and the MLP, plus QK^T and PV
    d, mlp, t, layers = 768, 3072, 77, 12
    per_layer = 4 * 2 * t * d * d + 2 * 2 * t * d * mlp + 2 * 2 * t * t * d
    assert paper.text_encode == layers * per_layer


def test_the_paper_numbers_and_the_table(paper):
    gpu_seconds = 25.5 * 3600 * 8
    assert paper.tflops_per_gpu() == pytest.approx(paper.total() / gpu_seconds / 1e12)
    assert paper.utilisation(156.0) == pytest.approx(paper.tflops_per_gpu() / 156.0)
    assert 1.9 < paper.unet_backward / paper.unet_forward < 2.0
    # the frozen VAE encoder (two images) is about half of an example's FLOPs at 256 px
    assert 0.4 < 2 * paper.vae_encode / paper.per_example < 0.6
    table = paper.table()
    assert table.startswith("| quantity | value |") and "TF32" in table and "fp16/bf16" in table
    assert f"{paper.tflops_per_gpu():.1f} TFLOP/s" in table
