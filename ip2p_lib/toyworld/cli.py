"""`ip2p world`: write rendered scenes as PNG files plus one JSONL record per image."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ip2p_lib.infra import checks
from ip2p_lib.infra.records import write_records

MAX_RESOLUTION = 1024  # a 64-pixel world needs no more; larger sizes only exhaust memory


def write_world(n: int, seed: int, out: Path, resolution: int = 64, p_position: float = 0.5) -> Path:
    """Render `n` random scenes into `out/` as `{i:06d}.png` and write `out/scenes.jsonl`,
    one record per image: file name, caption and every attribute of the scene by name.

    Returns the JSONL path. Deterministic for a given (n, seed, resolution, p_position)."""
    from PIL import Image

    from ip2p_lib.toyworld.captions import random_caption
    from ip2p_lib.toyworld.render import render
    from ip2p_lib.toyworld.scene import sample_scene

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        scene = sample_scene(rng)
        name = f"{i:06d}.png"
        Image.fromarray(render(scene, resolution)).save(out / name)
        records.append({"file": name, "caption": random_caption(scene, rng, p_position), **scene.to_dict()})
    # Write the index last and atomically: a killed run never leaves a half-written index.
    return write_records(records, out / "scenes.jsonl")


def _run(args: argparse.Namespace) -> int:
    checks.number(args.n, "--n", int, minimum=1)
    checks.number(args.resolution, "--resolution", int, minimum=16, maximum=MAX_RESOLUTION)
    checks.number(args.p_position, "--p-position", minimum=0, maximum=1)
    checks.seed(args.seed)
    out = checks.output_folder(args.out, "--out")
    index = write_world(args.n, args.seed, out, args.resolution, args.p_position)
    print(f"wrote {args.n} scenes to {out}/ and their records to {index}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ip2p world`."""
    p = sub.add_parser(
        "world",
        help="render random scenes of the miniature world to PNG + JSONL",
        description="Render N random scenes as PNG files and write one JSONL record per image "
        "(file, caption, shape, color, background, size, u, v, hpos, vpos).",
    )
    p.add_argument("--n", type=int, default=16, help="number of scenes, at least 1 (default 16)")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    p.add_argument("--out", required=True, help="output folder, made if missing (required)")
    p.add_argument("--resolution", type=int, default=64,
                   help=f"image side in pixels, 16 to {MAX_RESOLUTION} (default 64)")
    p.add_argument("--p-position", type=float, default=0.5,
                   help="chance that a caption names the position, 0 to 1 (default 0.5)")
    p.set_defaults(func=_run)
