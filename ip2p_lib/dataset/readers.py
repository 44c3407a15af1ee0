"""Readers of edit datasets in other layouts, as records in our columns (see `shards.py`).

The authors' layout, as their generation script writes it (§3.1.2):

    out/seeds.json                 sorted [[dir, [seed, ...]], ...]: the kept samples of each dir
    out/0000000/prompt.json        {"caption" or "input": ..., "edit": ..., "output": ...}
    out/0000000/{seed}_0.jpg       image 0 (input caption), image 1 (edited caption)
    out/0000000/{seed}_1.jpg
    out/0000000/metadata.jsonl     one line per sample: seed, p2p_threshold, cfg_scale,
                                   clip_sim_0, clip_sim_1, clip_sim_dir, clip_sim_image

`prompt.json` names the input caption `caption` (what the generation script writes) or `input`
(the released prompt files); both are read (the authors' own loaders handle only one of the
two: their issue #135). Without `seeds.json` every sample with both images is read, in folder
and seed order. Images are kept as the encoded bytes on disk (JPEG stays JPEG: no second lossy
pass); the `Image` feature of `datasets` decodes any format.

    ip2p pairs convert --from out --out data/converted    # to our parquet shards
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

from ip2p_lib.infra.errors import UserError

SEEDS_FILE = "seeds.json"
PROMPT_FILE = "prompt.json"
METADATA_FILE = "metadata.jsonl"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# metadata.jsonl field -> our column (our own names are accepted as they are)
SCORE_FIELDS = {"clip_sim_0": "sim_0", "clip_sim_1": "sim_1", "clip_sim_dir": "sim_direction",
                "clip_sim_image": "sim_image"}
AUTHORS_VARIANT = "self"  # their script shares self-attention for the first p of the steps


def is_authors_layout(folder: str | Path) -> bool:
    """Whether `folder` looks like the authors' layout: a seeds.json, or a NNNNNNN/prompt.json."""
    folder = Path(folder)
    return (folder / SEEDS_FILE).is_file() or any(folder.glob(f"*/{PROMPT_FILE}"))


@dataclass(frozen=True)
class AuthorsSample:
    """One sample of the authors' layout: where its files are, and its place in seeds.json."""

    dir: str
    seed: int
    pair_index: int    # the dir's position in seeds.json: the caption pair, for splits
    sample: int        # the seed's position in its dir's list


