"""The filtered dataset: the samples of a generated folder that pass the CLIP filter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ip2p_lib.dataset.shards import read_table, scores_of, write_shard
from ip2p_lib.filtering.filter import Thresholds, select

RECORDS_PER_SHARD = 512


def write_frame(frame: Any, out: Path) -> None:
    """Write the rows of `frame` (as `read_table` gives them) as the shards of `out`, replacing its old ones."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    records = [{**r, "original_image": r["original_image"]["bytes"], "edited_image": r["edited_image"]["bytes"]}
               for r in frame.to_dict("records")]
    for n, start in enumerate(range(0, len(records), RECORDS_PER_SHARD)):
        write_shard(out / f"part-{n:06d}.parquet", records[start:start + RECORDS_PER_SHARD])


def match_caption_pairs(data: Path, like: Path, out: Path) -> dict[str, Any]:
    """Write the samples of `data` whose caption pair (triple_index) `like` also holds into `out`.

    Makes two training sets comparable: e.g. oracle pairs for exactly the caption pairs that
    survived the CLIP filter, so that the contiguous train split cuts both at the same pairs."""
    frame, wanted = read_table(data), set(read_table(like, columns=["triple_index"])["triple_index"])
    if len(frame) == 0:
        raise FileNotFoundError(f"no shards in {data}")
    kept = frame[frame["triple_index"].isin(wanted)].reset_index(drop=True)
    write_frame(kept, out)
    summary = {"source": str(data), "like": str(like), "records": int(len(kept)),
               "caption_pairs": int(kept["triple_index"].nunique()), "caption_pairs_in_like": len(wanted)}
    (out / "match.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


FILTERS = ("clip", "oracle", "none")


def oracle_good(frame: Any) -> np.ndarray:
    """Per sample: does the toy oracle call the pair good (image 0 shows caption 0, the edit of the
    caption pair was made and nothing else changed)? A perfect filter, for the Figure 10 ablation."""
    from ip2p_lib.dataset.shards import images_of
    from ip2p_lib.p2p.evaluate import oracle_verdicts

    verdict = oracle_verdicts(images_of(frame, "original_image"), images_of(frame, "edited_image"),
                              list(frame["original_prompt"]), list(frame["edited_prompt"]))
    return verdict["success"] & verdict["faithful_0"]


def subset_caption_pairs(data: Path, fraction: float, out: Path, seed: int = 0) -> dict[str, Any]:
    """Write the samples of a seeded random `fraction` of the caption pairs of `data` into `out`
    (kept in their order), for the dataset-size ablation (Figure 10): whole caption pairs, so
    that a smaller set has fewer edits, not fewer samples of each."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction={fraction}: must be in (0, 1]")
    frame = read_table(data)
    if len(frame) == 0:
        raise FileNotFoundError(f"no shards in {data}")
    pairs = np.sort(frame["triple_index"].unique())
    chosen = np.random.default_rng(seed).choice(pairs, size=max(1, round(fraction * len(pairs))), replace=False)
    kept = frame[frame["triple_index"].isin(set(chosen.tolist()))].reset_index(drop=True)
    write_frame(kept, out)
    summary = {"source": str(data), "fraction": fraction, "seed": seed, "records": int(len(kept)),
               "caption_pairs": int(kept["triple_index"].nunique()), "caption_pairs_in_source": int(len(pairs))}
    (out / "subset.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def filter_dataset(data: Path, out: Path, thresholds: Thresholds, by: str = "clip") -> dict[str, Any]:
    """Write the kept samples of `data` into `out` (replacing what `out` held) and `filter.json`.

    `by` says which verdict a sample must pass before the per-pair cap: "clip" (the paper's four
    thresholds), "oracle" (the toy world's ground truth) or "none" (every sample)."""
    if by not in FILTERS:
        raise ValueError(f"by={by!r}: choose one of {', '.join(FILTERS)}")
    frame = read_table(data)
    if len(frame) == 0:
        raise FileNotFoundError(f"no generated shards in {data}")
    ok = None if by == "clip" else oracle_good(frame) if by == "oracle" else np.ones(len(frame), dtype=bool)
    keep = select(scores_of(frame), list(frame["triple_index"]), thresholds, ok=ok)
    kept = frame[keep].reset_index(drop=True)
    write_frame(kept, out)
    pairs = frame["triple_index"].nunique()
    summary = {"generated": int(len(frame)), "kept": int(len(kept)), "caption_pairs": int(pairs),
               "caption_pairs_with_a_kept_sample": int(kept["triple_index"].nunique()),
               "by": by, "thresholds": thresholds.to_dict(), "source": str(data)}
    (out / "filter.json").write_text(json.dumps(summary, indent=2) + "\n")
    if (data / "run.json").exists():
        shutil.copy(data / "run.json", out / "run.json")
    return summary
