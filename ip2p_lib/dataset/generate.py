"""`ip2p pairs generate`: triples in, paired images with their CLIP scores out, in shards (§3.1.2).

For triple i, its samples' settings come from a generator seeded with (run seed, i): seed,
cfg ~ U(7.5, 15), p ~ U(0.1, 0.9) per sample. The triples are cut into fixed chunks of
`triples_per_shard`; chunk c becomes the shard `part-{c:06d}.parquet`, written atomically.
Every pair in a chunk is sampled in the same UNet batches whoever runs it, so:

- a killed run, rerun with the same command, skips the finished shards and remakes the rest
  exactly: nothing lost, nothing duplicated;
- `--shard I/N` (or one process per shard under `accelerate launch`) runs the chunks with
  c % N == I; the union of N processes' shards is the single-process dataset, record for record.

`run.json` holds the settings that decide the records; it is created atomically (exactly one
of N processes starting together creates it, the others check it), and a folder holding
another run's records is refused, not mixed. The same chunking serves the oracle pairs
(`oracle_pairs.py`) through `claim_folder` and `pending_chunks`.

Every sample is kept with its four scores; `ip2p pairs filter` makes the training set.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ip2p_lib.infra.errors import UserError
from ip2p_lib.p2p.sampler import CFG_RANGE, P_RANGE, TOY_STEPS, PairSpec, draw_specs, generate_pairs

RUN_FILE = "run.json"


@dataclass(frozen=True)
class RunSettings:
    """What decides the records of a run; a folder holds one run's records only."""

    model: str
    triples_sha256: str
    variant: str = "self"
    steps: int = TOY_STEPS
    samples_per_pair: int = 8
    triples_per_shard: int = 8
    batch_size: int = 32
    seed: int = 0
    cfg_range: tuple[float, float] = CFG_RANGE
    p_range: tuple[float, float] = P_RANGE
    limit: int | None = None  # only the first `limit` triples of the file (None: all of them)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def claim_folder(out: Path, settings: Any) -> None:
    """Write the run's settings (`settings.to_json()`) into `out`, or check that `out` holds this
    same run (resume). Safe when several processes start at once: `run.json` is created with a
    hard link, which fails if it exists, so one process creates it and the others compare."""
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / RUN_FILE
    mine = settings.to_json()
    if not run_file.exists():
        tmp = out / f".{RUN_FILE}.tmp-{os.getpid()}"
        tmp.write_text(json.dumps(mine, indent=2) + "\n")
        try:
            os.link(tmp, run_file)  # atomic create-if-absent: a complete file or none
            return
        except FileExistsError:
            pass  # another process of this run (or another run) was first: compare below
        except OSError:  # a file system without hard links: last writer wins, each file complete
            os.replace(tmp, run_file)
            return
        finally:
            tmp.unlink(missing_ok=True)
    try:
        theirs = json.loads(run_file.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{run_file} is not valid JSON; it is not a run of `ip2p pairs`: choose another --out") from None
    diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
    if diff:
        shown = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        raise UserError(f"--out {out} holds another run's data ({shown}); rerun with the same settings "
                        "to resume it, or choose a new --out")


def specs_for(triple_index: int, triple: Mapping[str, str], settings: RunSettings) -> list[PairSpec]:
    """The samples of one triple: a function of (run seed, triple index) only."""
    rng = np.random.default_rng([settings.seed, triple_index])
    return draw_specs(triple["input"], triple["output"], settings.samples_per_pair, rng, settings.steps,
                      settings.variant, settings.cfg_range, settings.p_range)


def shard_path(out: Path, chunk: int) -> Path:
    return out / f"part-{chunk:06d}.parquet"


def pending_chunks(out: Path, n_items: int, per_shard: int, shard: tuple[int, int]) -> tuple[list[int], int]:
    """(this process's chunks still to write, how many of its chunks are already written).

    Chunk c holds items [c * per_shard, (c + 1) * per_shard) and belongs to process c % N."""
    mine = [c for c in range((n_items + per_shard - 1) // per_shard) if c % shard[1] == shard[0]]
    todo = [c for c in mine if not shard_path(out, c).exists()]
    return todo, len(mine) - len(todo)


def write_chunk(out: Path, chunk: int, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write chunk `chunk`'s shard atomically, first removing temporary files that a killed run
    left for it (only the process that owns a chunk ever writes it)."""
    from ip2p_lib.dataset.shards import write_shard

    path = shard_path(out, chunk)
    for stale in out.glob(f".{path.name}.tmp-*"):
        stale.unlink(missing_ok=True)
    return write_shard(path, records)


@dataclass
class RunStats:
    pairs: int = 0
    shards_written: int = 0
    shards_done_before: int = 0
    seconds: float = 0.0
    passed: int = 0

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds else 0.0


def parse_shard(text: str) -> tuple[int, int]:
    """"I/N" -> (I, N) with 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UserError(f"--shard {text!r}: write it as I/N, e.g. 0/2 (this process, of N processes)") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"--shard {text!r}: need 0 <= I < N")
    return i, n


def generate_dataset(pipe: Any, scorer: Any, triples: Sequence[Mapping[str, str]], out: Path, settings: RunSettings,
                     shard: tuple[int, int] = (0, 1), max_shards: int | None = None,
                     passes: Callable[[Mapping[str, np.ndarray]], np.ndarray] | None = None,
                     progress: bool = True) -> RunStats:
    """Generate this process's shards of the run into `out` (see the module docstring).

    `passes` (scores -> bool mask) only feeds the progress bar's pass rate; every sample is
    written. `max_shards` stops after writing that many new shards (for time-boxed runs)."""
    from tqdm.auto import tqdm

    claim_folder(out, settings)
    k = settings.triples_per_shard
    stats = RunStats()
    todo, stats.shards_done_before = pending_chunks(out, len(triples), k, shard)
    if max_shards is not None:
        todo = todo[:max_shards]
    total = sum(min(k, len(triples) - c * k) for c in todo) * settings.samples_per_pair
    bar = tqdm(total=total, unit="pair", disable=not progress, desc=f"pairs (shard {shard[0]}/{shard[1]})")
    start = time.perf_counter()
    for c in todo:
        indices = range(c * k, min((c + 1) * k, len(triples)))
        specs = [s for i in indices for s in specs_for(i, triples[i], settings)]
        images = generate_pairs(pipe, specs, settings.batch_size, progress=bar.update)
        scores = scorer.scores(images.image_0, images.image_1, [s.caption_0 for s in specs],
                               [s.caption_1 for s in specs])
        records = []
        for j, spec in enumerate(specs):
            i = indices[j // settings.samples_per_pair]
            records.append({
                "original_prompt": spec.caption_0, "original_image": images.image_0[j],
                "edit_prompt": triples[i]["edit"], "edited_prompt": spec.caption_1, "edited_image": images.image_1[j],
                "triple_index": i, "sample": j % settings.samples_per_pair, "seed": spec.seed, "cfg": spec.cfg,
                "p": spec.p, "steps": spec.steps, "variant": spec.variant, "model": settings.model,
                **{name: float(v[j]) for name, v in scores.items()},
            })
        write_chunk(out, c, records)
        stats.pairs += len(specs)
        stats.shards_written += 1
        if passes is not None:
            stats.passed += int(passes(scores).sum())
        stats.seconds = time.perf_counter() - start
        bar.set_postfix(pairs_per_s=f"{stats.pairs_per_second:.2f}",
                        passed=f"{stats.passed / stats.pairs:.0%}" if passes is not None else "-")
    bar.close()
    stats.seconds = time.perf_counter() - start
    return stats


def regenerate(pipe: Any, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A sample's two images from its metadata alone (captions, seed, cfg, p, steps, variant)."""
    spec = PairSpec(record["original_prompt"], record["edited_prompt"], int(record["seed"]), float(record["cfg"]),
                    float(record["p"]), int(record["steps"]), str(record["variant"]))
    out = generate_pairs(pipe, [spec], batch_size=1)
    return out.image_0[0], out.image_1[0]
