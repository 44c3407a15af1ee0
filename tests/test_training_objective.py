"""§3.2 the training objective: the loss redone by hand, the unscaled image latent, CLIP("") as the
null text, the 5% / 5% / 5% dropout, epsilon and v targets, and clear errors for bad input."""

import copy

import pytest
import torch
from diffusers import DDPMScheduler, EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline, UNet2DConditionModel

from ip2p_lib.infra.random_models import build_tiny_ip2p, tiny_unet_config
from ip2p_lib.training.objective import (
    NullConditioning,
    apply_conditioning_dropout,
    null_text_embedding,
    training_loss,
)

B, SIDE = 32, 16  # tiny IP2P: 8x8 latents, VAE scale factor 2


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(build_tiny_ip2p(tmp_path_factory.mktemp("ip2p")))
    return {"unet": pipe.unet.eval(), "vae": pipe.vae.eval(), "text_encoder": pipe.text_encoder.eval(),
            "tokenizer": pipe.tokenizer, "scheduler": DDPMScheduler.from_config(pipe.scheduler.config)}


def _batch(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    prompts = ["make it red", "turn the circle into a square", "add a tree", "make the sky green"]
    return {"original": torch.rand(b, 3, SIDE, SIDE, generator=g) * 2 - 1,
            "edited": torch.rand(b, 3, SIDE, SIDE, generator=g) * 2 - 1,
            "edit_prompt": [prompts[i % len(prompts)] for i in range(b)]}


def _loss(parts, batch, seed=0, **overrides):
    p = {**parts, **overrides}
    return training_loss(p["unet"], p["vae"], p["text_encoder"], p["tokenizer"], p["scheduler"], batch,
                         torch.Generator().manual_seed(seed))


class RecordingUNet(torch.nn.Module):
    """The UNet, recording what it is called with."""

    def __init__(self, unet):
        super().__init__()
        self.unet, self.calls = unet, []

    @property
    def config(self):
        return self.unet.config

    @property
    def device(self):
        return self.unet.device

    @property
    def dtype(self):
        return self.unet.dtype

    def forward(self, x, t, encoder_hidden_states):
        self.calls.append((x.detach().clone(), t.clone(), encoder_hidden_states.detach().clone()))
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states)


def _clip(parts, prompts):
    tok = parts["tokenizer"]
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    return parts["text_encoder"](ids)[0]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_equals_a_hand_computation(parts, prediction_type):
    scheduler = DDPMScheduler.from_config(parts["scheduler"].config, prediction_type=prediction_type)
    batch = _batch()
    loss, info = _loss(parts, batch, seed=3, scheduler=scheduler)

    # every step again, by hand, drawing from the same generator in the documented order
    vae, unet = parts["vae"], parts["unet"]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        post_y = vae.encode(batch["edited"]).latent_dist
        z0 = (post_y.mean + post_y.std * torch.randn(post_y.mean.shape, generator=g)) * 0.18215  # sampled, scaled
        c_image = vae.encode(batch["original"]).latent_dist.mean                                  # mode, unscaled
        t = torch.randint(0, 1000, (B,), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        r = torch.rand(B, generator=g)
        a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
        z_t = a.sqrt() * z0 + (1 - a).sqrt() * eps
        drop_text, drop_image = r < 0.10, (r >= 0.05) & (r < 0.15)
        c_text = _clip(parts, batch["edit_prompt"])
        c_text[drop_text] = _clip(parts, [""])[0]
        c_image[drop_image] = 0.0
        pred = unet(torch.cat([z_t, c_image], dim=1), t, encoder_hidden_states=c_text).sample
        target = eps if prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * z0
        expected = ((pred - target) ** 2).mean()

    assert drop_text.any() and drop_image.any() and (drop_text != drop_image).any()  # the seed exercises dropout
    assert torch.equal(info["timesteps"], t) and torch.equal(info["r"], r)
    assert torch.equal(info["drop_text"], drop_text) and torch.equal(info["drop_image"], drop_image)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)


def test_epsilon_and_v_targets_give_different_losses_from_the_same_draws(parts):
    batch = _batch()
    eps_loss, eps_info = _loss(parts, batch)
    v_sched = DDPMScheduler.from_config(parts["scheduler"].config, prediction_type="v_prediction")
    v_loss, v_info = _loss(parts, batch, scheduler=v_sched)
    assert torch.equal(eps_info["timesteps"], v_info["timesteps"])
    assert not torch.isclose(eps_loss, v_loss)


def test_image_conditioning_is_the_unscaled_mode(parts):
    batch = _batch()
    rec = RecordingUNet(parts["unet"])
    _, info = _loss(parts, batch, seed=3, unet=rec)
    (x, _, _), = rec.calls
    keep = ~info["drop_image"]
    assert keep.any() and info["drop_image"].any()
    with torch.no_grad():
        post = parts["vae"].encode(batch["original"]).latent_dist
    got = x[:, 4:]
    assert torch.equal(got[keep], post.mode()[keep])                       # the mode, unscaled
    assert not torch.allclose(got[keep], (post.mode() * 0.18215)[keep])   # not scaled
    sampled = post.sample(torch.Generator().manual_seed(3))
    assert not torch.allclose(got[keep], sampled[keep], atol=1e-3)        # not sampled
    assert torch.equal(got[info["drop_image"]], torch.zeros_like(got[info["drop_image"]]))  # null image = 0


