"""`ip2p text`: the seed set, fine-tuning and generation at scale (§3.1.1).

    ip2p text seed [--out data/toy/seed_edits.jsonl]
    ip2p text finetune --backend hf --model data/toy/models/lm --out runs/text/lm-ft [--epochs 1]
    ip2p text finetune --backend openai --model gpt-4o-mini-2024-07-18
    ip2p text generate --backend hf --model runs/text/lm-ft --captions toy --n 1000 --out runs/text/toy.jsonl
    ip2p text generate --backend openai --model ft:... --captions ChristophSchuhmann/improved_aesthetics_6.5plus \\
        --n 454445 --out runs/text/laion.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError
from ip2p_lib.text.backends import SamplingSettings
from ip2p_lib.text.format import make_completion, make_prompt
from ip2p_lib.text.seed import SEED_SIZE


def _seed(args: argparse.Namespace) -> int:
    checks.number(args.n, "--n", int, minimum=1)
    checks.seed(args.seed)
    from ip2p_lib.text.seed import make_seed_set, seed_path, write_triples

    out = checks.output_file(args.out or seed_path(), "--out")
    path = write_triples(make_seed_set(args.n, args.seed), out)
    print(f"wrote {args.n} seed triples to {path}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    checks.number(args.epochs, "--epochs", above=0)
    if args.backend == "openai" and args.epochs != int(args.epochs):
        raise UserError(f"--epochs must be a whole number for the openai backend, got {args.epochs:g}")
    checks.number(args.batch_size, "--batch-size", int, minimum=1)
    checks.number(args.lr, "--lr", above=0)
    if args.dropout is not None:
        checks.number(args.dropout, "--dropout", minimum=0, maximum=0.99)
    checks.seed(args.seed)
    if args.seed_file is not None:
        checks.input_file(args.seed_file, "--seed-file", "triples file")
    from ip2p_lib.text.seed import load_seed_set

    triples = load_seed_set(args.seed_file)
    if args.backend == "hf":
        from ip2p_lib.infra.models import toy_model_dir

        model = args.model or toy_model_dir("lm")
        checks.model_folder(model, "--model", "config.json", "language model")
        out = checks.output_folder(args.out or "runs/text/lm-ft", "--out")
        from ip2p_lib.text.hf_backend import finetune_hf

        result = finetune_hf(model, triples, out, epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, dropout=args.dropout, seed=args.seed)
        print(f"fine-tuned on {len(triples)} triples in {result.seconds:.0f} s; loss "
              f"{result.losses[0]:.3f} -> {result.losses[-1]:.3f}; saved to {result.path}")
        return 0
    if args.backend == "openai":
        out = checks.output_folder(args.out or "runs/text/openai", "--out")
        from ip2p_lib.text.openai_backend import DEFAULT_BASE_MODEL, finetune_openai

        name = finetune_openai(triples, args.model or DEFAULT_BASE_MODEL, out, epochs=int(args.epochs),
                               base_url=args.base_url)
        print(f"fine-tuned model: {name}")
        return 0
    raise UserError(f"unknown backend {args.backend!r}; choose hf or openai")


def _check_generate_numbers(args: argparse.Namespace) -> None:
    checks.number(args.n, "--n", int, minimum=1)
    checks.number(args.retries, "--retries", int, minimum=0)
    if args.max_captions is not None:
        checks.number(args.max_captions, "--max-captions", int, minimum=1)
    checks.number(args.batch_size, "--batch-size", int, minimum=1)
    checks.number(args.workers, "--workers", int, minimum=1)
    checks.number(args.temperature, "--temperature", minimum=0, maximum=2)  # OpenAI's ranges
    checks.number(args.top_p, "--top-p", above=0, maximum=1)
    checks.number(args.frequency_penalty, "--frequency-penalty", minimum=-2, maximum=2)
    checks.seed(args.seed)


def _generate(args: argparse.Namespace) -> int:
    if args.model is None:
        raise UserError("--model is required: a fine-tuned model folder (hf) or a fine-tuned model name (openai)")
    _check_generate_numbers(args)
    if args.backend == "hf":
        checks.model_folder(args.model, "--model", "config.json", "language model")
    out = checks.output_file(args.out, "--out")
    if args.seed_file is not None:
        checks.input_file(args.seed_file, "--seed-file", "triples file")

    from ip2p_lib.text.generate import caption_source, generate_triples, make_backend, read_done

    exclude: list[str] = []
    if args.captions == "toy":
        from ip2p_lib.text.seed import load_seed_set

        exclude = [t["input"] for t in load_seed_set(args.seed_file)]
    # inputs first, the model last: a bad caption file or output file fails in a second
    captions = caption_source(args.captions, args.seed, exclude)
    read_done(out)
    options: dict[str, object] = {}
    if args.backend == "openai":
        options = {"base_url": args.base_url, "workers": args.workers,
                   "moderation_model": None if args.no_moderation else "omni-moderation-latest"}
    elif args.backend == "hf":
        options = {"batch_size": args.batch_size, "seed": args.seed}
    backend = make_backend(args.backend, args.model, **options)
    settings = SamplingSettings(temperature=args.temperature, top_p=args.top_p,
                                frequency_penalty=args.frequency_penalty)
    stats = generate_triples(backend, captions, out, args.n, settings, retries=args.retries,
                             batch_size=args.batch_size, seed=args.seed, max_captions=args.max_captions)
    total = stats.already_done + stats.written
    print(f"{args.out}: {total} triples ({stats.written} new, {stats.already_done} from before) in "
          f"{stats.seconds:.1f} s = {stats.triples_per_second:.2f} triples/s; rejected {json.dumps(stats.rejected)}")
    if total < args.n:
        print(f"stopped at {total} of {args.n} triples: the caption source ran out or --max-captions was reached")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ip2p text` with its subcommands seed, finetune and generate."""
    p = sub.add_parser("text", help="§3.1.1: seed triples, fine-tune a language model, generate triples at scale",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmds = p.add_subparsers(dest="text_command", metavar="SUBCOMMAND")
    cmds.required = True

    s = cmds.add_parser("seed", help="write the toy seed set (700 triples)",
                        description="Write the toy seed set: human-style triples of the miniature world.")
    s.add_argument("--n", type=int, default=SEED_SIZE, help=f"triples to write, at least 1 (default {SEED_SIZE}, "
                   "the paper's seed set size)")
    s.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    s.add_argument("--out", type=Path, help="JSONL file to write (default data/toy/seed_edits.jsonl)")
    s.set_defaults(func=_seed)

    f = cmds.add_parser("finetune", help="fine-tune a model on the seed triples",
                        description="Fine-tune a language model on seed triples in the authors' format: prompt "
                        f"{make_prompt('CAPTION')!r}, completion {make_completion('INSTRUCTION', 'EDITED CAPTION')!r}.")
    f.add_argument("--backend", choices=("hf", "openai"), default="hf",
                   help="hf (a local transformers model) or openai (a hosted fine-tuning job) (default hf)")
    f.add_argument("--model", help="hf: base model folder (default the toy LM, data/toy/models/lm); "
                   "openai: base model name (default gpt-4o-mini-2024-07-18)")
    f.add_argument("--seed-file", type=Path, help="triples to fine-tune on (default the toy seed set; "
                   "the authors' human-written-prompts.jsonl works as is)")
    f.add_argument("--out", type=Path, help="hf: output folder (default runs/text/lm-ft); "
                   "openai: folder for the training file (default runs/text/openai)")
    f.add_argument("--epochs", type=float, default=1.0, help="passes over the triples, > 0 (default 1.0, the paper's)")
    f.add_argument("--batch-size", type=int, default=8, help="hf: triples per step, at least 1 (default 8)")
    f.add_argument("--lr", type=float, default=1e-4, help="hf: peak learning rate, > 0 (default 0.0001)")
    f.add_argument("--dropout", type=float, help="hf: dropout while fine-tuning, 0 to 0.99 (default: the model's own)")
    f.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**32-1 (default 0)")
    f.add_argument("--base-url", help="openai: an OpenAI-compatible server (default: OpenAI's API)")
    f.set_defaults(func=_finetune)

    paper = SamplingSettings()
    g = cmds.add_parser("generate", help="generate filtered triples into a resumable JSONL file",
                        description="Complete captions into (instruction, edited caption) triples with the paper's "
                        "sampling settings and filters; an existing output file is resumed.")
    g.add_argument("--backend", choices=("hf", "openai"), default="hf",
                   help="hf (a local transformers model) or openai (an OpenAI-compatible API) (default hf)")
    g.add_argument("--model", help="hf: fine-tuned model folder; openai: fine-tuned model name (required, no default)")
    g.add_argument("--captions", default="toy",
                   help='"toy" (world captions unseen in the seed set), a .txt/.jsonl file, or a hub dataset id '
                   '(ChristophSchuhmann/improved_aesthetics_6.5plus for the paper\'s LAION-Aesthetics 6.5+) '
                   '(default toy)')
    g.add_argument("--n", type=int, required=True, help="triples the output file should hold, at least 1 (required)")
    g.add_argument("--out", type=Path, required=True, help="JSONL output; an existing file is resumed (required)")
    g.add_argument("--seed-file", type=Path,
                   help="seed triples whose captions toy generation avoids (default the toy seed set)")
    g.add_argument("--seed", type=int, default=1,
                   help="seed of the toy caption stream and the hf sampler, 0 to 2**32-1 (default 1)")
    g.add_argument("--retries", type=int, default=3, help="extra attempts per caption, at least 0 (default 3, the paper's)")
    g.add_argument("--max-captions", type=int, help="stop after trying this many captions (default: no limit)")
    g.add_argument("--batch-size", type=int, default=64, help="captions per batch, at least 1 (default 64)")
    g.add_argument("--temperature", type=float, default=paper.temperature,
                   help=f"sampling temperature, 0 to 2; 0 is greedy (default {paper.temperature}, the paper's)")
    g.add_argument("--top-p", type=float, default=paper.top_p,
                   help=f"nucleus sampling mass, > 0 and at most 1 (default {paper.top_p}, the paper's)")
    g.add_argument("--frequency-penalty", type=float, default=paper.frequency_penalty,
                   help="OpenAI's frequency penalty, -2 to 2: logit -= penalty x count of the token so far "
                   f"(default {paper.frequency_penalty}, the paper's)")
    g.add_argument("--workers", type=int, default=4, help="openai: requests in flight, at least 1 (default 4)")
    g.add_argument("--base-url", help="openai: an OpenAI-compatible server (default: OpenAI's API)")
    g.add_argument("--no-moderation", action="store_true",
                   help="openai: skip the moderation endpoint (default: moderate captions and outputs)")
    g.set_defaults(func=_generate)
