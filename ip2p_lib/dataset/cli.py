"""`ip2p pairs`: generate paired images from triples (Prompt-to-Prompt), then filter them by CLIP.

    ip2p pairs generate --triples data/generated/toy/triples.jsonl --out data/generated/toy/pairs
    ip2p pairs filter --data data/generated/toy/pairs --out data/generated/toy/train --thresholds toy
    ip2p pairs oracle --triples data/generated/toy/triples.jsonl --out data/generated/toy/oracle
    ip2p pairs convert --from AUTHORS_FOLDER --out data/converted
    ip2p pairs match --data data/generated/toy/oracle --like data/generated/toy/train --out data/generated/toy/oracle-matched
    ip2p pairs filter --data data/generated/toy/pairs --out data/generated/toy/ablations/oracle-filter --by oracle
    ip2p pairs subset --data data/generated/toy/train --fraction 0.1 --out data/generated/toy/ablations/size-10

`generate` keeps every sample with its four CLIP scores (kill it at any moment; the same
command resumes); `filter` writes the samples that pass, at most 4 per caption pair; `oracle`
renders the pairs the miniature world says are right, in the same format; `convert` turns a
folder in the authors' layout (seeds.json, NNNNNNN/SEED_0.jpg, ...) into our shards; `filter
--by oracle|none` and `subset` make the training sets of the Figure 10 ablations.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError


def _model_name(args: argparse.Namespace) -> str:
    """What the run records as its model (checked, not loaded): the profile's, or --model."""
    from ip2p_lib.infra.models import SD_FULL, toy_model_dir
    from ip2p_lib.infra.paths import shown

    if args.model is None:
        return SD_FULL if args.profile == "full" else str(shown(toy_model_dir("sd")))
    checks.model_folder(args.model, "--model", "model_index.json", "Stable Diffusion pipeline")
    return str(args.model)


def _load_pipe(args: argparse.Namespace) -> object:
    from diffusers import StableDiffusionPipeline

    from ip2p_lib.infra.models import from_pretrained, load_sd

    if args.model is None:
        return load_sd(args.profile)
    return from_pretrained(StableDiffusionPipeline, args.model, what="Stable Diffusion pipeline",
                           required_file="model_index.json", safety_checker=None, requires_safety_checker=False)


def _device() -> str:
    """cuda:LOCAL_RANK when there is a GPU (one per process under `accelerate launch`), else cpu."""
    import os

    import torch

    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"


def _triples(args: argparse.Namespace) -> tuple[list[dict[str, str]], int | None]:
    """The triples to use (--limit applied) and the limit to record (None: the whole file)."""
    from ip2p_lib.text.seed import read_triples

    triples = read_triples(args.triples)
    if args.limit is None or args.limit >= len(triples):
        return triples, None
    return triples[: args.limit], args.limit


def _check_run_options(args: argparse.Namespace) -> Path:
    """The options `generate` and `oracle` share; returns the output folder."""
    checks.number(args.samples_per_pair, "--samples-per-pair", minimum=1)
    checks.number(args.triples_per_shard, "--triples-per-shard", minimum=1)
    checks.seed(args.seed, "--seed")
    if args.limit is not None:
        checks.number(args.limit, "--limit", minimum=1)
    if args.max_shards is not None:
        checks.number(args.max_shards, "--max-shards", minimum=1)
    checks.input_file(args.triples, "--triples", "triples file")
    return checks.output_folder(args.out, "--out")


