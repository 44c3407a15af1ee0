"""CLIP's tokenizer rebuilt offline as transformers' CLIPTokenizer: the same ids as CLIP's."""

import numpy as np
import open_clip
import pytest

from ip2p_lib.toyworld.captions import all_captions
from ip2p_lib.toyworld.pretrain.tokenizer import build_clip_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_clip_tokenizer()


def test_known_ids(tok):
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77


def test_same_ids_as_open_clip_on_world_captions_and_odd_text(tok):
    reference = open_clip.get_tokenizer("ViT-B-32")
    captions = all_captions()
    texts = [captions[i] for i in np.random.default_rng(0).choice(len(captions), 300, replace=False)]
    texts += ["A Big, RED circle!! 123 in the top-left...", "naïve café, 日本", "don't   stop\nnow"]
    for text in texts:
        expected = [int(i) for i in reference([text])[0] if i != 0]
        assert tok(text).input_ids == expected, text


def test_pads_to_77_with_end_of_text_as_sd_does(tok):
    ids = tok("a red circle", padding="max_length", max_length=tok.model_max_length).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and set(ids[4:]) == {49407}


def test_byte_symbols_are_clip_and_gpt2s_byte_table():
    from open_clip.tokenizer import bytes_to_unicode

    from ip2p_lib.infra.byte_bpe import byte_symbols

    table = bytes_to_unicode()  # byte -> symbol, in id order
    assert byte_symbols() == tuple(table.values())
    assert len(set(byte_symbols())) == 256 and not any(c.isspace() for c in byte_symbols())


def test_the_tiny_test_tokenizer_shares_the_layout(tok):
    from ip2p_lib.infra.random_models import tiny_clip_tokenizer

    tiny = tiny_clip_tokenizer()
    ids = tiny("make the red").input_ids
    assert tiny.convert_ids_to_tokens(ids) == ["<|startoftext|>", "mak", "e</w>", "the</w>", "red</w>", "<|endoftext|>"]
    for token in ("a", "~", "\u0100", "a</w>"):  # byte symbols keep CLIP's ids
        assert tiny.convert_tokens_to_ids(token) == tok.convert_tokens_to_ids(token)