def test_null_text_is_the_embedding_of_the_empty_prompt_not_zeros(parts):
    null = null_text_embedding(parts["text_encoder"], parts["tokenizer"])
    with torch.no_grad():
        assert torch.equal(null, _clip(parts, [""]))
    assert null.shape == (1, parts["tokenizer"].model_max_length, 32)
    assert null.abs().mean() > 0.1  # far from zeros (diffusers #7920)

    batch = _batch()
    rec = RecordingUNet(parts["unet"])
    _, info = _loss(parts, batch, seed=3, unet=rec)
    (_, _, text), = rec.calls
    with torch.no_grad():
        prompts = _clip(parts, batch["edit_prompt"])
    assert torch.equal(text[info["drop_text"]], null.expand(int(info["drop_text"].sum()), -1, -1))
    assert torch.equal(text[~info["drop_text"]], prompts[~info["drop_text"]])

    # zeros as the null text would change the loss: the choice matters
    zeros = NullConditioning(text=torch.zeros_like(null))
    p = parts
    a = training_loss(p["unet"], p["vae"], p["text_encoder"], p["tokenizer"], p["scheduler"], batch,
                      torch.Generator().manual_seed(3))[0]
    z = training_loss(p["unet"], p["vae"], p["text_encoder"], p["tokenizer"], p["scheduler"], batch,
                      torch.Generator().manual_seed(3), null=zeros)[0]
    assert not torch.isclose(a, z)


def test_dropout_masks_follow_the_paper_on_a_fixed_r():
    r = torch.tensor([0.00, 0.049, 0.05, 0.099, 0.10, 0.149, 0.15, 0.5, 0.999])
    text, image = torch.randn(9, 4, 6), torch.randn(9, 4, 2, 2)
    null = NullConditioning(text=torch.full((1, 4, 6), 7.0))
    t2, i2, drop_text, drop_image = apply_conditioning_dropout(text, image, null, r)
    assert drop_text.tolist() == [True, True, True, True, False, False, False, False, False]
    assert drop_image.tolist() == [False, False, True, True, True, True, False, False, False]
    assert torch.equal(t2[drop_text], torch.full((4, 4, 6), 7.0)) and torch.equal(t2[~drop_text], text[~drop_text])
    assert torch.equal(i2[drop_image], torch.zeros(4, 4, 2, 2)) and torch.equal(i2[~drop_image], image[~drop_image])

    # over an even grid of r: 5% text only, 5% both, 5% image only, 85% neither
    r = (torch.arange(10_000) + 0.5) / 10_000
    _, _, dt, di = apply_conditioning_dropout(torch.zeros(10_000, 4, 6), torch.zeros(10_000, 1, 1, 1), null, r)
    assert [int((dt & ~di).sum()), int((dt & di).sum()), int((~dt & di).sum()), int((~dt & ~di).sum())] == \
        [500, 500, 500, 8500]


def test_loss_has_gradients_for_the_unet_only(parts):
    unet = copy.deepcopy(parts["unet"])
    loss, _ = _loss(parts, _batch(b=4), unet=unet)
    loss.backward()
    assert unet.conv_in.weight.grad is not None and unet.conv_in.weight.grad[:, 4:].abs().sum() > 0
    assert all(p.grad is None for p in parts["vae"].parameters())
    assert all(p.grad is None for p in parts["text_encoder"].parameters())


@pytest.mark.parametrize("bad, message", [
    (lambda b: {k: v for k, v in b.items() if k != "edited"}, "lacks key"),
    (lambda b: {**b, "original": b["original"][:, :1]}, "(B, 3, H, W)"),
    (lambda b: {**b, "edited": b["edited"][..., :8]}, "differ in shape"),
    (lambda b: {**b, "edit_prompt": "make it red"}, "list of strings"),
    (lambda b: {**b, "edit_prompt": b["edit_prompt"][:1]}, "edit prompts for"),
])
def test_bad_batch_raises_a_clear_error(parts, bad, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _loss(parts, bad(_batch(b=2)))


def test_a_four_channel_unet_or_a_sampling_scheduler_is_refused(parts):
    four = UNet2DConditionModel(**tiny_unet_config(in_channels=4))
    with pytest.raises(ValueError, match="widen_conv_in"):
        _loss(parts, _batch(b=2), unet=four)
    euler = EulerAncestralDiscreteScheduler.from_config(parts["scheduler"].config)
    with pytest.raises(ValueError, match="DDPMScheduler"):
        _loss(parts, _batch(b=2), scheduler=euler)
    sample = DDPMScheduler.from_config(parts["scheduler"].config, prediction_type="sample")
    with pytest.raises(ValueError, match="prediction type"):
        _loss(parts, _batch(b=2), scheduler=sample)
