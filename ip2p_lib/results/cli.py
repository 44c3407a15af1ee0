"""`ip2p figures`: regenerate the paper's figures (§4) into figures/<profile>/.

    ip2p figures --profile toy
    ip2p figures --profile toy --only fig08 gallery --n 100
    ip2p figures --profile full --data data/converted --only fig04 fig08 gallery
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError

KEYS = ("fig04", "fig08", "fig10", "gallery")


def _run(args: argparse.Namespace) -> int:
    from ip2p_lib.infra.profiles import check_profile

    profile = check_profile(args.profile)
    only = args.only or [k for k in KEYS if not (profile == "full" and k == "fig10")]
    unknown = [k for k in only if k not in KEYS]
    if unknown:
        raise UserError(f"--only {' '.join(unknown)}: unknown figure; choose from {', '.join(KEYS)}")
    options = {}
    if args.n is not None:
        options["n"] = checks.number(args.n, "--n", kind=int, minimum=1)
    if args.steps is not None:
        options["steps"] = checks.number(args.steps, "--steps", kind=int, minimum=2)
    options["seed"] = checks.number(args.seed, "--seed", kind=int, minimum=0)
    threads = checks.number(args.threads, "--threads", kind=int, minimum=0)
    if args.data is not None and not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such folder; give a dataset folder of shards")
    options.update({"data": args.data, "model": args.model})
    if profile == "full" and args.data is None and any(k != "fig10" for k in only):
        raise UserError("the full profile needs a test set: --data FOLDER, a dataset folder of shards (e.g. "
                        "`ip2p pairs convert` of the authors' data); its test split is used")
    from ip2p_lib.infra.paths import figure_dir, repo_root

    out = checks.output_folder(args.out or figure_dir(profile), "--out")
    import torch

    from ip2p_lib.results.figures import make_figure

    if threads:
        torch.set_num_threads(threads)
    command = "ip2p " + " ".join(shlex.quote(w) for w in sys.argv[1:]) if sys.argv[1:2] == ["figures"] else ""
    for key in only:
        print(f"{key}: computing ...", flush=True)
        try:
            make_figure(key, profile, out, command=command or f"ip2p figures --profile {profile} --only {key}",
                        progress=not args.quiet, **options)
        except UserError as err:
            if args.only or key != "fig10":
                raise
            print(f"fig10: skipped, {err}", flush=True)  # the ablations are trainings: the other figures go on
            continue
        print(f"{key}: saved to {out}", flush=True)
    if profile == "toy" and Path(out).resolve() == (repo_root() / "figures" / "toy").resolve():
        from ip2p_lib.results.figures import update_readme

        update_readme(repo_root() / "README.md", out)
        print("README.md: figures section rewritten from the saved numbers", flush=True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ip2p figures`."""
    p = sub.add_parser("figures", help="§4: regenerate the paper's figures (4, 8, 10, galleries)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="toy", help="toy (CPU, the miniature world), smoke (tiny sizes) or full "
                   "(a GPU and the hub) (default toy)")
    p.add_argument("--only", nargs="+", metavar="FIGURE", help=f"some of {', '.join(KEYS)} (default: all; fig10 "
                   "is toy-only)")
    p.add_argument("--out", help="output folder (default figures/<profile>; figures/toy also rewrites the README's "
                   "figures section)")
    p.add_argument("--n", help="test cases per setting (default: each figure's, for the profile)")
    p.add_argument("--steps", help="sampler steps (default: the profile's, 20 toy, 100 full)")
    p.add_argument("--seed", default="0", help="draws the cases; case i is edited with seed + i (default 0)")
    p.add_argument("--data", help="full profile: the dataset folder whose test split is the test set (default none)")
    p.add_argument("--model", help="an InstructPix2Pix folder or hub id (default: the profile's)")
    p.add_argument("--threads", default="0", help="torch CPU threads (default 0: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: shown)")
    p.set_defaults(func=_run)