def _generate(args: argparse.Namespace) -> int:
    checks.number(args.steps, "--steps", minimum=1)
    checks.number(args.batch_size, "--batch-size", minimum=1)
    out = _check_run_options(args)
    from ip2p_lib.dataset.generate import RunSettings, claim_folder, file_sha256, generate_dataset, parse_shard
    from ip2p_lib.p2p.sampler import VARIANTS

    if args.variant not in VARIANTS:
        raise UserError(f"--variant {args.variant!r}: choose one of {', '.join(VARIANTS)}")
    shard = parse_shard(args.shard) if args.shard else _accelerate_shard()
    triples, limit = _triples(args)
    settings = RunSettings(model=_model_name(args), triples_sha256=file_sha256(args.triples), variant=args.variant,
                           steps=args.steps, samples_per_pair=args.samples_per_pair,
                           triples_per_shard=args.triples_per_shard, batch_size=args.batch_size, seed=args.seed,
                           limit=limit)
    claim_folder(out, settings)  # another run's folder is refused before any model loads
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device()
    pipe = _load_pipe(args)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    from ip2p_lib.filtering import ClipScorer, passes, thresholds_for

    scorer = ClipScorer.from_profile(args.profile, device=device)
    preset = thresholds_for(args.profile)
    stats = generate_dataset(pipe, scorer, triples, out, settings, shard, max_shards=args.max_shards,
                             passes=lambda s: passes(s, preset))
    print(f"{args.out}: shard {shard[0]}/{shard[1]}: {stats.shards_written} new shards ({stats.pairs} pairs, "
          f"{stats.pairs_per_second:.2f} pairs/s, {stats.passed} passed the {args.profile} thresholds), "
          f"{stats.shards_done_before} shards from before")
    return 0


def _accelerate_shard() -> tuple[int, int]:
    """(process index, processes) from RANK and WORLD_SIZE, which `accelerate launch` and torchrun
    set for each process; (0, 1) when they are not set."""
    import os

    from ip2p_lib.dataset.generate import parse_shard

    rank, world = os.environ.get("RANK"), os.environ.get("WORLD_SIZE")
    if rank is None or world is None:
        return 0, 1
    try:
        return parse_shard(f"{rank}/{world}")
    except UserError:
        raise UserError(f"RANK={rank!r} and WORLD_SIZE={world!r} (set by accelerate launch or torchrun) must be "
                        "integers with 0 <= RANK < WORLD_SIZE; or pass --shard I/N") from None


def _filter(args: argparse.Namespace) -> int:
    from ip2p_lib.dataset.filtered import filter_dataset
    from ip2p_lib.filtering import PRESETS

    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such folder; give the --out folder of `ip2p pairs generate`")
    out = checks.output_folder(args.out, "--out")
    if args.thresholds not in PRESETS:
        raise UserError(f"--thresholds {args.thresholds!r}: choose one of {', '.join(PRESETS)}")
    if args.keep_per_pair is not None:
        checks.number(args.keep_per_pair, "--keep-per-pair", kind=int, minimum=1)
    overrides = {k: getattr(args, k) for k in ("sim_image", "sim_direction", "sim_0", "sim_1", "keep_per_pair")
                 if getattr(args, k) is not None}
    thresholds = PRESETS[args.thresholds].__class__(**{**PRESETS[args.thresholds].to_dict(), **overrides})
    summary = filter_dataset(Path(args.data), out, thresholds, by=args.by)
    print(json.dumps(summary))
    return 0


def _subset(args: argparse.Namespace) -> int:
    from ip2p_lib.dataset.filtered import subset_caption_pairs

    checks.number(args.fraction, "--fraction", kind=float, above=0.0, maximum=1.0)
    checks.number(args.seed, "--seed", kind=int, minimum=0)
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such folder; give a folder of shards")
    out = checks.output_folder(args.out, "--out")
    try:
        print(json.dumps(subset_caption_pairs(Path(args.data), float(args.fraction), out, seed=args.seed)))
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    return 0


def _match(args: argparse.Namespace) -> int:
    from ip2p_lib.dataset.filtered import match_caption_pairs

    for option, folder in (("--data", args.data), ("--like", args.like)):
        if not Path(folder).is_dir():
            raise UserError(f"{option} {folder}: no such folder; give a folder of shards")
    out = checks.output_folder(args.out, "--out")
    try:
        print(json.dumps(match_caption_pairs(Path(args.data), Path(args.like), out)))
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    return 0


