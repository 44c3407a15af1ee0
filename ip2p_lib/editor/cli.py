"""`ip2p edit INPUT INSTRUCTION -o OUTPUT`: edit one image with an InstructPix2Pix model.

Every check a user can fail (missing or unreadable input, empty instruction, bad numbers,
model not available) runs before the model loads and raises `UserError`, which the `ip2p`
command prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ip2p_lib.guidance import PAPER_IMAGE_GUIDANCE, PAPER_STEPS, PAPER_TEXT_GUIDANCE
from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.models import toy_model_dir

FULL_MODEL = "timbrooks/instruct-pix2pix"
MAX_RESOLUTION = 4096  # beyond this a single edit needs more memory than any one GPU has


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `edit` subcommand."""
    p = subparsers.add_parser(
        "edit",
        help="edit an image following a written instruction (InstructPix2Pix)",
        description="Edit INPUT following INSTRUCTION and save the result to OUTPUT. Defaults are the "
        f"paper's: Euler ancestral, {PAPER_STEPS} steps, text guidance {PAPER_TEXT_GUIDANCE}, "
        f"image guidance {PAPER_IMAGE_GUIDANCE}.",
    )
    p.add_argument("input", metavar="INPUT", help="the image to edit (PNG, JPEG, ...; any mode)")
    p.add_argument("instruction", metavar="INSTRUCTION", help='what to change, e.g. "make it snowy"')
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="where to save the edited image; its extension gives the format (required)")
    p.add_argument("--model", default="toy",
                   help=f"toy (notebook 05's model), full ({FULL_MODEL}), or a folder / hub id (default toy)")
    # numbers are read as text and checked in `run`, so a bad value gives one clear line
    p.add_argument("--steps", default=str(PAPER_STEPS), metavar="N",
                   help=f"denoising steps, at least 1 (default {PAPER_STEPS}, the authors')")
    p.add_argument("--text-guidance", default=str(PAPER_TEXT_GUIDANCE), metavar="S_T",
                   help=f"s_T of Eq. 3, >= 0 (default {PAPER_TEXT_GUIDANCE}, the paper's)")
    p.add_argument("--image-guidance", default=str(PAPER_IMAGE_GUIDANCE), metavar="S_I",
                   help=f"s_I of Eq. 3, >= 0 (default {PAPER_IMAGE_GUIDANCE}, the paper's)")
    p.add_argument("--seed", default=None, metavar="S",
                   help='seed of torch.Generator("cpu") as in diffusers, 0 to 2**32-1 (default: random, printed)')
    p.add_argument("--scheduler", default="euler_ancestral", metavar="NAME",
                   help="euler_ancestral, ddim, euler, dpm_solver, ... or a diffusers class name "
                   "(default euler_ancestral, the authors')")
    p.add_argument("--resolution", default=None, metavar="R",
                   help=f"long side in pixels, 8 to {MAX_RESOLUTION} (default: the model's, 512 for SD 1.5)")
    p.add_argument("--sizing", default="authors", metavar="RULE",
                   help="authors (multiples of 64) or diffusers (multiples of 8) (default authors)")
    p.add_argument("--guidance-rule", default="paper", metavar="RULE",
                   help="paper (Eq. 3 always) or diffusers (no guidance unless s_T > 1 and s_I >= 1) (default paper)")
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="auto (cuda when available), cpu or cuda (default auto)")
    p.set_defaults(func=run)


def resolve_model(name: str) -> str:
    """`toy` -> notebook 05's folder (it must exist), `full` -> the released checkpoint."""
    if name == "toy":
        return str(toy_model_dir("ip2p"))  # a UserError naming notebook 05 while it is missing
    if name == "full":
        return FULL_MODEL
    return name


def resolve_device(name: str) -> str:
    """auto -> cuda when available, else cpu."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run(args: argparse.Namespace) -> int:
    """Check everything, load the model, edit, save."""
    from PIL import Image

    from ip2p_lib.editor.editor import check_edit_arguments
    from ip2p_lib.editor.imageprep import SIZING_RULES, load_rgb
    from ip2p_lib.editor.schedulers import scheduler_class
    from ip2p_lib.guidance import GUIDANCE_RULES

    steps = int(checks.number(args.steps, "--steps", int))
    s_text = checks.number(args.text_guidance, "--text-guidance")
    s_image = checks.number(args.image_guidance, "--image-guidance")
    check_edit_arguments(args.instruction, steps, s_T=s_text, s_I=s_image)  # the editor's own check
    seed = None if args.seed is None else checks.seed(args.seed)
    resolution = None if args.resolution is None else int(
        checks.number(args.resolution, "--resolution", int, minimum=8, maximum=MAX_RESOLUTION))
    if args.sizing not in SIZING_RULES:
        raise UserError(f"--sizing must be one of {', '.join(SIZING_RULES)}, got {args.sizing!r}")
    if args.guidance_rule not in GUIDANCE_RULES:
        raise UserError(f"--guidance-rule must be one of {', '.join(GUIDANCE_RULES)}, got {args.guidance_rule!r}")
    output = Path(args.output)
    if output.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"cannot tell the image format of {output}: give it an extension such as .png or .jpg")
    image = load_rgb(args.input)
    model = resolve_model(args.model)
    checks.model_folder(model, "--model", "model_index.json", "InstructPix2Pix model")
    checks.output_file(output, "--output")
    scheduler_class(args.scheduler)  # the first check that imports diffusers
    device = resolve_device(args.device)  # and torch

    import torch

    import diffusers
    import transformers

    from ip2p_lib.editor import InstructPix2PixEditor

    diffusers.utils.logging.disable_progress_bar()  # one progress bar: the denoising steps
    transformers.utils.logging.disable_progress_bar()
    dtype = torch.float16 if device == "cuda" else torch.float32
    verbosity = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()  # not "cannot reach the hub": the UserError says what to do
    try:
        editor = InstructPix2PixEditor.from_pretrained(model, device=device, dtype=dtype)
    finally:
        diffusers.utils.logging.set_verbosity(verbosity)
    result = editor.edit(
        image,
        args.instruction,
        steps=steps,
        s_text=s_text,
        s_image=s_image,
        seed=seed,
        scheduler=args.scheduler,
        resolution=resolution,
        sizing=args.sizing,
        guidance_rule=args.guidance_rule,
        progress=True,
    )
    result.image.save(output)
    w, h = result.input_size
    print(f"saved {output} ({w}x{h}, seed {result.seed}, {steps} steps, s_T {s_text:g}, s_I {s_image:g})")
    return 0
