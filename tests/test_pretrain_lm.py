"""The toy LM: its tokenizer keeps newlines (the paper's format), its data has no instructions,
and a tiny run lowers its loss."""

import numpy as np

from ip2p_lib.toyworld import parse_caption
from ip2p_lib.toyworld.pretrain.lm import document, evaluate_lm, train_lm, train_tokenizer
from tests.pretrain_tiny import tiny_lm


def test_tokenizer_round_trips_the_fine_tuning_format():
    tok = train_tokenizer(tiny_lm())
    text = "a big red circle on a gray background\n##\nmake it blue\n%%\na big blue circle on a gray background\nEND"
    assert tok.decode(tok(text).input_ids) == text


def test_pretraining_documents_start_with_a_caption_and_hold_no_edit_format():
    rng = np.random.default_rng(0)
    for _ in range(300):
        doc = document(rng)
        parse_caption(doc.split("\n")[0])
        assert "##" not in doc and "%%" not in doc and "END" not in doc and "make" not in doc


def test_tiny_lm_lowers_its_loss(tmp_path):
    model, tok, state = train_lm(tiny_lm(steps=10), tmp_path, progress=False)
    assert np.mean(state.losses[-3:]) < np.mean(state.losses[:3])
    m = evaluate_lm(model, tok, n_docs=50, n_samples=4)
    assert m["heldout_perplexity"] > 1 and 0 <= m["samples_parse"] <= 1
