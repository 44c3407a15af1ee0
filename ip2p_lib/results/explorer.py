r"""The edit explorer of notebook 07: one image, any instruction, every knob of §3.2.1, and a look
inside one sampler step.

Plain functions do the work, so they are tested without a browser; `build_explorer` only wires
ipywidgets to them, and `static_view` draws the same figure where no one can click (papermill).

    scene_from_choices  the dropdowns' values -> a `Scene` of the miniature world
    explore             edit, judge, and look inside step `show_step` -> `ExplorerView`
    render_view         an `ExplorerView` as one row of pictures
    build_explorer      the widget (its `on_run` is the run button's callback)
    static_view         the figure for a default scene and instruction

A look inside a step. At step i the UNet sees z_t and predicts, per branch of Eq. 3, a noise
e(z, c_I, c_T), e(z, c_I, 0), e(z, 0, 0); the sampler turns a prediction into its guess of the
clean latent x0 (Euler, in the scaled latent space, sigma = the step's noise level):

    epsilon:       x0 = z - sigma * e
    v_prediction:  x0 = z / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) * v

Either way x0 is affine in the prediction, x0 = a z + b e, with the same a, b for every branch,
and Eq. 3's weights sum to one ((1 - s_I) + (s_I - s_T) + s_T = 1). So the guided x0 is Eq. 3
applied to the branches' x0s: the picture of e~ is the same extrapolation as e~ itself.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ip2p_lib.editor.editor import InstructPix2PixEditor, PreparedEdit, check_edit_arguments, check_finite_latents
from ip2p_lib.guidance import dual_cfg
from ip2p_lib.infra.errors import UserError
from ip2p_lib.text.evaluate import instruction_edit
from ip2p_lib.toyworld import BACKGROUNDS, COLORS, HORIZONTAL, SHAPES, SIZES, VERTICAL, Edit, Scene, judge, render
from ip2p_lib.toyworld.oracle import EditScore, score_judgements
from ip2p_lib.toyworld.scene import region_centre

# The explorer's choices: the world's vocabularies, in the order the dropdowns list them.
SCENE_CHOICES: Mapping[str, tuple[str, ...]] = {
    "shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS), "size": SIZES,
    "hpos": HORIZONTAL, "vpos": VERTICAL,
}
DEFAULT_SCENE: Mapping[str, str] = {"shape": "circle", "color": "red", "background": "gray", "size": "large",
                                    "hpos": "center", "vpos": "middle"}
DEFAULT_INSTRUCTION = "make the circle blue"
# The toy's 20 steps; step 0 (pure noise) shows the branches at their most different: e(z, c_I, 0)'s x0
# is the input, e(z, 0, 0)'s an average picture, e(z, c_I, c_T)'s the edit begun, e~'s the edit pushed further.
DEFAULT_SETTINGS: Mapping[str, Any] = {"s_T": 7.5, "s_I": 1.5, "steps": 20, "seed": 0, "show_step": 0}
# The three branches of Eq. 3 in the editor's row order, then the guided prediction e~.
BRANCHES: tuple[str, ...] = ("e(z, c_I, c_T)", "e(z, c_I, 0)", "e(z, 0, 0)", "guided e~ (Eq. 3)")
NO_IMAGE_MESSAGE = "no image: give a path (or build the explorer with user_image=...), or pick 'toy scene'"


def scene_from_choices(shape: str, color: str, background: str, size: str, hpos: str = "center",
                       vpos: str = "middle") -> Scene:
    """The scene the dropdowns describe, its object at the centre of region (hpos, vpos)."""
    u, v = region_centre((hpos, vpos))
    return Scene(shape, color, background, size, u=u, v=v)


# ---------------------------------------------------------------- the oracle's verdict
@dataclass(frozen=True)
class Verdict:
    """What the oracle says about an edit of a toy scene: the edit it reads in the instruction
    (None when it cannot read one, and `reason` says why), the score when it can, and the
    attributes it sees in the output either way."""

    edit: Edit | None
    reason: str
    score: EditScore | None
    seen: Mapping[str, str | None]

    @property
    def text(self) -> str:
        """One line for a figure title."""
        seen = ", ".join(f"{v}" for v in self.seen.values() if v is not None) or "no object"
        if self.edit is None or self.score is None:
            return f"the oracle cannot read this instruction ({self.reason}); it sees: {seen}"
        mark = {True: "yes", False: "no"}
        outcome = "success" if self.score.success else "failure"
        return (f"oracle: {self.edit.kind} -> {self.edit.value}: changed {mark[self.score.changed]}, "
                f"preserved {mark[self.score.preserved]} ({outcome}); it sees: {seen}")


def oracle_verdict(scene: Scene, input_image: Any, output_image: Any, instruction: str) -> Verdict:
    """Judge an edit of `scene` as the held-out evaluation does (`ip2p_lib.training.evaluate`):
    read the edit from the instruction's words (`instruction_edit`), `judge` both images, then
    `score_judgements` (changed: the target reads as asked; preserved: the rest as before)."""
    edit, reason = instruction_edit(instruction, scene.attributes())
    after = judge(output_image)
    if edit is None:
        return Verdict(None, reason, None, after.attributes())
    score = score_judgements(judge(input_image), after, edit, output_image, input_scene=scene)
    return Verdict(edit, reason, score, after.attributes())


# ---------------------------------------------------------------- inside one step
def x0_from_prediction(scheduler: Any, z: Any, prediction: Any, sigma: Any) -> Any:
    """The clean latent x0 the sampler infers from a UNet prediction at noise level `sigma`,
    for the model's `prediction_type` (as diffusers' Euler samplers compute it)."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return z - sigma * prediction  # x0 = z - sigma e
    if kind == "v_prediction":
        return z / (sigma**2 + 1) - sigma / (sigma**2 + 1) ** 0.5 * prediction  # x0 = z/(s^2+1) - s v/sqrt(s^2+1)
    raise UserError(f"the explorer reads epsilon or v_prediction models, not prediction_type {kind!r}")


