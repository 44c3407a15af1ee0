"""`ip2p notebooks`: run the notebooks in order with papermill, for one profile.

Executed copies go to a git-ignored folder (default `build/notebooks/<profile>/`), figures to
`figures/<profile>/` and also inline, under the cell that draws them (the kernel gets Jupyter's
inline matplotlib backend). Each notebook's wall time and the numbers it `record`s go to
`figures/<profile>/measurements.json` (`ip2p_lib.infra.measurements`). The run stops at the
first failing notebook and names it, its failing cell and the error, so a broken step is found
without opening Jupyter. A toy run also refreshes README.md's measurement blocks, so the README
always quotes the file next to it; `--publish` writes the executed toy copies back into
`notebooks/` (`ip2p_lib.infra.publish`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ip2p_lib.infra import checks, measurements
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.paths import repo_root
from ip2p_lib.infra.profiles import PROFILES, check_profile, notebook_parameters

# Jupyter's own default backend: figures appear in the cell's outputs (ipykernel sets it only
# when MPLBACKEND is unset, and a shell or the tests may have set it to Agg).
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


@dataclass
class NotebookResult:
    """One notebook's run: where its executed copy is, how long it took, what failed."""

    stem: str
    output: Path
    seconds: float
    error: str | None = None


def widgets_can_show() -> bool:
    """Whether a notebook cell should show ipywidgets: True in a live Jupyter kernel that a person
    drives, False under `ip2p notebooks` (papermill: nobody to move a slider, so the notebooks draw
    a static figure instead), in plain Python, or without ipywidgets."""
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    in_kernel = shell is not None and "IPKernelApp" in shell.config
    return in_kernel and not os.environ.get(measurements.ENV_FILE)


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


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables (inherited by the kernel papermill starts), then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _kernel_config() -> dict:
    """Engine settings: encrypt the kernel's local TCP traffic where jupyter_client can.

    ipykernel >= 7 warns "Kernel is running over TCP without encryption" on every start unless
    the kernel manager provisions CurveZMQ keys; with `transport_encryption="auto"` it does so
    for kernelspecs that declare support, which removes the cause of the warning, not only the
    message. Older jupyter_client versions have no such setting and no warning."""
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if not KernelManager.class_traits().get("transport_encryption"):
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


