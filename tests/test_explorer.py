"""The edit explorer of notebook 07 (`ip2p_lib.results.explorer`), through its plain functions and
its run callback, on the committed toy model (6 steps: 3 Euler ancestral steps are non-finite there)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.models import toy_model_dir
from ip2p_lib.results.explorer import (
    BRANCHES, build_explorer, explore, look_inside, render_view, scene_from_choices, static_view, x0_from_prediction,
)
from ip2p_lib.toyworld import Edit, judge, render
from ip2p_lib.toyworld.oracle import score_judgements

STEPS = 6
GUIDED = BRANCHES[3]


@pytest.fixture(scope="module")
def editor():
    from ip2p_lib.editor import InstructPix2PixEditor

    torch.set_num_threads(1)
    return InstructPix2PixEditor.from_pretrained(str(toy_model_dir("ip2p")))


@pytest.fixture(scope="module")
def scene():
    return scene_from_choices("square", "green", "beige", "large", "left", "top")


@pytest.fixture(scope="module")
def view(editor, scene):
    return explore(editor, scene, "make the square purple", s_T=7.5, s_I=1.5, steps=STEPS, seed=3, show_step=2)


def test_scene_from_choices_places_the_object_in_the_chosen_region():
    for h in ("left", "center", "right"):
        for v in ("top", "middle", "bottom"):
            s = scene_from_choices("triangle", "blue", "black", "small", h, v)
            assert s.attributes() == {"shape": "triangle", "color": "blue", "background": "black", "size": "small",
                                      "hpos": h, "vpos": v}
            assert judge(render(s)).attributes() == s.attributes()
    with pytest.raises(ValueError, match="unknown color"):
        scene_from_choices("circle", "teal", "gray", "large")


def test_the_output_is_the_editors_edit(editor, scene, view):
    result = editor.edit(Image.fromarray(render(scene)), "make the square purple", steps=STEPS, s_text=7.5,
                         s_image=1.5, seed=3)
    np.testing.assert_array_equal(view.output_array, result.array)
    np.testing.assert_array_equal(view.output, np.asarray(result.image))
    np.testing.assert_array_equal(view.input, render(scene))
    assert (view.instruction, view.s_T, view.s_I, view.steps, view.seed, view.show_step) == (
        "make the square purple", 7.5, 1.5, STEPS, 3, 2)


def test_the_guided_x0_is_eq3_of_the_branch_x0s(view):
    x0 = view.look.x0_latents
    eq3 = x0[BRANCHES[2]] + 7.5 * (x0[BRANCHES[0]] - x0[BRANCHES[1]]) + 1.5 * (x0[BRANCHES[1]] - x0[BRANCHES[2]])
    torch.testing.assert_close(x0[GUIDED], eq3, atol=1e-4, rtol=1e-4)
    # the branches are three different predictions, and each picture is a decoded picture
    assert not torch.allclose(x0[BRANCHES[0]], x0[BRANCHES[2]])
    for picture in view.look.x0_pixels.values():
        assert picture.shape == view.output.shape and 0 <= picture.min() and picture.max() <= 1


@pytest.mark.parametrize("show_step", [0, 4])
def test_the_guided_x0_is_the_one_the_sampler_uses(editor, scene, show_step):
    # parity with diffusers: the scheduler's own pred_original_sample at that step
    state = editor.prepare(Image.fromarray(render(scene)), "make it small", steps=STEPS, s_text=5.0, s_image=1.2,
                           seed=1)
    step, seen = state.scheduler.step, []
    state.scheduler.step = lambda *a, **k: seen.append(step(*a, **k)) or seen[-1]
    latents = state.latents
    for i, t in enumerate(state.timesteps):
        if i == show_step:
            look = look_inside(editor, state, latents, i)
        latents = editor.denoise_step(state, latents, t)
    assert look.step == show_step and look.timestep == float(state.timesteps[show_step])
    torch.testing.assert_close(look.x0_latents[GUIDED], seen[show_step][1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_x0_follows_the_prediction_type_as_diffusers_does(prediction_type):
    from diffusers import EulerAncestralDiscreteScheduler

    sched = EulerAncestralDiscreteScheduler(prediction_type=prediction_type)
    sched.set_timesteps(10)
    g = torch.Generator().manual_seed(0)
    z, pred = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    sched._step_index = 3  # the sampler at its fourth step
    expected = sched.step(pred, sched.timesteps[3], z, generator=g).pred_original_sample
    torch.testing.assert_close(x0_from_prediction(sched, z, pred, sched.sigmas[3]), expected)
    with pytest.raises(UserError, match="prediction_type"):
        x0_from_prediction(SimpleNamespace(config=SimpleNamespace(prediction_type="sample")), z, pred, 1.0)


def test_a_readable_instruction_gets_the_oracles_verdict(view, scene):
    edit = Edit("recolor", "purple")
    expected = score_judgements(judge(render(scene)), judge(view.output), edit, view.output, input_scene=scene)
    assert view.scene == scene and view.verdict.edit == edit
    assert view.verdict.score == expected
    assert view.verdict.seen == judge(view.output).attributes()
    assert "recolor -> purple" in view.verdict.text
    assert ("success" if expected.success else "failure") in view.verdict.text


def test_an_unreadable_instruction_still_shows_what_the_oracle_sees(editor, scene):
    v = explore(editor, scene, "do a dance", steps=4, seed=0, show_step=0)
    assert v.verdict.edit is None and v.verdict.score is None
    assert v.verdict.seen == judge(v.output).attributes()
    assert v.verdict.text.startswith("the oracle cannot read this instruction (names no change)")


def test_a_users_image_gets_no_verdict(editor, scene, view, tmp_path):
    path = tmp_path / "mine.png"
    Image.fromarray(render(scene)).save(path)
    v = explore(editor, str(path), "make the square purple", steps=STEPS, seed=3, show_step=2)
    assert v.scene is None and v.verdict is None
    np.testing.assert_array_equal(v.output, view.output)  # the same pixels edit the same way


def test_bad_arguments_are_user_errors(editor, scene):
    with pytest.raises(UserError, match="instruction is empty"):
        explore(editor, scene, "  ", steps=4)
    with pytest.raises(UserError, match="show_step"):
        explore(editor, scene, "make it blue", steps=4, show_step=4)


def test_the_figure_shows_input_output_and_the_four_x0s(view):
    import matplotlib.pyplot as plt

    fig = render_view(view)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["input", "output", *(f"x0 of {b}" for b in BRANCHES)]
    assert view.verdict.text in fig._suptitle.get_text() and "s_T = 7.5, s_I = 1.5" in fig._suptitle.get_text()
    plt.close(fig)


def test_the_static_view_is_the_same_figure_for_the_default_scene(editor):
    import matplotlib.pyplot as plt

    fig = static_view(editor, steps=4, show_step=1)
    assert len(fig.axes) == 6 and "'make the circle blue'" in fig._suptitle.get_text()
    assert "oracle: recolor -> blue" in fig._suptitle.get_text()
    plt.close(fig)


def test_the_run_callback_uses_the_controls_values(editor):
    explorer = build_explorer(editor)
    controls = {"shape": "triangle", "color": "orange", "background": "white", "size": "small", "hpos": "right",
                "vpos": "bottom"}
    for name, value in controls.items():
        explorer.scene_controls[name].value = value
    explorer.instruction.value = "make the background black"
    explorer.s_T.value, explorer.s_I.value, explorer.seed.value = 5.0, 1.2, 11
    explorer.steps.value = 4
    assert explorer.show_step.max == 3  # the step shown stays inside the run
    explorer.show_step.value = 1
    view = explorer.on_run()
    assert view is explorer.view and view.scene.attributes() == controls
    assert (view.instruction, view.s_T, view.s_I, view.steps, view.seed, view.show_step) == (
        "make the background black", 5.0, 1.2, 4, 11, 1)
    assert view.verdict.edit == Edit("background", "black")
    again = explore(editor, scene_from_choices(**controls), "make the background black", s_T=5.0, s_I=1.2, steps=4,
                    seed=11, show_step=1)
    np.testing.assert_array_equal(view.output, again.output)
    (shown,) = explorer.output.outputs
    assert "image/png" in shown["data"]


def test_the_run_callback_shows_the_editors_error_instead_of_raising(editor):
    explorer = build_explorer(editor, steps=4, show_step=0)
    explorer.instruction.value = ""
    assert explorer.on_run() is None and explorer.view is None
    assert "the instruction is empty" in explorer.message
    (shown,) = explorer.output.outputs
    assert shown["output_type"] == "stream" and "the instruction is empty" in shown["text"]


def test_the_run_callback_edits_a_users_image(editor, scene, tmp_path):
    explorer = build_explorer(editor, user_image=Image.fromarray(render(scene)), steps=4, show_step=0)
    assert explorer.source.value == "your image"
    view = explorer.on_run()
    assert view.scene is None and view.verdict is None
    np.testing.assert_array_equal(view.input, render(scene))
    explorer.path.value = str(tmp_path / "missing.png")
    assert explorer.on_run() is None and "does not exist" in explorer.message
