"""The filtered dataset: the samples of a generated folder that pass the CLIP filter."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ip2p_lib.dataset.shards import read_table, scores_of, write_shard
from ip2p_lib.filtering.filter import Thresholds, select

RECORDS_PER_SHARD = 512


def filter_dataset(data: Path, out: Path, thresholds: Thresholds) -> dict[str, Any]:
    """Write the kept samples of `data` into `out` (replacing what `out` held) and `filter.json`."""
    frame = read_table(data)
    if len(frame) == 0:
        raise FileNotFoundError(f"no generated shards in {data}")
    keep = select(scores_of(frame), list(frame["triple_index"]), thresholds)
    kept = frame[keep].reset_index(drop=True)
    for old in out.glob("part-*.parquet"):
        old.unlink()
    records = [{**r, "original_image": r["original_image"]["bytes"], "edited_image": r["edited_image"]["bytes"]}
               for r in kept.to_dict("records")]
    for n, start in enumerate(range(0, len(records), RECORDS_PER_SHARD)):
        write_shard(out / f"part-{n:06d}.parquet", records[start:start + RECORDS_PER_SHARD])
    pairs = frame["triple_index"].nunique()
    summary = {"generated": int(len(frame)), "kept": int(len(kept)), "caption_pairs": int(pairs),
               "caption_pairs_with_a_kept_sample": int(kept["triple_index"].nunique()),
               "thresholds": thresholds.to_dict(), "source": str(data)}
    (out / "filter.json").write_text(json.dumps(summary, indent=2) + "\n")
    if (data / "run.json").exists():
        shutil.copy(data / "run.json", out / "run.json")
    return summary