def _oracle(args: argparse.Namespace) -> int:
    checks.number(args.resolution, "--resolution", kind=int, minimum=8)
    out = _check_run_options(args)
    from ip2p_lib.dataset.generate import claim_folder, file_sha256, parse_shard
    from ip2p_lib.dataset.oracle_pairs import OracleSettings, oracle_dataset

    shard = parse_shard(args.shard) if args.shard else _accelerate_shard()
    triples, limit = _triples(args)
    settings = OracleSettings(triples_sha256=file_sha256(args.triples), samples_per_pair=args.samples_per_pair,
                              triples_per_shard=args.triples_per_shard, seed=args.seed, resolution=args.resolution,
                              limit=limit)
    claim_folder(out, settings)
    from ip2p_lib.filtering import ClipScorer

    stats = oracle_dataset(triples, out, settings, ClipScorer.from_profile("toy"), shard, max_shards=args.max_shards)
    print(f"{args.out}: shard {shard[0]}/{shard[1]}: {stats.shards_written} new shards ({stats.pairs} oracle pairs), "
          f"{stats.shards_done_before} shards from before")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ip2p_lib.dataset.readers import convert_authors, is_authors_layout

    source = Path(args.source)
    if not source.is_dir() or not is_authors_layout(source):
        raise UserError(f"--from {source}: not a folder in the authors' layout (seeds.json, or NNNNNNN/prompt.json "
                        "with SEED_0.jpg and SEED_1.jpg)")
    checks.number(args.steps, "--steps", kind=int, minimum=0)
    out = checks.output_folder(args.out, "--out")
    if out.resolve() == source.resolve():
        raise UserError("--out must differ from --from")
    print(json.dumps(convert_authors(source, out, model=args.model_name, steps=args.steps)))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ip2p pairs` with its subcommands generate, filter, oracle and convert."""
    p = sub.add_parser("pairs", help="§3.1.2: paired images with Prompt-to-Prompt, and the CLIP filter",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="pairs_command", metavar="SUBCOMMAND")
    cmds.required = True
    g = cmds.add_parser("generate", help="generate paired images with their CLIP scores (resumable)",
                        description="Sample both images of each triple's caption pair from the same noise, image 1 "
                        "sharing image 0's self-attention for the first p of the steps; score them with CLIP; write "
                        "parquet shards. Rerun the same command to resume.")
    g.add_argument("--triples", type=Path, required=True, help="JSONL triples (input, edit, output) (required)")
    g.add_argument("--out", type=Path, required=True, help="output folder of shards; an existing run is resumed (required)")
    g.add_argument("--profile", choices=("toy", "smoke", "full"), default="toy",
                   help="toy: toy SD and toy CLIP; full: SD 1.5 and CLIP ViT-L/14 (default toy)")
    g.add_argument("--model", help="a Stable Diffusion pipeline folder or hub id (default: the profile's)")
    g.add_argument("--variant", default="self", help="attention control: self (the authors'), none, or another "
                   "registered variant (default self)")
    g.add_argument("--samples-per-pair", type=int, default=8,
                   help="samples per caption pair, at least 1 (default 8; the paper draws 100 and keeps 4)")
    g.add_argument("--steps", type=int, default=20, help="Euler ancestral steps (default 20; the authors' code 100)")
    g.add_argument("--batch-size", type=int, default=32, help="pairs per UNet call (default 32)")
    g.add_argument("--triples-per-shard", type=int, default=8, help="triples per shard file (default 8)")
    g.add_argument("--seed", type=int, default=0, help="run seed, 0 to 2**32-1 (default 0)")
    g.add_argument("--shard", help="I/N: run the I-th of N shares of the work (default: from accelerate's RANK and "
                   "WORLD_SIZE, else 0/1)")
    g.add_argument("--limit", type=int, help="use only the first LIMIT triples (default all)")
    g.add_argument("--max-shards", type=int, help="stop after writing this many new shards (default: no limit)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    g.set_defaults(func=_generate)

    f = cmds.add_parser("filter", help="keep the samples that pass the CLIP filter, at most 4 per caption pair",
                        description="Apply the four-score CLIP filter (§3.1.2) to a generated folder and write the "
                        "kept samples as a new dataset folder.")
    f.add_argument("--data", type=Path, required=True, help="the --out folder of `ip2p pairs generate` (required)")
    f.add_argument("--out", type=Path, required=True, help="folder for the filtered shards (required)")
    f.add_argument("--thresholds", default="toy", help="preset: paper, code or toy (default toy)")
    for name, what in (("sim-image", "cos(I0, I1)"), ("sim-direction", "cos(I1 - I0, T1 - T0)"),
                       ("sim-0", "cos(I0, T0)"), ("sim-1", "cos(I1, T1)")):
        f.add_argument(f"--{name}", type=float, help=f"minimum {what} (default: the preset's)")
    f.add_argument("--keep-per-pair", type=int, help="samples kept per caption pair (default: the preset's, 4)")
    f.add_argument("--by", choices=("clip", "oracle", "none"), default="clip",
                   help="the verdict a sample must pass before the per-pair cap: clip (the paper's four thresholds), "
                   "oracle (the toy world's ground truth: a perfect filter) or none (default clip)")
    f.set_defaults(func=_filter)

    s = cmds.add_parser("subset", help="a seeded random fraction of the caption pairs of a dataset",
                        description="Write the samples of a random fraction of the caption pairs of --data (whole "
                        "caption pairs, in their order) into --out: the dataset-size ablation of Figure 10.")
    s.add_argument("--data", type=Path, required=True, help="folder of shards (required)")
    s.add_argument("--fraction", required=True, help="share of the caption pairs to keep, in (0, 1] "
                   "(required)")
    s.add_argument("--out", type=Path, required=True, help="folder for the subset's shards (required)")
    s.add_argument("--seed", type=int, default=0, help="which caption pairs are drawn (default 0)")
    s.set_defaults(func=_subset)

    m = cmds.add_parser("match", help="keep the samples whose caption pair another dataset also holds",
                        description="Write the samples of --data whose caption pair (triple_index) --like also holds: "
                        "e.g. oracle pairs for exactly the caption pairs the CLIP filter kept, to compare training "
                        "on generated and on perfect pairs.")
    m.add_argument("--data", type=Path, required=True, help="folder of shards to take samples from (required)")
    m.add_argument("--like", type=Path, required=True, help="folder of shards whose caption pairs to keep (required)")
    m.add_argument("--out", type=Path, required=True, help="folder for the matched shards (required)")
    m.set_defaults(func=_match)

    o = cmds.add_parser("oracle", help="the miniature world's correct pairs for the triples, in the same format",
                        description="For each triple whose captions the miniature world reads, draw a scene the input "
                        "caption describes, render it and its edit, score both with toy CLIP; write parquet shards "
                        "like `generate` (resumable, --shard).")
    o.add_argument("--triples", type=Path, required=True, help="JSONL triples (input, edit, output) (required)")
    o.add_argument("--out", type=Path, required=True, help="output folder of shards; an existing run is resumed (required)")
    o.add_argument("--samples-per-pair", type=int, default=1, help="scenes per caption pair (default 1)")
    o.add_argument("--triples-per-shard", type=int, default=64, help="triples per shard file (default 64)")
    o.add_argument("--resolution", type=int, default=64, help="image side in pixels (default 64, the toy SD's)")
    o.add_argument("--seed", type=int, default=0, help="run seed, 0 to 2**32-1 (default 0)")
    o.add_argument("--shard", help="I/N: run the I-th of N shares of the work (default: from RANK and WORLD_SIZE)")
    o.add_argument("--limit", type=int, help="use only the first LIMIT triples (default all)")
    o.add_argument("--max-shards", type=int, help="stop after writing this many new shards (default: no limit)")
    o.set_defaults(func=_oracle)

    c = cmds.add_parser("convert", help="a folder in the authors' layout -> our parquet shards",
                        description="Read a folder written by the authors' generation script (seeds.json, "
                        "NNNNNNN/prompt.json, SEED_0.jpg, SEED_1.jpg, metadata.jsonl) and write its samples as "
                        "parquet shards with our columns (images keep their JPEG bytes).")
    c.add_argument("--from", dest="source", type=Path, required=True, help="the authors'-layout folder (required)")
    c.add_argument("--out", type=Path, required=True, help="folder for the shards; its old shards are replaced (required)")
    c.add_argument("--model-name", default="unknown", help="what to record as the generating model (default unknown)")
    c.add_argument("--steps", type=int, default=0, help="sampling steps to record (default 0: unknown)")
    c.set_defaults(func=_convert)
