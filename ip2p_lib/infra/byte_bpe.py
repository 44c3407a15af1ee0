"""Byte-level BPE's alphabet (GPT-2, CLIP) and CLIP's vocabulary layout, for any merges list.

Byte-level BPE spells every text with 256 symbols, one per byte; the bytes that are printable
Latin-1 keep their own character and the others are moved to chr(256), chr(257), ... so that
no symbol is white space or a control character. CLIP's vocabulary is then

    ids 0..255        the 256 byte symbols (printable bytes first, then the rest)
    ids 256..511      the same symbols with the end-of-word marker `</w>`
    ids 512..         one token per merge, in merge order
    last two ids      `<|startoftext|>`, `<|endoftext|>`

Toy SD's tokenizer (CLIP's own 48,894 merges) and the tiny test tokenizer (a handful of
merges) are both built from it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


@lru_cache(maxsize=1)
def byte_symbols() -> tuple[str, ...]:
    """The 256 printable characters that stand for the 256 bytes, in CLIP's id order: first
    the printable Latin-1 bytes, which keep their own character, then the other bytes in
    order, mapped to chr(256), chr(257), ..."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in keep]
    return tuple(chr(b) for b in keep) + tuple(chr(256 + k) for k in range(len(others)))


def clip_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Token -> id in CLIP's layout (see the module docstring) for these merges."""
    symbols = byte_symbols()
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}
