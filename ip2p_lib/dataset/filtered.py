"""The filtered dataset: the samples of a generated folder that pass the CLIP filter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

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


def filter_dataset(data: Path, out: Path, thresholds: Thresholds) -> dict[str, Any]:
    """Write the kept samples of `data` into `out` (replacing what `out` held) and `filter.json`."""
    frame = read_table(data)
    if len(frame) == 0:
        raise FileNotFoundError(f"no generated shards in {data}")
    keep = select(scores_of(frame), list(frame["triple_index"]), thresholds)
    kept = frame[keep].reset_index(drop=True)
    write_frame(kept, out)
    pairs = frame["triple_index"].nunique()
    summary = {"generated": int(len(frame)), "kept": int(len(kept)), "caption_pairs": int(pairs),
               "caption_pairs_with_a_kept_sample": int(kept["triple_index"].nunique()),
               "thresholds": thresholds.to_dict(), "source": str(data)}
    (out / "filter.json").write_text(json.dumps(summary, indent=2) + "\n")
    if (data / "run.json").exists():
        shutil.copy(data / "run.json", out / "run.json")
    return summary
