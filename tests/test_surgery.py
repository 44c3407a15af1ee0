"""§3.2 surgery: the widened UNet computes exactly what the original computed."""

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel

from ip2p_lib.infra.random_models import tiny_unet_config
from ip2p_lib.surgery import SD15_UNET_CONFIG
from ip2p_lib.surgery import count_parameters, widen_conv_in, widen_conv_in_like_diffusers_example


@pytest.fixture(scope="module")
def unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    model = UNet2DConditionModel(**tiny_unet_config())
    with torch.no_grad():  # a trained conv_in has a non-zero bias; make sure ours does
        model.conv_in.bias.normal_(0, 0.5)
    return model.eval()


def _inputs(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 5, 32, generator=g)
    return z, torch.tensor([3, 700]), text


@pytest.mark.parametrize("extra_kind", ["zeros", "noise", "huge"])
def test_widened_unet_equals_the_original_for_any_extra_channels(unet, extra_kind):
    wide = widen_conv_in(copy.deepcopy(unet))
    z, t, text = _inputs()
    extra = {"zeros": torch.zeros_like(z), "noise": torch.randn_like(z), "huge": 1e4 * torch.randn_like(z)}[extra_kind]
    with torch.no_grad():
        before = unet(z, t, encoder_hidden_states=text).sample
        after = wide(torch.cat([z, extra], dim=1), t, encoder_hidden_states=text).sample
    # exact, not within a tolerance: the new weights are zeros, 0 x extra = 0 for any finite extra and
    # s + 0 = s in IEEE arithmetic, and the conv sums the original channels in the same order
    # (checked with oneDNN on and off); a leak of even 1e-12 into the new weights shows up against "huge"
    assert torch.equal(before, after)


def test_surgery_keeps_weights_bias_and_updates_config(unet):
    wide = widen_conv_in(copy.deepcopy(unet))
    assert wide.conv_in.in_channels == 8 and wide.config.in_channels == 8
    assert torch.equal(wide.conv_in.weight[:, :4], unet.conv_in.weight)
    assert torch.count_nonzero(wide.conv_in.weight[:, 4:]) == 0
    assert torch.equal(wide.conv_in.bias, unet.conv_in.bias)
    assert count_parameters(wide) - count_parameters(unet) == unet.conv_in.weight.numel()


def test_diffusers_example_variant_drops_the_bias_and_changes_the_output(unet):
    wide = widen_conv_in_like_diffusers_example(copy.deepcopy(unet))
    assert torch.equal(wide.conv_in.weight[:, :4], unet.conv_in.weight)
    assert not torch.equal(wide.conv_in.bias, unet.conv_in.bias)
    z, t, text = _inputs()
    with torch.no_grad():
        before = unet(z, t, encoder_hidden_states=text).sample
        after = wide(torch.cat([z, torch.zeros_like(z)], dim=1), t, encoder_hidden_states=text).sample
    # dropping a N(0, 0.5) bias changes conv_in by O(0.5) and the output by 0.69 (measured); float32
    # reordering could move it by ~1e-6 (oneDNN on vs off: 1.1e-6), so 1e-2 separates the two by 4 orders
    assert (before - after).abs().max() > 1e-2


def test_saved_widened_unet_reloads_as_an_8_channel_model(unet, tmp_path):
    wide = widen_conv_in(copy.deepcopy(unet))
    wide.save_pretrained(tmp_path / "unet")
    again = UNet2DConditionModel.from_pretrained(tmp_path / "unet").eval()
    assert again.config.in_channels == 8 and again.conv_in.in_channels == 8
    z, t, text = _inputs(2)
    x = torch.cat([z, torch.randn_like(z)], dim=1)
    with torch.no_grad():
        assert torch.equal(wide(x, t, encoder_hidden_states=text).sample, again(x, t, encoder_hidden_states=text).sample)
        assert torch.equal(again(x, t, encoder_hidden_states=text).sample, unet(z, t, encoder_hidden_states=text).sample)


def test_refuses_to_narrow(unet):
    with pytest.raises(ValueError):
        widen_conv_in(copy.deepcopy(unet), in_channels=2)


def test_sd15_shaped_unet_parameter_counts_on_the_meta_device():
    with torch.device("meta"):
        sd = UNet2DConditionModel(**SD15_UNET_CONFIG)
    before = count_parameters(sd)
    widen_conv_in(sd)
    assert before == 859_520_964  # Stable Diffusion 1.5's UNet
    assert count_parameters(sd) - before == 320 * 4 * 3 * 3
    assert sd.conv_in.weight.device.type == "meta"