@dataclass
class StepLook:
    """Step `step` of a run seen from inside: its timestep t and noise level sigma, and x0 as each
    branch predicts it (`BRANCHES` order), as latents (1, c, h, w) and as pixels (H, W, 3) in [0, 1]."""

    step: int
    timestep: float
    sigma: float
    x0_latents: dict[str, Any]  # torch tensors in the scaled latent space
    x0_pixels: dict[str, np.ndarray]


def look_inside(editor: InstructPix2PixEditor, state: PreparedEdit, latents: Any, step: int) -> StepLook:
    """The branch predictions of x0 at step `step` (z_t = `latents`): the UNet on the very input
    `denoise_step` builds, each branch's prediction turned into x0, and Eq. 3's combination.
    Reads the state and changes nothing in it (one extra UNet call)."""
    import torch

    if not state.all_branches:
        raise UserError("the explorer shows the three branches of Eq. 3: use the 'paper' guidance rule")
    sched, t = state.scheduler, state.timesteps[step]
    with torch.inference_mode():
        c = latents.shape[1]
        z_in = sched.scale_model_input(latents, t)  # z_t, scaled for the sampler, as `denoise_step` does
        if not hasattr(sched, "sigmas") or sched.step_index != step:
            raise UserError("the explorer looks inside Euler samplers (sigmas), at the step the run has reached")
        sigma = sched.sigmas[sched.step_index].to(latents.device, latents.dtype)  # the step's noise level
        unet_in = state.unet_in.clone()  # the state's rows stay as they are
        unet_in[:, :c] = z_in.repeat(state.branches, 1, 1, 1)  # the same z_t in every branch's rows
        pred = editor.unet(unet_in, t, encoder_hidden_states=state.hidden, return_dict=False)[0]
        text_image, image, uncond = pred.chunk(3)  # e(z,c_I,c_T), e(z,c_I,0), e(z,0,0): the editor's row order
        guided = dual_cfg(text_image, image, uncond, s_image=state.s_image, s_text=state.s_text)  # Eq. 3: e~
        x0 = {name: x0_from_prediction(sched, latents, p, sigma)
              for name, p in zip(BRANCHES, (text_image, image, uncond, guided))}
        pixels = editor.decode(torch.cat(list(x0.values())))  # the four x0 guesses as pictures, one decoder call
    arrays = {name: pixels[k].permute(1, 2, 0).float().cpu().numpy() for k, name in enumerate(BRANCHES)}
    return StepLook(step, float(t), float(sigma), x0, arrays)


# ---------------------------------------------------------------- one run
@dataclass
class ExplorerView:
    """Everything the explorer shows for one run: the input (as the model sees it) and the output,
    uint8 (H, W, 3); the settings; the oracle's verdict (toy scenes only); the look inside a step."""

    input: np.ndarray
    output: np.ndarray
    output_array: np.ndarray = field(repr=False)  # float (H, W, 3) in [0, 1], as `EditResult.array`
    instruction: str
    s_T: float
    s_I: float
    steps: int
    seed: int
    scene: Scene | None
    verdict: Verdict | None
    look: StepLook

    @property
    def show_step(self) -> int:
        """The step whose branch predictions `look` holds."""
        return self.look.step


