"""The edit dataset on disk: parquet shards in the layout of `timbrooks/instructpix2pix-clip-filtered`.

Columns: `original_prompt, original_image, edit_prompt, edited_prompt, edited_image` (images as
PNG bytes, the hub dataset's `Image` feature), plus what regenerates and judges each sample:
`triple_index, sample, seed, cfg, p, steps, variant, model` and the four CLIP scores.
`datasets.load_dataset("parquet", data_files=...)` reads a folder of them as it is.

A shard is written to a temporary name and renamed into place, so a reader never sees half a
shard, and a run killed at any moment loses only the shard it was making.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from ip2p_lib.filtering.scores import SCORE_NAMES

HUB_COLUMNS = ("original_prompt", "original_image", "edit_prompt", "edited_prompt", "edited_image")
META_COLUMNS = ("triple_index", "sample", "seed", "cfg", "p", "steps", "variant", "model")
SCORE_COLUMNS = SCORE_NAMES  # the four CLIP scores, named as the filter names them
IMAGE_COLUMNS = ("original_image", "edited_image")
SHARD_GLOB = "part-*.parquet"


def features() -> Any:
    """The `datasets.Features` of a shard (images as the hub's `Image` feature)."""
    from datasets import Features, Image, Value

    kinds = {"triple_index": "int64", "sample": "int32", "seed": "int64", "cfg": "float64", "p": "float64",
             "steps": "int32", "variant": "string", "model": "string",
             **dict.fromkeys(SCORE_COLUMNS, "float32")}
    return Features({"original_prompt": Value("string"), "original_image": Image(),
                     "edit_prompt": Value("string"), "edited_prompt": Value("string"), "edited_image": Image(),
                     **{k: Value(v) for k, v in kinds.items()}})


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 (H, W, 3) array as PNG bytes (lossless: the pixels come back exactly)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def decode_png(data: bytes | Mapping[str, Any]) -> np.ndarray:
    """uint8 (H, W, 3) from PNG bytes or a `datasets` image struct {"bytes": ..., "path": ...}."""
    from PIL import Image

    if isinstance(data, Mapping):
        data = data["bytes"]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def write_shard(path: str | Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write `records` (image columns as uint8 arrays or PNG bytes) as one parquet shard, atomically."""
    from datasets import Dataset

    path = Path(path)
    columns: dict[str, list] = {name: [] for name in features()}
    for r in records:
        for name in columns:
            value = r[name]
            if name in IMAGE_COLUMNS:
                value = {"bytes": value if isinstance(value, bytes) else png_bytes(value), "path": None}
            columns[name].append(value)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    Dataset.from_dict(columns, features=features()).to_parquet(str(tmp))
    os.replace(tmp, path)
    return path


def shard_files(folder: str | Path) -> list[Path]:
    """The finished shards of a dataset folder (searched recursively), in name order."""
    return sorted(p for p in Path(folder).rglob(SHARD_GLOB) if not p.name.startswith("."))


def read_table(folder: str | Path, columns: Sequence[str] | None = None) -> Any:
    """All shards of `folder` as one pandas DataFrame (fast: pyarrow, no cache), sorted by
    (triple_index, sample) so that a sharded run and a single-process run read the same."""
    import pandas as pd
    import pyarrow.parquet as pq

    files = shard_files(folder)
    if not files:
        return pd.DataFrame(columns=list(columns or features()))
    cols = None if columns is None else list(dict.fromkeys([*columns, "triple_index", "sample"]))
    frame = pd.concat([pq.read_table(f, columns=cols).to_pandas() for f in files], ignore_index=True)
    return frame.sort_values(["triple_index", "sample"], kind="stable").reset_index(drop=True)


def load_hf(folder: str | Path, split: str = "train") -> Any:
    """The shards through `datasets.load_dataset("parquet", ...)`: images decode to PIL."""
    from datasets import load_dataset

    files = shard_files(folder)
    if not files:
        raise FileNotFoundError(f"no dataset shards ({SHARD_GLOB}) under {folder}")
    return load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split)


def scores_of(frame: Any) -> dict[str, np.ndarray]:
    """The four CLIP score columns of a DataFrame, as the filter takes them."""
    return {name: frame[name].to_numpy() for name in SCORE_COLUMNS}


def images_of(frame: Any, column: str) -> np.ndarray:
    """(N, H, W, 3) uint8 from a DataFrame image column."""
    return np.stack([decode_png(v) for v in frame[column]])


def iter_records(frame: Any) -> Iterable[dict[str, Any]]:
    return (dict(r) for _, r in frame.iterrows())
