"""The editor against diffusers' StableDiffusionInstructPix2PixPipeline, on a tiny random folder."""

import numpy as np
import pytest
import torch
from PIL import Image

from ip2p_lib.infra.errors import UserError
from ip2p_lib.editor import InstructPix2PixEditor
from tests.fixtures_ip2p import tiny_ip2p_dir  # noqa: F401  (fixture)

STEPS, SEED, PROMPT = 6, 7, "make the sky red"

# Parity tolerance, derived rather than guessed.
# Ours and diffusers do the same float32 arithmetic in different orders (we encode
# [instruction, ""] as one batch, diffusers as two batches of one, so the text GEMMs are blocked
# differently: the hidden states differ by 4.8e-7, 1.8e-7 relative, about 3 u with u = 2^-24 = 6e-8
# per rounding). Each result is within its own float32 rounding error e of the exact one, so
# |ours - diffusers| <= 2 e. Along the path e grows:
#   - each UNet call: a few u per layer over ~25 layers (conv_in; 2 down, mid and 2 up blocks of
#     resnets and attention; conv_out), ~1e-6 relative;
#   - Eq. 3 weights the branches 1 - s_I, s_I - s_T, s_T, so independent branch errors grow by up to
#     |1 - s_I| + |s_I - s_T| + |s_T| = 0.5 + 6 + 7.5 = 14 at the paper's (s_I, s_T) = (1.5, 7.5), 1 unguided;
#   - the sampler: DDIM's first x_0 estimate divides e~ by sqrt(alpha_bar_999) = 0.069 (x 14.6), and
#     each of the 6 steps feeds its error back into the next UNet call;
#   - the decoder (/ 0.18215, then x 0.5) maps latents to pixels.
# The UNet's Lipschitz constant is unknown, so a worst-case product of these is no bound; instead
# `test_float32_error_of_the_most_amplifying_path` measures e against float64 on the same path:
# 6.3e-5 for DDIM at the paper's scales (the largest of the parity cases; 1.3e-6 for Euler
# ancestral, 2e-6 unguided), i.e. ~1000 u, and asserts e <= PARITY_TOL / 16.
# PARITY_TOL is one 8-bit level, what `ip2p edit` writes: 1/255 = 3.9e-3. It is 30x above the 2 e
# measured here (room for CPUs and BLAS releases whose sums round differently; the premise test still
# passes on a CPU 4x worse than this one), and 7x below the smallest real bug we measured (a missed
# s_I moves pixels by 2.9e-2; a swapped scale or branch, or the text term's sign, by 0.3 to 0.9:
# `test_parity_tolerance_catches_guidance_bugs`).
PARITY_TOL = 1 / 255
FAR = 5 * PARITY_TOL  # a difference this large is another computation, not rounding


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
    ours = editor.edit(picture, PROMPT, steps=STEPS, s_text=s_t, s_image=s_i, seed=SEED,
                       scheduler=scheduler, resolution=64, sizing="diffusers", guidance_rule=rule)
    assert ours.array.shape == ref.shape == (18, 22, 3)
    assert np.abs(ours.array - ref).max() <= PARITY_TOL  # see PARITY_TOL
    levels = np.abs(np.asarray(ours.image, dtype=int) - (ref * 255).round().astype(int))
    assert levels.max() <= 1  # the 8-bit picture `ip2p edit` saves: at most one level apart
    assert ref.std() > 0.01  # a real picture, not a constant


def test_float32_error_of_the_most_amplifying_path(editor, tiny_ip2p_dir, picture):  # noqa: F811
    """The premise of PARITY_TOL: on this CPU, float32 is within PARITY_TOL / 16 of float64 on the
    path that amplifies rounding most (DDIM, paper scales), so two float32 runs differ by <= 1/8 of it."""
    editor64 = InstructPix2PixEditor.from_pretrained(str(tiny_ip2p_dir), dtype=torch.float64)
    assert editor64.unet.dtype == editor64.vae.dtype == editor64.text_encoder.dtype == torch.float64
    kwargs = dict(steps=STEPS, s_text=7.5, s_image=1.5, seed=SEED, scheduler="ddim", resolution=64, sizing="diffusers")
    ours = editor.edit(picture, PROMPT, **kwargs)
    state = editor64.prepare(picture, PROMPT, **kwargs)
    latents = editor.prepare(picture, PROMPT, **kwargs).latents.double()  # the same z_T (float64 draws differ)
    for t in state.timesteps:  # DDIM with eta = 0 draws nothing else
        latents = editor64.denoise_step(state, latents, t)
    exact = editor64.decode(latents)[0].permute(1, 2, 0).numpy()
    error = np.abs(ours.array - exact).max()  # 6.3e-5 on the machine that set PARITY_TOL
    assert 0 < error <= PARITY_TOL / 16, error