def as_input_image(image: Any, resolution: int) -> Any:
    """A PIL RGB image from a `Scene` (rendered at `resolution`), a path, an array (uint8, or float in
    [0, 1]) or a PIL image."""
    from PIL import Image

    from ip2p_lib.editor.imageprep import load_rgb, to_rgb

    if isinstance(image, Scene):
        return Image.fromarray(render(image, resolution))
    if isinstance(image, (str, Path)):
        return load_rgb(image)
    if isinstance(image, np.ndarray):
        pixels = image if image.dtype == np.uint8 else np.rint(np.clip(image, 0, 1) * 255).astype(np.uint8)
        return Image.fromarray(pixels).convert("RGB")
    return to_rgb(image)


def explore(
    editor: InstructPix2PixEditor,
    image: Any,
    instruction: str,
    s_T: float = DEFAULT_SETTINGS["s_T"],
    s_I: float = DEFAULT_SETTINGS["s_I"],
    steps: int = DEFAULT_SETTINGS["steps"],
    seed: int = DEFAULT_SETTINGS["seed"],
    show_step: int = DEFAULT_SETTINGS["show_step"],
    resolution: int | None = None,
) -> ExplorerView:
    """Edit `image` (a `Scene`, a path, an array or a PIL image) with `instruction` as
    `editor.edit(image, instruction, steps=steps, s_text=s_T, s_image=s_I, seed=seed)` does, the
    same three steps (`prepare`, `denoise_step` per timestep, `decode`), and stop before step
    `show_step` (0 = the noisiest) to look at the branches. A `Scene` also gets the oracle's verdict."""
    check_edit_arguments(instruction, steps, s_T=s_T, s_I=s_I)
    if not 0 <= int(show_step) < int(steps):
        raise UserError(f"show_step must be a step of the run, 0 to {int(steps) - 1}; got {show_step}")
    from ip2p_lib.editor.imageprep import resize_for_model

    side = resolution or editor.native_resolution
    picture = as_input_image(image, side)
    state = editor.prepare(picture, instruction, steps=steps, s_text=s_T, s_image=s_I, seed=seed, resolution=resolution)
    latents, look = state.latents, None  # z_T
    for i, t in enumerate(state.timesteps):
        if i == show_step:
            look = look_inside(editor, state, latents, i)
        latents = editor.denoise_step(state, latents, t)  # z_t -> z_{t-1}
    check_finite_latents(latents, "euler_ancestral", steps)
    array = editor.decode(latents)[0].permute(1, 2, 0).float().cpu().numpy()  # z_0 -> [0, 1]
    output = (array * 255).round().astype(np.uint8)  # as `edit_batch` makes its picture
    multiple = editor.size_multiple("authors")
    shown = np.asarray(resize_for_model(picture, side, "authors", multiple))  # the input as `prepare` sizes it
    scene = image if isinstance(image, Scene) else None
    verdict = oracle_verdict(scene, shown, output, instruction) if scene is not None else None
    assert look is not None  # show_step < steps: the loop passed it
    return ExplorerView(shown, output, array, instruction, float(s_T), float(s_I), int(steps), state.seed,
                        scene, verdict, look)


# ---------------------------------------------------------------- the figure
def render_view(view: ExplorerView) -> Any:
    """One row: input | output | x0 from each branch of Eq. 3 | x0 from the guided e~, at `view.show_step`."""
    import matplotlib.pyplot as plt

    look = view.look
    panels = [("input", view.input), ("output", view.output), *((f"x0 of {b}", look.x0_pixels[b]) for b in BRANCHES)]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.9))
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    settings = (f"{view.instruction!r}   s_T = {view.s_T:g}, s_I = {view.s_I:g}, {view.steps} steps, seed {view.seed};"
                f"   x0 at step {look.step} (t = {look.timestep:g}, sigma = {look.sigma:.3g})")
    verdict = view.verdict.text if view.verdict is not None else "no oracle verdict (not a scene of the toy world)"
    fig.suptitle(f"{settings}\n{verdict}", fontsize=8)
    fig.tight_layout()
    return fig


def static_view(editor: InstructPix2PixEditor, scene: Scene | None = None, instruction: str = DEFAULT_INSTRUCTION,
                **settings: Any) -> Any:
    """The explorer's figure for one scene (default: `DEFAULT_SCENE`) and instruction, where no
    widget can run (papermill, a static page). `settings` as `explore`'s."""
    scene = scene or scene_from_choices(**DEFAULT_SCENE)
    return render_view(explore(editor, scene, instruction, **{**DEFAULT_SETTINGS, **settings}))


