"""`ip2p notebooks`: run the notebooks in order with papermill, for one profile.

Executed copies go to a git-ignored folder (default `build/notebooks/<profile>/`), figures to
`figures/<profile>/`. The run stops at the first failing notebook and names it, its failing
cell and the error, so a broken step is found without opening Jupyter.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.paths import repo_root
from ip2p_lib.infra.profiles import PROFILES, notebook_parameters


@dataclass
class NotebookResult:
    """One notebook's run: where its executed copy is, how long it took, what failed."""

    stem: str
    output: Path
    seconds: float
    error: str | None = None


def list_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks `NN_name.ipynb`, in paper order."""
    folder = folder or repo_root() / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(notebooks: list[Path], only: Sequence[str] | None) -> list[Path]:
    """Keep the notebooks named in `only` by number ("03") or stem ("03_clip_filtering")."""
    if not only:
        return notebooks
    chosen = [p for p in notebooks if any(p.stem == o or p.stem.split("_")[0] == o.zfill(2) for o in only)]
    missing = [o for o in only if not any(p.stem == o or p.stem.split("_")[0] == o.zfill(2) for p in notebooks)]
    if missing:
        names = ", ".join(p.stem for p in notebooks)
        raise UserError(f"no notebook matches {', '.join(missing)}; the notebooks are {names}")
    return chosen


def run_notebooks(
    profile: str = "toy",
    only: Sequence[str] | None = None,
    out_dir: Path | None = None,
    figure_root: Path | None = None,
    kernel: str = "python3",
    log: Callable[[str], None] = print,
    notebooks_dir: Path | None = None,
) -> list[NotebookResult]:
    """Execute the notebooks for `profile`; stop at the first failure (its result has `error`)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    if profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    root = repo_root()
    notebooks = select_notebooks(list_notebooks(notebooks_dir or root / "notebooks"), only)
    out_dir = Path(out_dir or root / "build" / "notebooks" / profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    if figure_root is not None:
        os.environ["IP2P_FIGURE_ROOT"] = str(Path(figure_root).resolve())
    os.environ.setdefault("MPLBACKEND", "Agg")
    results: list[NotebookResult] = []
    for i, nb in enumerate(notebooks, 1):
        output = out_dir / nb.name
        log(f"[{i}/{len(notebooks)}] {nb.stem} ({profile}) ...")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(nb),
                str(output),
                parameters=notebook_parameters(nb.stem, profile),
                kernel_name=kernel,
                cwd=str(root),
                progress_bar=False,
            )
        except PapermillExecutionError as err:
            seconds = time.perf_counter() - start
            error = (
                f"{nb.stem} failed in code cell {err.exec_count} (cell index {err.cell_index}): "
                f"{err.ename}: {err.evalue}. Executed copy: {output}"
            )
            log(f"[{i}/{len(notebooks)}] FAILED {error}")
            results.append(NotebookResult(nb.stem, output, seconds, error))
            return results
        seconds = time.perf_counter() - start
        log(f"[{i}/{len(notebooks)}] {nb.stem} ok in {seconds:.1f} s -> {output}")
        results.append(NotebookResult(nb.stem, output, seconds))
    return results


def _run(args: argparse.Namespace) -> int:
    for folder, option in ((args.out, "--out"), (args.figures, "--figures")):
        if folder is not None:
            checks.output_folder(folder, option)  # before papermill and the first notebook
    results = run_notebooks(args.profile, args.only, args.out, args.figures)
    failed = [r for r in results if r.error]
    total = sum(r.seconds for r in results)
    if failed:
        print(f"ip2p notebooks: {failed[0].error}", file=sys.stderr)
        return 1
    print(f"all {len(results)} notebooks ran in {total:.0f} s (profile {args.profile})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `ip2p notebooks`."""
    p = sub.add_parser(
        "notebooks",
        help="run the notebooks end to end with papermill",
        description="Run notebooks/NN_*.ipynb in order for a profile; stop at the first failure.",
    )
    p.add_argument("--profile", choices=PROFILES, default="toy",
                   help="toy (a laptop CPU), smoke (CI sizes) or full (GPU) (default toy)")
    p.add_argument("--only", nargs="+", metavar="NN",
                   help="run only these notebooks, by number or name (default: all, in order)")
    p.add_argument("--out", type=Path, help="folder for executed copies (default build/notebooks/<profile>)")
    p.add_argument("--figures", type=Path, help="folder replacing figures/ (default: the repo's figures/)")
    p.set_defaults(func=_run)
