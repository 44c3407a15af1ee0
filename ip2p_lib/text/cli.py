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

from ip2p_lib.infra.errors import UserError


def _seed(args: argparse.Namespace) -> int:
    from ip2p_lib.text.seed import make_seed_set, seed_path, write_triples

    path = write_triples(make_seed_set(args.n, args.seed), args.out or seed_path())
    print(f"wrote {args.n} seed triples to {path}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from ip2p_lib.text.seed import load_seed_set

    triples = load_seed_set(args.seed_file)
    if args.backend == "hf":
        from ip2p_lib.text.caption_lm import toy_lm_path
        from ip2p_lib.text.hf_backend import finetune_hf

        result = finetune_hf(args.model or toy_lm_path(), triples, args.out or "runs/text/lm-ft", epochs=args.epochs,
                             batch_size=args.batch_size, lr=args.lr, dropout=args.dropout, seed=args.seed)
        print(f"fine-tuned on {len(triples)} triples in {result.seconds:.0f} s; loss "
              f"{result.losses[0]:.3f} -> {result.losses[-1]:.3f}; saved to {result.path}")
        return 0
    if args.backend == "openai":
        from ip2p_lib.text.openai_backend import DEFAULT_BASE_MODEL, finetune_openai

        name = finetune_openai(triples, args.model or DEFAULT_BASE_MODEL, args.out or "runs/text/openai",
                               epochs=max(1, round(args.epochs)), base_url=args.base_url)
        print(f"fine-tuned model: {name}")
        return 0
    raise UserError(f"unknown backend {args.backend!r}; choose hf or openai")


def _generate(args: argparse.Namespace) -> int:
    from ip2p_lib.text.backends import SamplingSettings
    from ip2p_lib.text.generate import make_backend
    from ip2p_lib.text.generate import caption_source, generate_triples

    if args.model is None:
        raise UserError("--model is required: a fine-tuned model folder (hf) or a fine-tuned model name (openai)")
    exclude: list[str] = []
    if args.captions == "toy":
        from ip2p_lib.text.seed import load_seed_set

        exclude = [t["input"] for t in load_seed_set(args.seed_file)]
    options: dict[str, object] = {}
    if args.backend == "openai":
        options = {"base_url": args.base_url, "workers": args.workers,
                   "moderation_model": None if args.no_moderation else "omni-moderation-latest"}
    elif args.backend == "hf":
        options = {"batch_size": args.batch_size, "seed": args.seed}
    backend = make_backend(args.backend, args.model, **options)
    settings = SamplingSettings(temperature=args.temperature, frequency_penalty=args.frequency_penalty)
    stats = generate_triples(backend, caption_source(args.captions, args.seed, exclude), args.out, args.n, settings,
                             retries=args.retries, batch_size=args.batch_size, seed=args.seed,
                             max_captions=args.max_captions)
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

    s = cmds.add_parser("seed", help="write the toy seed set (700 triples)")
    s.add_argument("--n", type=int, default=700)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, help="default data/toy/seed_edits.jsonl")
    s.set_defaults(func=_seed)

    f = cmds.add_parser("finetune", help="fine-tune a model on the seed triples")
    f.add_argument("--backend", choices=("hf", "openai"), default="hf")
    f.add_argument("--model", help="hf: base model folder (default the toy LM); openai: base model name")
    f.add_argument("--seed-file", type=Path, help="triples to fine-tune on (default the toy seed set; "
                   "the authors' human-written-prompts.jsonl works as is)")
    f.add_argument("--out", type=Path, help="hf: output folder; openai: folder for the training file")
    f.add_argument("--epochs", type=float, default=1.0, help="the paper's 1 by default")
    f.add_argument("--batch-size", type=int, default=8)
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--dropout", type=float, help="hf: dropout while fine-tuning (default: the model's own)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--base-url", help="an OpenAI-compatible server (openai backend)")
    f.set_defaults(func=_finetune)

    g = cmds.add_parser("generate", help="generate filtered triples into a resumable JSONL file")
    g.add_argument("--backend", choices=("hf", "openai"), default="hf")
    g.add_argument("--model", help="hf: fine-tuned model folder; openai: fine-tuned model name")
    g.add_argument("--captions", default="toy",
                   help='"toy" (world captions unseen in the seed set), a .txt/.jsonl file, or a hub dataset id '
                   '(ChristophSchuhmann/improved_aesthetics_6.5plus for the paper\'s LAION-Aesthetics 6.5+)')
    g.add_argument("--n", type=int, required=True, help="triples the output file should hold")
    g.add_argument("--out", type=Path, required=True, help="JSONL output; an existing file is resumed")
    g.add_argument("--seed-file", type=Path, help="seed triples whose captions toy generation avoids")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--retries", type=int, default=3, help="extra attempts per caption (paper: 3)")
    g.add_argument("--max-captions", type=int, help="stop after trying this many captions (default: no limit)")
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--frequency-penalty", type=float, default=0.1)
    g.add_argument("--workers", type=int, default=4, help="openai: requests in flight")
    g.add_argument("--base-url", help="an OpenAI-compatible server (openai backend)")
    g.add_argument("--no-moderation", action="store_true", help="openai: skip the moderation endpoint")
    g.set_defaults(func=_generate)