def run_notebooks(
    profile: str = "toy",
    only: Sequence[str] | None = None,
    out_dir: Path | None = None,
    figure_root: Path | None = None,
    kernel: str = "python3",
    log: Callable[[str], None] = print,
    notebooks_dir: Path | None = None,
    progress: bool = False,
) -> list[NotebookResult]:
    """Execute the notebooks for `profile`; stop at the first failure (its result has `error`).

    `progress` shows a bar per notebook: its cells done / total, the notebook's place in the
    run and the time since the run started."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    check_profile(profile)
    root = repo_root()
    notebooks = select_notebooks(list_notebooks(notebooks_dir or root / "notebooks"), only)
    out_dir = Path(out_dir or root / "build" / "notebooks" / profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = Path(figure_root).resolve() if figure_root is not None else root / "figures"
    record_file = measurements.measurements_file(figures, profile)
    env = {"MPLBACKEND": INLINE_BACKEND, measurements.ENV_FILE: str(record_file)}
    if figure_root is not None:
        env["IP2P_FIGURE_ROOT"] = str(figures)
    engine = _kernel_config()
    results: list[NotebookResult] = []
    run_start = time.perf_counter()
    for i, nb in enumerate(notebooks, 1):
        output = out_dir / nb.name
        log(f"[{i}/{len(notebooks)}] {nb.stem} ({profile}) ...")
        bar: dict | bool = False
        if progress:
            bar = {
                "desc": f"[{i}/{len(notebooks)}] {nb.stem}, {_elapsed(time.perf_counter() - run_start)} into the run",
                "bar_format": "{desc} | cell {n_fmt}/{total_fmt} {bar:20} {elapsed} in this notebook",
                "leave": False,
                "file": sys.stderr,
            }
        measurements.begin_notebook(record_file, nb.stem)
        start = time.perf_counter()
        try:
            with _environment(**env, **{measurements.ENV_NOTEBOOK: nb.stem}):
                papermill.execute_notebook(
                    str(nb),
                    str(output),
                    parameters=notebook_parameters(nb.stem, profile),
                    kernel_name=kernel,
                    cwd=str(root),
                    progress_bar=bar,
                    **engine,
                )
        except PapermillExecutionError as err:
            seconds = time.perf_counter() - start
            measurements.drop_notebook(record_file, nb.stem)
            error = (
                f"{nb.stem} failed in code cell {err.exec_count} (cell index {err.cell_index}): "
                f"{err.ename}: {err.evalue}. Executed copy: {output}"
            )
            log(f"[{i}/{len(notebooks)}] FAILED {error}")
            results.append(NotebookResult(nb.stem, output, seconds, error))
            return results
        seconds = time.perf_counter() - start
        measurements.end_notebook(record_file, nb.stem, seconds, profile)
        log(
            f"[{i}/{len(notebooks)}] {nb.stem} ok in {seconds:.1f} s "
            f"({_elapsed(time.perf_counter() - run_start)} into the run) -> {output}"
        )
        results.append(NotebookResult(nb.stem, output, seconds))
    return results


def publish(results: Sequence[NotebookResult], notebooks_dir: Path, log: Callable[[str], None] = print) -> list[Path]:
    """Write each executed copy back over its notebook in `notebooks_dir`, outputs included."""
    from ip2p_lib.infra.publish import publish_notebook

    written = []
    for r in results:
        written.append(publish_notebook(r.output, notebooks_dir / r.output.name))
        log(f"published {written[-1]}")
    return written


def update_readme(profile: str = "toy", figure_root: Path | None = None, readme: Path | None = None) -> Path:
    """Render `figures/<profile>/measurements.json` into README.md's measurement blocks."""
    root = repo_root()
    readme = Path(readme or root / "README.md")
    data = measurements.load(measurements.measurements_file(Path(figure_root or root / "figures"), profile))
    readme.write_text(measurements.update_readme(readme.read_text(), data))
    return readme


def _run(args: argparse.Namespace) -> int:
    if args.measurements_table:
        path = measurements.measurements_file(Path(args.figures or repo_root() / "figures"), args.profile)
        print(measurements.render_table(measurements.load(path)))
        return 0
    if args.update_readme:
        if args.profile != "toy":
            raise UserError("the README quotes the toy profile's measurements; drop --profile")
        print(f"updated {update_readme('toy', args.figures)}")
        return 0
    if args.publish and args.profile != "toy":
        raise UserError(f"--publish writes the toy profile's outputs into notebooks/; drop --profile {args.profile}")
    for folder, option in ((args.out, "--out"), (args.figures, "--figures")):
        if folder is not None:
            checks.output_folder(folder, option)  # before papermill and the first notebook
    results = run_notebooks(args.profile, args.only, args.out, args.figures, progress=not args.no_progress)
    if args.profile == "toy" and args.figures is None:
        # The README quotes figures/toy/measurements.json; keep the two in step after every run.
        print(f"updated the measurements in {update_readme()}")
    failed = [r for r in results if r.error]
    total = sum(r.seconds for r in results)
    if failed:
        print(f"ip2p notebooks: {failed[0].error}", file=sys.stderr)
        return 1
    print(f"all {len(results)} notebooks ran in {total:.0f} s (profile {args.profile})")
    if args.publish:
        publish(results, repo_root() / "notebooks")
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
    p.add_argument(
        "--publish",
        action="store_true",
        help="after a successful toy run, write the executed copies back into notebooks/ (outputs "
        "included, volatile metadata removed; default: off)",
    )
    p.add_argument(
        "--measurements-table",
        action="store_true",
        help="print figures/<profile>/measurements.json as the Markdown table README.md quotes; run nothing (default: off)",
    )
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="rewrite README.md's measurement blocks from figures/toy/measurements.json (every toy run "
        "does it too); run nothing (default: off)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: show the cells of the current notebook)")
    p.set_defaults(func=_run)