# ---------------------------------------------------------------- the widget
class Explorer:
    """The explorer's widgets and its run callback. `widget` is what a notebook displays;
    `on_run()` is what the run button calls (tests call it directly): read the controls, run
    `explore`, draw `render_view` into `output`. A `UserError` (an empty instruction, a missing
    file) is shown there as text instead of raised; `view` and `message` keep the last result."""

    def __init__(self, editor: InstructPix2PixEditor, user_image: Any = None, scene: Mapping[str, str] | None = None,
                 instruction: str = DEFAULT_INSTRUCTION, **settings: Any):
        import ipywidgets as w

        self.editor, self.user_image = editor, user_image
        self.view: ExplorerView | None = None
        self.message = ""
        values = {**DEFAULT_SCENE, **(scene or {})}
        s = {**DEFAULT_SETTINGS, **settings}
        self.scene_controls = {name: w.Dropdown(options=list(options), value=values[name], description=name)
                               for name, options in SCENE_CHOICES.items()}
        self.source = w.ToggleButtons(options=["toy scene", "your image"],
                                      value="toy scene" if user_image is None else "your image", description="input")
        self.path = w.Text(value="", placeholder="path to an image (or the image given to build_explorer)",
                           description="image")
        self.instruction = w.Text(value=instruction, description="instruction", layout=w.Layout(width="420px"))
        self.s_T = w.FloatSlider(value=s["s_T"], min=0.0, max=15.0, step=0.5, description="s_T")
        self.s_I = w.FloatSlider(value=s["s_I"], min=0.0, max=5.0, step=0.1, description="s_I")
        self.steps = w.IntSlider(value=s["steps"], min=2, max=100, description="steps")
        self.seed = w.IntText(value=s["seed"], description="seed")
        self.show_step = w.IntSlider(value=s["show_step"], min=0, max=s["steps"] - 1, description="show step")
        self.steps.observe(self._steps_changed, names="value")
        self.run = w.Button(description="edit", button_style="primary")
        self.run.on_click(self.on_run)
        self.output = w.Output()
        dropdowns = list(self.scene_controls.values())
        scene_box = w.VBox([w.HBox(dropdowns[:3]), w.HBox(dropdowns[3:])])
        self.widget = w.VBox([self.source, scene_box, self.path, self.instruction, w.HBox([self.s_T, self.s_I]),
                              w.HBox([self.steps, self.show_step]), w.HBox([self.seed, self.run]), self.output])

    def _steps_changed(self, change: Mapping[str, Any]) -> None:
        """Keep the step shown inside the run: 0 to steps - 1."""
        self.show_step.max = max(int(change["new"]) - 1, 0)

    def input_image(self) -> Any:
        """What the controls pick: the dropdowns' scene, or the user's image (a path or the given one)."""
        if self.source.value == "toy scene":
            return scene_from_choices(**{name: c.value for name, c in self.scene_controls.items()})
        if self.path.value.strip():
            return self.path.value.strip()
        if self.user_image is None:
            raise UserError(NO_IMAGE_MESSAGE)
        return self.user_image

    def on_run(self, _button: Any = None) -> ExplorerView | None:
        """The run button's callback: explore with the controls' values and redraw the output."""
        import matplotlib.pyplot as plt
        from IPython.display import Image

        self.output.outputs = ()
        try:
            self.view = explore(self.editor, self.input_image(), self.instruction.value, s_T=self.s_T.value,
                                s_I=self.s_I.value, steps=self.steps.value, seed=self.seed.value,
                                show_step=self.show_step.value)
        except UserError as err:
            self.view, self.message = None, f"cannot edit: {err}"
            self.output.append_stdout(self.message + "\n")
            return None
        fig = render_view(self.view)
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=100)
        plt.close(fig)
        self.message = self.view.verdict.text if self.view.verdict is not None else ""
        self.output.append_display_data(Image(data=png.getvalue(), format="png"))
        return self.view


def build_explorer(editor: InstructPix2PixEditor, user_image: Any = None, scene: Mapping[str, str] | None = None,
                   instruction: str = DEFAULT_INSTRUCTION, **settings: Any) -> Explorer:
    """The explorer on `editor`: display `.widget` in a notebook. `user_image` (a path or a PIL
    image, the full profile's way to edit your own picture) starts it on that image; `scene`
    (dropdown values), `instruction` and `settings` (s_T, s_I, steps, seed, show_step) set the
    controls' first values."""
    return Explorer(editor, user_image=user_image, scene=scene, instruction=instruction, **settings)
