"""Oracle pairs: what Prompt-to-Prompt should have produced, rendered by the miniature world.

For a triple whose captions the world can read, draw a scene that the input caption describes
(what it leaves unsaid, e.g. the position, drawn at random), render it, apply the edit that
the caption pair implies, and render that. The result is a perfect edit dataset in the same
format as `ip2p pairs generate` writes (same columns, same chunking, same resume): the upper
bound to compare the generated pairs with, scored by the same CLIP.

    ip2p pairs oracle --triples data/generated/toy/triples.jsonl --out data/generated/toy/oracle

A record's `seed` is its scene seed: `scene_for_caption(parse_caption(input), default_rng(seed))`
draws its scene again. `cfg` and `p` are NaN, `steps` 0, `variant` and `model` "oracle".
Triples whose captions do not parse, or do not differ by exactly one edit, get no record.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ip2p_lib.dataset.generate import RunStats, claim_folder, pending_chunks, write_chunk
from ip2p_lib.p2p.evaluate import edit_from_captions
from ip2p_lib.toyworld import Scene, apply, parse_caption, render
from ip2p_lib.toyworld.scene import at_region

ORACLE = "oracle"  # the `model` and `variant` of oracle records
MAX_DRAWS = 100


@dataclass(frozen=True)
class OracleSettings:
    """What decides the records of an oracle run (stored as run.json, like `RunSettings`)."""

    triples_sha256: str
    samples_per_pair: int = 1
    triples_per_shard: int = 64
    seed: int = 0
    resolution: int = 64
    limit: int | None = None
    kind: str = ORACLE

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def scene_for_caption(attrs: Mapping[str, str | None], rng: np.random.Generator, avoid: tuple[str, str] | None = None) -> Scene:
    """A scene with the caption's attributes (`parse_caption`'s dict); a position the caption
    names is drawn inside that region, an unnamed one anywhere, but not in region `avoid`."""
    scene = Scene(str(attrs["shape"]), str(attrs["color"]), str(attrs["background"]), str(attrs["size"]))
    if attrs["hpos"] is not None:
        return at_region(scene, (str(attrs["hpos"]), str(attrs["vpos"])), rng)
    for _ in range(MAX_DRAWS):
        drawn = scene.replace(u=float(rng.uniform()), v=float(rng.uniform()))
        if (drawn.hpos, drawn.vpos) != avoid:
            return drawn
    raise RuntimeError(f"no position outside {avoid} in {MAX_DRAWS} draws")  # probability 1/9 ** 100


def oracle_pair(caption_0: str, caption_1: str, seed: int, resolution: int = 64) -> tuple[np.ndarray, np.ndarray] | None:
    """(image 0, image 1) for a caption pair and a scene seed, or None when the world cannot read
    the captions or they differ by more (or less) than one edit."""
    edit = edit_from_captions(caption_0, caption_1)
    if edit is None:
        return None
    attrs = parse_caption(caption_0)
    scene = scene_for_caption(attrs, np.random.default_rng(seed), avoid=edit.region if edit.kind == "move" else None)
    edited = apply(scene, edit)
    if not _says(parse_caption(caption_1), edited):  # e.g. "a red circle on gray" -> "... on a gray background"
        return None
    return render(scene, resolution), render(edited, resolution)


def _says(attrs: Mapping[str, str | None], scene: Scene) -> bool:
    """Whether the caption attributes describe the scene (an unnamed position says nothing)."""
    same = all(attrs[k] == getattr(scene, k) for k in ("shape", "color", "background", "size"))
    return same and (attrs["hpos"] is None or (attrs["hpos"], attrs["vpos"]) == (scene.hpos, scene.vpos))


def triple_seeds(triple_index: int, settings: OracleSettings) -> list[int]:
    """The scene seeds of one triple's samples: a function of (run seed, triple index) only."""
    rng = np.random.default_rng([settings.seed, triple_index])
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=settings.samples_per_pair)]


def chunk_records(triples: Sequence[Mapping[str, str]], indices: Sequence[int], settings: OracleSettings,
                  scorer: Any) -> list[dict[str, Any]]:
    """The oracle records of the triples `indices`, with their CLIP scores."""
    rows = []
    for i in indices:
        t = triples[i]
        for j, seed in enumerate(triple_seeds(i, settings)):
            pair = oracle_pair(t["input"], t["output"], seed, settings.resolution)
            if pair is None:
                break  # the same for every seed: the captions decide
            rows.append({"original_prompt": t["input"], "original_image": pair[0], "edit_prompt": t["edit"],
                         "edited_prompt": t["output"], "edited_image": pair[1], "triple_index": i, "sample": j,
                         "seed": seed, "cfg": math.nan, "p": math.nan, "steps": 0, "variant": ORACLE,
                         "model": ORACLE})
    if rows:
        scores = scorer.scores(np.stack([r["original_image"] for r in rows]), np.stack([r["edited_image"] for r in rows]),
                               [r["original_prompt"] for r in rows], [r["edited_prompt"] for r in rows])
        for k, r in enumerate(rows):
            r.update({name: float(v[k]) for name, v in scores.items()})
    return rows


def oracle_dataset(triples: Sequence[Mapping[str, str]], out: Path, settings: OracleSettings, scorer: Any,
                   shard: tuple[int, int] = (0, 1), max_shards: int | None = None, progress: bool = True) -> RunStats:
    """Write this process's shards of the oracle run into `out` (chunks, resume and `--shard` as
    in `generate.generate_dataset`). `stats.pairs` counts the records written."""
    from tqdm.auto import tqdm

    claim_folder(out, settings)
    k = settings.triples_per_shard
    stats = RunStats()
    todo, stats.shards_done_before = pending_chunks(out, len(triples), k, shard)
    if max_shards is not None:
        todo = todo[:max_shards]
    start = time.perf_counter()
    for c in tqdm(todo, unit="shard", disable=not progress, desc=f"oracle pairs (shard {shard[0]}/{shard[1]})"):
        records = chunk_records(triples, range(c * k, min((c + 1) * k, len(triples))), settings, scorer)
        write_chunk(out, c, records)
        stats.pairs += len(records)
        stats.shards_written += 1
    stats.seconds = time.perf_counter() - start
    return stats
