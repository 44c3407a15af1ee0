"""The edit dataset as training examples (§3.2): {original, edited, edit_prompt}, augmented as a pair.

The authors' loader, step by step, for one example:

    r ~ U{min_res, ..., max_res}                      one resize size for the example
    x0, x1 = resize(image_0, r), resize(image_1, r)  LANCZOS, to r x r
    x      = concat(x0, x1) along channels            (6, r, r), values 2 * pixel / 255 - 1
    x      = flip(crop(x))                            ONE random crop and ONE flip for both
    original, edited = x.chunk(2)

so the input image and its edit always keep the same geometry: a crop or flip drawn per image
would teach the model that an edit moves the picture. The authors train with r = crop = 256
(no crop in effect) and flip probability 0.5.

Splits are contiguous, not shuffled: the first 90 % of the caption pairs train, the next 5 %
validate, the last 5 % test (the authors split seeds.json, one entry per caption pair). Cutting
by caption pair, not by sample, keeps the samples of one pair on one side of the cut.

Randomness: example `i` in epoch `e` draws its resize, crop and flip (and, with `per_pair`, its
sample) from a generator seeded with (seed, e, i), so a run is reproducible whatever the
DataLoader's worker count or order. Call `set_epoch` each epoch for fresh draws.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ip2p_lib.infra.errors import UserError

SPLIT_FRACTIONS = (0.9, 0.05, 0.05)  # train, val, test (the authors' `splits`)
SPLITS = ("train", "val", "test", "all")
CROPS = ("random", "center")


def split_range(n: int, split: str, fractions: Sequence[float] = SPLIT_FRACTIONS) -> tuple[int, int]:
    """[start, end) of `split` among `n` caption pairs: contiguous cuts at floor(fraction * n)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if split == "all":
        return 0, n
    train, val, _ = fractions
    lo, hi = {"train": (0.0, train), "val": (train, train + val), "test": (train + val, 1.0)}[split]
    return math.floor(lo * n), math.floor(hi * n)


# ---------------------------------------------------------------- sources: caption pairs of samples


class ShardSource:
    """Our parquet shards through `datasets` (memory-mapped Arrow: no image is read until asked).

    `groups[k]` are the rows of the k-th caption pair, pairs in triple_index order, samples in
    sample order (the order of `shards.read_table`)."""

    def __init__(self, folder: str | Path) -> None:
        from ip2p_lib.dataset.shards import load_hf

        self.table = load_hf(folder).data  # the Arrow table; images stay encoded
        triple = np.asarray(self.table.column("triple_index").to_numpy())
        sample = np.asarray(self.table.column("sample").to_numpy())
        order = np.lexsort((sample, triple))
        starts = np.flatnonzero(np.r_[True, np.diff(triple[order]) != 0])
        self.groups = [list(map(int, g)) for g in np.split(order, starts[1:])] if len(order) else []

    def row(self, i: int) -> tuple[bytes, bytes, str]:
        t = self.table
        return (t.column("original_image")[i].as_py()["bytes"], t.column("edited_image")[i].as_py()["bytes"],
                t.column("edit_prompt")[i].as_py())


class AuthorsSource:
    """A folder in the authors' layout (`readers.AuthorsLayout`): caption pairs in seeds.json order."""

    def __init__(self, folder: str | Path) -> None:
        from ip2p_lib.dataset.readers import AuthorsLayout

        self.layout = AuthorsLayout(folder)
        self.groups: list[list[int]] = [[] for _ in self.layout.pairs]
        for i, s in enumerate(self.layout.samples):
            self.groups[s.pair_index].append(i)

    def row(self, i: int) -> tuple[bytes, bytes, str]:
        s = self.layout.samples[i]
        return self.layout.image_bytes(s, 0), self.layout.image_bytes(s, 1), self.layout.prompt(s.dir)["edit"]


def open_source(folder: str | Path) -> ShardSource | AuthorsSource:
    """Our shards if `folder` holds any, else the authors' layout."""
    from ip2p_lib.dataset.readers import is_authors_layout
    from ip2p_lib.dataset.shards import shard_files

    if shard_files(folder):
        return ShardSource(folder)
    if is_authors_layout(folder):
        return AuthorsSource(folder)
    raise UserError(f"{folder}: no dataset here: neither shards (part-*.parquet) nor the authors' layout (seeds.json)")


# ---------------------------------------------------------------- the pair transform