class AuthorsLayout:
    """Random access to the samples of a folder in the authors' layout (images read on demand).

    `pairs` is seeds.json's list (or the folders found); `samples` flattens it, pair by pair."""

    def __init__(self, folder: str | Path, model: str = "unknown", steps: int = 0) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise UserError(f"{self.folder}: no such folder; give a folder in the authors' layout (seeds.json, "
                            f"NNNNNNN/{PROMPT_FILE}, NNNNNNN/SEED_0.jpg)")
        self.model, self.steps = model, steps
        self.pairs = self._read_seeds()
        self.samples = [AuthorsSample(d, int(seed), i, j) for i, (d, seeds) in enumerate(self.pairs)
                        for j, seed in enumerate(seeds)]
        self._prompts: dict[str, dict[str, str]] = {}
        self._metadata: dict[str, dict[int, dict[str, Any]]] = {}

    def _read_seeds(self) -> list[tuple[str, list[int]]]:
        path = self.folder / SEEDS_FILE
        if not path.exists():
            return [(d.name, self._seeds_on_disk(d)) for d in sorted(self.folder.iterdir())
                    if (d / PROMPT_FILE).is_file()]
        try:
            pairs = json.loads(path.read_text())
            out = [(str(d), [int(s) for s in seeds]) for d, seeds in pairs]
        except (json.JSONDecodeError, TypeError, ValueError):
            raise UserError(f"{path} is not a list of [dir, [seed, ...]] pairs (the authors' seeds.json)") from None
        return out

    @staticmethod
    def _seeds_on_disk(d: Path) -> list[int]:
        seeds = {int(p.stem[:-2]) for p in d.iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.endswith("_0") and p.stem[:-2].isdigit()}
        return sorted(s for s in seeds if _image_path(d, s, 1) is not None)

    def __len__(self) -> int:
        return len(self.samples)

    def prompt(self, d: str) -> dict[str, str]:
        """prompt.json of dir `d` as {input, edit, output} (`caption` read as `input`)."""
        if d not in self._prompts:
            path = self.folder / d / PROMPT_FILE
            try:
                raw = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as err:
                raise UserError(f"{path}: cannot read it as JSON ({err})") from None
            caption = raw.get("input", raw.get("caption"))
            if caption is None or "edit" not in raw or "output" not in raw:
                raise UserError(f"{path} lacks the field(s) input (or caption), edit, output")
            self._prompts[d] = {"input": caption, "edit": raw["edit"], "output": raw["output"]}
        return self._prompts[d]

    def metadata(self, d: str) -> dict[int, dict[str, Any]]:
        """metadata.jsonl of dir `d` by seed ({} when the file is missing)."""
        if d not in self._metadata:
            path = self.folder / d / METADATA_FILE
            table: dict[int, dict[str, Any]] = {}
            if path.exists():
                for n, line in enumerate(path.read_text().splitlines(), 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        table[int(row["seed"])] = row
                    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                        raise UserError(f"{path}:{n} is not a JSON object with a seed") from None
            self._metadata[d] = table
        return self._metadata[d]

    def image_bytes(self, s: AuthorsSample, side: int) -> bytes:
        path = _image_path(self.folder / s.dir, s.seed, side)
        if path is None:
            raise UserError(f"{self.folder / s.dir}: no image {s.seed}_{side}.jpg (or .png)")
        return path.read_bytes()

    def record(self, i: int) -> dict[str, Any]:
        """Sample `i` in our columns (images as their encoded bytes; unknown numbers are NaN)."""
        s = self.samples[i]
        prompt, meta = self.prompt(s.dir), self.metadata(s.dir).get(s.seed, {})
        scores = {ours: _number(meta.get(theirs, meta.get(ours))) for theirs, ours in SCORE_FIELDS.items()}
        return {
            "original_prompt": prompt["input"], "original_image": self.image_bytes(s, 0),
            "edit_prompt": prompt["edit"], "edited_prompt": prompt["output"], "edited_image": self.image_bytes(s, 1),
            "triple_index": _dir_index(s.dir, s.pair_index), "sample": s.sample, "seed": s.seed,
            "cfg": _number(meta.get("cfg_scale", meta.get("cfg"))),
            "p": _number(meta.get("p2p_threshold", meta.get("p"))),
            "steps": self.steps, "variant": AUTHORS_VARIANT, "model": self.model, **scores,
        }

    def records(self) -> Iterator[dict[str, Any]]:
        return (self.record(i) for i in range(len(self)))


def _image_path(d: Path, seed: int, side: int) -> Path | None:
    for suffix in IMAGE_SUFFIXES:
        path = d / f"{seed}_{side}{suffix}"
        if path.exists():
            return path
    return None


def _number(value: Any) -> float:
    return math.nan if value is None else float(value)


def _dir_index(d: str, fallback: int) -> int:
    """The caption pair's index: the dir's number (0000042 -> 42), else its place in seeds.json."""
    name = Path(d).name
    return int(name) if name.isdigit() else fallback


def convert_authors(folder: str | Path, out: str | Path, model: str = "unknown", steps: int = 0,
                    records_per_shard: int = 512) -> dict[str, Any]:
    """Write the samples of an authors'-layout folder as our shards in `out` (replacing its
    shards); returns a summary. The shards keep seeds.json's order."""
    from ip2p_lib.dataset.shards import SHARD_GLOB, write_shard

    layout = AuthorsLayout(folder, model=model, steps=steps)
    if not len(layout):
        raise UserError(f"{folder}: no samples found (seeds.json is empty, or no NNNNNNN/SEED_0.jpg with its _1)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(SHARD_GLOB):
        old.unlink()
    shards = 0
    for start in range(0, len(layout), records_per_shard):
        rows = [layout.record(i) for i in range(start, min(start + records_per_shard, len(layout)))]
        write_shard(out / f"part-{shards:06d}.parquet", rows)
        shards += 1
    return {"source": str(folder), "layout": "authors", "samples": len(layout), "caption_pairs": len(layout.pairs),
            "shards": shards}


def read_records(folder: str | Path) -> Iterator[Mapping[str, Any]]:
    """The records of a dataset folder in either layout: our shards, or the authors' folders."""
    from ip2p_lib.dataset.shards import iter_records, read_table, shard_files

    if shard_files(folder):
        return iter_records(read_table(folder))
    if is_authors_layout(folder):
        return AuthorsLayout(folder).records()
    raise UserError(f"{folder}: neither dataset shards (part-*.parquet) nor the authors' layout (seeds.json)")
