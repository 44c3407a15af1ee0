"""The editor against diffusers' StableDiffusionInstructPix2PixPipeline, on a tiny random folder."""

import numpy as np
import pytest
import torch
from PIL import Image

from ip2p_lib.infra.errors import UserError
from ip2p_lib.editor import InstructPix2PixEditor
from tests.fixtures_ip2p import tiny_ip2p_dir  # noqa: F401  (fixture)

STEPS, SEED, PROMPT = 6, 7, "make the sky red"


@pytest.fixture(scope="module")
def pipe(tiny_ip2p_dir):  # noqa: F811
    from diffusers import StableDiffusionInstructPix2PixPipeline

    p = StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny_ip2p_dir, safety_checker=None, requires_safety_checker=False)
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def editor(tiny_ip2p_dir):  # noqa: F811
    return InstructPix2PixEditor.from_pretrained(str(tiny_ip2p_dir))


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    """22 x 18 pixels: not a multiple of 4, so sizing is exercised."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (18, 22, 3), dtype=np.uint8))


def _diffusers(pipe, picture, scheduler, s_t, s_i):
    from diffusers import DDIMScheduler, EulerAncestralDiscreteScheduler

    cls = {"euler_ancestral": EulerAncestralDiscreteScheduler, "ddim": DDIMScheduler}[scheduler]
    pipe.scheduler = cls.from_config(pipe.scheduler.config)
    out = pipe(PROMPT, image=picture, num_inference_steps=STEPS, guidance_scale=s_t, image_guidance_scale=s_i,
               generator=torch.Generator("cpu").manual_seed(SEED), output_type="np")
    return out.images[0]


@pytest.mark.parametrize(
    "scheduler, s_t, s_i, rule",
    [
        ("euler_ancestral", 7.5, 1.5, "paper"),  # the paper's defaults
        ("ddim", 7.5, 1.5, "paper"),
        ("euler_ancestral", 7.5, 1.0, "paper"),  # s_I = 1: diffusers keeps guidance on, same as Eq. 3
        ("euler_ancestral", 1.0, 1.0, "paper"),  # s_T = s_I = 1: Eq. 3 is e(z, c_I, c_T), diffusers runs it alone
        ("euler_ancestral", 1.0, 1.5, "diffusers"),  # s_T = 1: diffusers switches guidance off, s_I ignored
        ("ddim", 7.5, 0.5, "diffusers"),  # s_I < 1: off as well
    ],
)
def test_parity_with_diffusers(pipe, editor, picture, scheduler, s_t, s_i, rule):
    ref = _diffusers(pipe, picture, scheduler, s_t, s_i)
    ours = editor.edit(picture, PROMPT, steps=STEPS, text_guidance=s_t, image_guidance=s_i, seed=SEED,
                       scheduler=scheduler, resolution=64, sizing="diffusers", guidance_rule=rule)
    assert ours.array.shape == ref.shape == (18, 22, 3)
    assert np.abs(ours.array - ref).max() <= 1e-5
    assert ref.std() > 0.01  # a real picture, not a constant


def test_paper_rule_keeps_eq3_where_diffusers_switches_guidance_off(pipe, editor, picture):
    ref = _diffusers(pipe, picture, "euler_ancestral", 1.0, 1.5)
    calls = []
    hook = editor.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        ours = editor.edit(picture, PROMPT, steps=STEPS, text_guidance=1.0, image_guidance=1.5, seed=SEED,
                           resolution=64, sizing="diffusers", guidance_rule="paper")
    finally:
        hook.remove()
    assert calls == [3] * STEPS  # three branches per step, as Eq. 3 needs for s_I != 1
    assert np.abs(ours.array - ref).max() > 1e-3


def test_branches_are_in_the_authors_order_with_an_unscaled_mode_latent(editor, picture):
    seen = {}

    def grab(module, args, kwargs, out):
        seen.setdefault("x", args[0].clone())
        seen.setdefault("text", kwargs["encoder_hidden_states"].clone())

    hook = editor.unet.register_forward_hook(grab, with_kwargs=True)
    try:
        editor.edit(picture, PROMPT, steps=1, seed=0, resolution=64, sizing="diffusers")
    finally:
        hook.remove()
    from ip2p_lib.editor.imageprep import to_model_tensor

    with torch.no_grad():
        mode = editor.vae.encode(to_model_tensor(picture)).latent_dist.mode()
        text = editor.encode_text(PROMPT)
    x = seen["x"]
    assert x.shape[0] == 3
    assert torch.equal(x[0, 4:], mode[0]) and torch.equal(x[1, 4:], mode[0])  # c_I, unscaled mode
    assert torch.count_nonzero(x[2, 4:]) == 0  # "no image" = zero latent
    assert torch.equal(x[0, :4], x[1, :4]) and torch.equal(x[1, :4], x[2, :4])  # same z_t for all three
    assert torch.equal(seen["text"][0], text[0]) and torch.equal(seen["text"][1], text[1]) and torch.equal(seen["text"][2], text[1])


def test_same_seed_same_edit_and_random_seed_is_reported(editor, picture):
    a = editor.edit(picture, PROMPT, steps=2, seed=5, resolution=64)
    b = editor.edit(picture, PROMPT, steps=2, seed=5, resolution=64)
    c = editor.edit(picture, PROMPT, steps=2, seed=None, resolution=64)
    assert np.array_equal(a.array, b.array) and isinstance(c.seed, int)


def test_authors_sizing_rounds_to_the_unet_multiple(editor, picture):
    # tiny model: VAE factor 2, two UNet levels -> multiple 4 (64 = 8 x 8 for SD 1.5)
    assert editor.size_multiple("authors") == 4 and editor.size_multiple("diffusers") == 2
    out = editor.edit(picture, PROMPT, steps=1, seed=0, resolution=40, sizing="authors")
    assert out.input_size == (44, 36) and out.image.size == (44, 36)  # short side 18 -> 36, width 22 x 2


def test_editor_rejects_bad_arguments(editor, picture):
    for kwargs in ({"instruction": "  "}, {"steps": 0}, {"text_guidance": -1.0}):
        args = {"image": picture, "instruction": PROMPT, "steps": 1, **kwargs}
        with pytest.raises(UserError):
            editor.edit(**args)


def test_a_text_to_image_unet_is_refused(tiny_ip2p_dir, tmp_path):  # noqa: F811
    from diffusers import UNet2DConditionModel

    from ip2p_lib.infra.random_models import tiny_unet_config

    ed = InstructPix2PixEditor.from_pretrained(str(tiny_ip2p_dir))
    with pytest.raises(UserError, match="not an InstructPix2Pix model"):
        InstructPix2PixEditor(UNet2DConditionModel(**tiny_unet_config()), ed.vae, ed.text_encoder, ed.tokenizer, ed.scheduler_config)