def to_unit_range(image: Any) -> torch.Tensor:
    """(3, H, W) float in [-1, 1] from a PIL image or a uint8 (H, W, 3) array: 2 * x / 255 - 1."""
    x = torch.from_numpy(np.array(image.convert("RGB") if hasattr(image, "convert") else image, dtype=np.uint8))
    return x.permute(2, 0, 1).float() / 127.5 - 1.0


def pair_transform(image_0: Any, image_1: Any, rng: np.random.Generator, resolution: int,
                   resize_range: tuple[int, int], crop: str | None, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The authors' augmentation of one pair (module docstring): one resize size, then one crop
    and one flip of the two images stacked along channels. PIL images in, two (3, res, res) out."""
    from PIL import Image

    r = int(rng.integers(resize_range[0], resize_range[1] + 1))
    size = (r, r)
    images = [im if im.size == size else im.resize(size, Image.Resampling.LANCZOS) for im in (image_0, image_1)]
    x = torch.cat([to_unit_range(im) for im in images])            # (6, r, r): both images, one tensor
    top = left = (r - resolution) // 2                               # centre crop
    if crop == "random":
        top, left = (int(v) for v in rng.integers(0, r - resolution + 1, size=2))
    if crop is not None:
        x = x[:, top:top + resolution, left:left + resolution]
    if flip and rng.uniform() < 0.5:
        x = x.flip(-1)                                               # horizontal flip of both at once
    original, edited = x.chunk(2)
    return original.contiguous(), edited.contiguous()


class EditPairs(torch.utils.data.Dataset):
    """Training examples {"original", "edited": (3, res, res) in [-1, 1], "edit_prompt": str}.

    One example per sample, or per caption pair with `per_pair` (the authors': each access picks
    one of the pair's kept samples at random)."""

    def __init__(self, source: ShardSource | AuthorsSource, resolution: int, flip: bool = True,
                 crop: str | None = "random", split: str = "train", seed: int = 0,
                 resize_range: tuple[int, int] | None = None, per_pair: bool = False,
                 fractions: Sequence[float] = SPLIT_FRACTIONS) -> None:
        if crop is not None and crop not in CROPS:
            raise ValueError(f"crop must be one of {', '.join(CROPS)} or None, got {crop!r}")
        resize_range = tuple(resize_range or (resolution, resolution))
        if not resolution <= resize_range[0] <= resize_range[1]:
            raise ValueError(f"need resolution <= min resize <= max resize, got {resolution} and {resize_range}")
        if crop is None and resize_range != (resolution, resolution):
            raise ValueError("without a crop the images must be resized to the resolution: resize_range=None")
        self.source, self.resolution, self.flip, self.crop = source, resolution, flip, crop
        self.resize_range, self.seed, self.per_pair, self.epoch = resize_range, seed, per_pair, 0
        lo, hi = split_range(len(source.groups), split, fractions)
        self.groups = source.groups[lo:hi]
        self.rows = [i for g in self.groups for i in g]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups) if self.per_pair else len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from PIL import Image

        if not 0 <= i < len(self):
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        row = self.groups[i][int(rng.integers(len(self.groups[i])))] if self.per_pair else self.rows[i]
        data_0, data_1, prompt = self.source.row(row)
        image_0, image_1 = (Image.open(io.BytesIO(b)).convert("RGB") for b in (data_0, data_1))
        original, edited = pair_transform(image_0, image_1, rng, self.resolution, self.resize_range, self.crop,
                                          self.flip)
        return {"original": original, "edited": edited, "edit_prompt": prompt}


def load_for_training(folder: str | Path, resolution: int, flip: bool = True, crop: str | None = "random",
                      split: str = "train", seed: int = 0, resize_range: tuple[int, int] | None = None,
                      per_pair: bool = False, fractions: Sequence[float] = SPLIT_FRACTIONS) -> EditPairs:
    """A torch Dataset of training examples from `folder` (our shards or the authors' layout).

    `resolution`: the output side; `resize_range` (min, max): the side each pair is LANCZOS-resized
    to before the crop (default: the resolution, as the authors train); `crop`: "random",
    "center" or None; `flip`: a horizontal flip with probability 0.5; `split`: train, val, test
    (contiguous 0.9 / 0.05 / 0.05 of the caption pairs) or all; `seed`: the draws (see
    `EditPairs.set_epoch`); `per_pair`: one example per caption pair (the authors')."""
    return EditPairs(open_source(folder), resolution, flip=flip, crop=crop, split=split, seed=seed,
                     resize_range=resize_range, per_pair=per_pair, fractions=fractions)
