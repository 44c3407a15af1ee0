"""CLIP's BPE tokenizer as transformers' `CLIPTokenizer`, rebuilt offline from open_clip.

Stable Diffusion 1.x tokenizes prompts with CLIP's byte-level BPE (49,408 ids). open_clip
ships the merges file inside its package, so the same tokenizer can be rebuilt without a
download. The vocabulary is laid out exactly as CLIP's (`ip2p_lib.infra.byte_bpe`): the 256
byte symbols, the same with `</w>`, one token per merge for the first 48,894 merges (ids
512..49405), then `<|startoftext|>` and `<|endoftext|>` (49406, 49407).

transformers 5 trap: `CLIPTokenizer(vocab_file=..., merges_file=...)` silently builds a
2-token tokenizer. We write `vocab.json` and `merges.txt` and call `from_pretrained`.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from ip2p_lib.infra.byte_bpe import BOS, EOS, clip_vocab

N_MERGES = 49152 - 256 - 2  # 48,894 merges -> 49,408 ids with the bytes and the 2 specials


def clip_merges() -> list[tuple[str, str]]:
    """The first `N_MERGES` merges of open_clip's packaged BPE file (no download)."""
    from open_clip.tokenizer import default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    return [tuple(line.split()) for line in lines[1:N_MERGES + 1]]  # line 0 is a version header


def save_clip_tokenizer(folder: Path, model_max_length: int = 77) -> Path:
    """Write a transformers `CLIPTokenizer` folder (vocab.json, merges.txt, configs)."""
    merges = clip_merges()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(clip_vocab(merges), ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(folder, model_max_length=model_max_length, pad_token=EOS,
                                        bos_token=BOS, eos_token=EOS, unk_token=EOS)
    tok.save_pretrained(folder)
    return folder


@lru_cache(maxsize=2)
def build_clip_tokenizer(model_max_length: int = 77) -> Any:
    """A `CLIPTokenizer` with CLIP's ids, padding with `<|endoftext|>` to 77 as SD 1.x does."""
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        save_clip_tokenizer(Path(tmp), model_max_length)
        return CLIPTokenizer.from_pretrained(tmp)
