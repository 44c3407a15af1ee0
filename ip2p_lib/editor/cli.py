"""`ip2p edit INPUT INSTRUCTION -o OUTPUT`: edit one image with an InstructPix2Pix model.

Every check a user can fail (missing or unreadable input, empty instruction, bad numbers,
model not available) runs before the model loads and raises `UserError`, which the `ip2p`
command prints as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ip2p_lib.infra.errors import UserError

FULL_MODEL = "timbrooks/instruct-pix2pix"


def toy_model_dir() -> Path:
    """Where notebook 05 saves the toy InstructPix2Pix model."""
    from ip2p_lib.infra.paths import data_dir

    return data_dir() / "toy" / "models" / "ip2p"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `edit` subcommand."""
    p = subparsers.add_parser(
        "edit",
        help="edit an image following a written instruction (InstructPix2Pix)",
        description="Edit INPUT following INSTRUCTION and save the result to OUTPUT. Defaults are the "
        "paper's: Euler ancestral, 100 steps, text guidance 7.5, image guidance 1.5.",
    )
    p.add_argument("input", metavar="INPUT", help="the image to edit (PNG, JPEG, ...; any mode)")
    p.add_argument("instruction", metavar="INSTRUCTION", help='what to change, e.g. "make it snowy"')
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT", help="where to save the edited image")
    p.add_argument("--model", default="toy", help=f"toy (notebook 05's model), full ({FULL_MODEL}), or a folder / hub id")
    # numbers are read as text and checked in `run`, so a bad value gives one clear line
    p.add_argument("--steps", default="100", metavar="N", help="denoising steps (default 100)")
    p.add_argument("--text-guidance", default="7.5", metavar="S_T", help="s_T of Eq. 3 (default 7.5)")
    p.add_argument("--image-guidance", default="1.5", metavar="S_I", help="s_I of Eq. 3 (default 1.5)")
    p.add_argument("--seed", default=None, metavar="S", help='seed of torch.Generator("cpu"), as in diffusers (default: random, printed)')
    p.add_argument("--scheduler", default="euler_ancestral", metavar="NAME", help="euler_ancestral (default), ddim, euler, dpm_solver, ... or a diffusers class name")
    p.add_argument("--resolution", default=None, metavar="R", help="long side in pixels (default: the model's, 512 for SD 1.5)")
    p.add_argument("--sizing", default="authors", metavar="RULE", help="authors (multiples of 64, default) or diffusers (multiples of 8)")
    p.add_argument("--guidance-rule", default="paper", metavar="RULE", help="paper (Eq. 3 always, default) or diffusers (no guidance unless s_T > 1 and s_I >= 1)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto (default), cpu or cuda")
    p.set_defaults(func=run)


def _number(text: str, name: str, kind: type = float, minimum: float = 0.0) -> float:
    """Parse `text` as a finite number >= minimum, or raise a one-line `UserError`."""
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{name} must be finite, got {text!r}")
    if value < minimum:
        raise UserError(f"{name} must be >= {minimum:g}, got {text}")
    return value


def resolve_model(name: str) -> str:
    """`toy` -> notebook 05's folder (it must exist), `full` -> the released checkpoint."""
    if name == "toy":
        folder = toy_model_dir()
        if not (folder / "model_index.json").exists():
            raise UserError(
                f"the toy InstructPix2Pix model is not available yet ({folder} is missing): it is trained in "
                "notebook 05_training; run that first, or pass --model full or a model folder"
            )
        return str(folder)
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

    from ip2p_lib.editor.schedulers import scheduler_class
    from ip2p_lib.guidance import GUIDANCE_RULES
    from ip2p_lib.editor.imageprep import SIZING_RULES, load_rgb

    if not args.instruction.strip():
        raise UserError("the instruction is empty: say what to change, e.g. 'make it snowy'")
    steps = int(_number(args.steps, "--steps", int, minimum=1))
    s_text = _number(args.text_guidance, "--text-guidance")
    s_image = _number(args.image_guidance, "--image-guidance")
    seed = None if args.seed is None else int(_number(args.seed, "--seed", int))
    resolution = None if args.resolution is None else int(_number(args.resolution, "--resolution", int, minimum=8))
    if args.sizing not in SIZING_RULES:
        raise UserError(f"--sizing must be one of {', '.join(SIZING_RULES)}, got {args.sizing!r}")
    if args.guidance_rule not in GUIDANCE_RULES:
        raise UserError(f"--guidance-rule must be one of {', '.join(GUIDANCE_RULES)}, got {args.guidance_rule!r}")
    output = Path(args.output)
    if output.suffix.lower() not in Image.registered_extensions():
        raise UserError(f"cannot tell the image format of {output}: give it an extension such as .png or .jpg")
    scheduler_class(args.scheduler)
    image = load_rgb(args.input)
    device = resolve_device(args.device)
    model = resolve_model(args.model)

    import torch

    import diffusers
    import transformers

    from ip2p_lib.editor import InstructPix2PixEditor

    diffusers.utils.logging.disable_progress_bar()  # one progress bar: the denoising steps
    transformers.utils.logging.disable_progress_bar()
    dtype = torch.float16 if device == "cuda" else torch.float32
    editor = InstructPix2PixEditor.from_pretrained(model, device=device, dtype=dtype)
    result = editor.edit(
        image,
        args.instruction,
        steps=steps,
        text_guidance=s_text,
        image_guidance=s_image,
        seed=seed,
        scheduler=args.scheduler,
        resolution=resolution,
        sizing=args.sizing,
        guidance_rule=args.guidance_rule,
        progress=True,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    result.image.save(output)
    w, h = result.input_size
    print(f"saved {output} ({w}x{h}, seed {result.seed}, {steps} steps, s_T {s_text:g}, s_I {s_image:g})")
    return 0