@pytest.mark.parametrize(
    "bug",
    [
        lambda e_ti, e_i, e_0, s_image, s_text: e_0 + s_image * (e_ti - e_i) + s_text * (e_i - e_0),  # s_I and s_T swapped
        lambda e_ti, e_i, e_0, s_image, s_text: e_0 - s_text * (e_ti - e_i) + s_image * (e_i - e_0),  # text term's sign
        lambda e_ti, e_i, e_0, s_image, s_text: e_0 + s_text * (e_ti - e_i) + (e_i - e_0),  # s_I missed
        lambda e_ti, e_i, e_0, s_image, s_text: e_0 + (e_ti - e_i) + s_image * (e_i - e_0),  # s_T missed
        lambda e_ti, e_i, e_0, s_image, s_text: e_i + s_text * (e_ti - e_0) + s_image * (e_0 - e_i),  # branches (0, c_I), (0, 0) swapped
        lambda e_ti, e_i, e_0, s_image, s_text: e_0 + s_text * (e_i - e_ti) + s_image * (e_ti - e_0),  # branches (c_T, c_I), (0, c_I) swapped
    ],
    ids=["scales-swapped", "text-sign", "s_I-missed", "s_T-missed", "image-uncond-swapped", "text-image-swapped"],
)
def test_parity_tolerance_catches_guidance_bugs(pipe, editor, picture, monkeypatch, bug):
    """A wrong Eq. 3 moves the picture far beyond PARITY_TOL, so the parity test would fail."""
    import ip2p_lib.editor.editor as editor_module

    ref = _diffusers(pipe, picture, "euler_ancestral", 7.5, 1.5)
    monkeypatch.setattr(editor_module, "dual_cfg", bug)
    wrong = editor.edit(picture, PROMPT, steps=STEPS, s_text=7.5, s_image=1.5, seed=SEED,
                        resolution=64, sizing="diffusers")
    assert np.abs(wrong.array - ref).max() > FAR


def test_paper_rule_keeps_eq3_where_diffusers_switches_guidance_off(pipe, editor, picture):
    ref = _diffusers(pipe, picture, "euler_ancestral", 1.0, 1.5)
    calls = []
    hook = editor.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        ours = editor.edit(picture, PROMPT, steps=STEPS, s_text=1.0, s_image=1.5, seed=SEED,
                           resolution=64, sizing="diffusers", guidance_rule="paper")
    finally:
        hook.remove()
    assert calls == [3] * STEPS  # three branches per step, as Eq. 3 needs for s_I != 1
    assert np.abs(ours.array - ref).max() > FAR  # another computation (3.5e-2), not rounding


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


def test_the_reported_seed_reproduces_the_edit_and_another_seed_changes_it(editor, picture):
    first = editor.edit(picture, PROMPT, steps=2, seed=None, resolution=64)
    again = editor.edit(picture, PROMPT, steps=2, seed=first.seed, resolution=64)
    other = editor.edit(picture, PROMPT, steps=2, seed=first.seed + 1, resolution=64)
    assert isinstance(first.seed, int) and again.seed == first.seed
    assert np.array_equal(first.array, again.array) and first.image.tobytes() == again.image.tobytes()
    assert np.abs(first.array - other.array).max() > FAR  # another seed: another picture, not rounding
    assert editor.edit(picture, PROMPT, steps=1, seed=None, resolution=64).seed != first.seed  # 1 in 2^31 to clash


def test_edit_is_prepare_then_denoise_steps_then_decode(editor, picture):
    kwargs = dict(steps=3, seed=4, resolution=64, scheduler="ddim")
    state = editor.prepare(picture, PROMPT, **kwargs)
    assert state.all_branches and state.unet_in.shape[0] == state.hidden.shape[0] == 3 and len(state.timesteps) == 3
    latents = state.latents
    for t in state.timesteps:
        latents = editor.denoise_step(state, latents, t)
    pixels = editor.decode(latents)
    result = editor.edit(picture, PROMPT, **kwargs)
    assert torch.equal(latents, result.latents)
    assert np.array_equal(pixels[0].permute(1, 2, 0).numpy(), result.array)
    off = editor.prepare(picture, PROMPT, s_text=1.0, s_image=1.5, guidance_rule="diffusers", **kwargs)
    assert not off.all_branches and off.unet_in.shape[0] == off.hidden.shape[0] == 1  # guidance off: one branch


def test_authors_sizing_rounds_to_the_unet_multiple(editor, picture):
    # tiny model: VAE factor 2, two UNet levels -> multiple 4 (64 = 8 x 8 for SD 1.5)
    assert editor.size_multiple("authors") == 4 and editor.size_multiple("diffusers") == 2
    out = editor.edit(picture, PROMPT, steps=1, seed=0, resolution=40, sizing="authors")
    assert out.input_size == (44, 36) and out.image.size == (44, 36)  # short side 18 -> 36, width 22 x 2


def test_editor_rejects_bad_arguments(editor, picture):
    for kwargs in ({"instruction": "  "}, {"steps": 0}, {"s_text": -1.0}):
        args = {"image": picture, "instruction": PROMPT, "steps": 1, **kwargs}
        with pytest.raises(UserError):
            editor.edit(**args)


def test_a_text_to_image_unet_is_refused(tiny_ip2p_dir, tmp_path):  # noqa: F811
    from diffusers import UNet2DConditionModel

    from ip2p_lib.infra.random_models import tiny_unet_config

    ed = InstructPix2PixEditor.from_pretrained(str(tiny_ip2p_dir))
    with pytest.raises(UserError, match="not an InstructPix2Pix model"):
        InstructPix2PixEditor(UNet2DConditionModel(**tiny_unet_config()), ed.vae, ed.text_encoder, ed.tokenizer, ed.scheduler_config)


def test_a_non_finite_latent_is_an_error_not_a_picture(tiny_ip2p_dir, monkeypatch):  # noqa: F811
    """A sampler step that yields NaN (diffusers' float32 Euler ancestral can, at some step counts)
    must raise, never be decoded and cast to a garbage image."""
    editor = InstructPix2PixEditor.from_pretrained(str(tiny_ip2p_dir))
    real_step = editor.denoise_step
    monkeypatch.setattr(editor, "denoise_step", lambda state, latents, t: real_step(state, latents, t) * float("nan"))
    with pytest.raises(UserError, match="non-finite"):
        editor.edit(Image.new("RGB", (16, 16)), PROMPT, steps=2, seed=0, resolution=16, sizing="diffusers")
