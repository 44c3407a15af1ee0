"""The toy LM: its tokenizer keeps newlines (the paper's format), its data has no instructions,
and a tiny run lowers its loss."""

import numpy as np
import pytest

from ip2p_lib.text.evaluate import caption_difference
from ip2p_lib.toyworld import parse_caption
from ip2p_lib.toyworld.pretrain.lm import document, evaluate_lm, series, train_lm, train_tokenizer
from tests.kill_and_resume import Killed, dying_at_call
from tests.pretrain_tiny import tiny_lm


def test_tokenizer_round_trips_the_fine_tuning_format():
    tok = train_tokenizer(tiny_lm())
    text = "a big red circle on a gray background\n##\nmake it blue\n%%\na big blue circle on a gray background\nEND"
    assert tok.decode(tok(text).input_ids) == text


INSTRUCTION_WORDS = {"make", "change", "turn", "move", "put", "give", "swap", "use", "replace", "please", "instead", "should"}


@pytest.mark.parametrize("p_series", [0.0, 0.5])
def test_pretraining_documents_start_with_a_caption_and_hold_no_edit_format(p_series):
    rng = np.random.default_rng(0)
    for _ in range(300):
        doc = document(rng, p_series)
        parse_caption(doc.split("\n")[0])
        assert "##" not in doc and "%%" not in doc and "END" not in doc
        assert not INSTRUCTION_WORDS & set(doc.replace("\n", " ").split()), doc


def test_series_lists_captions_in_one_wording_each_one_attribute_away_from_the_last():
    rng = np.random.default_rng(1)
    for _ in range(200):
        lines = series(rng).split("\n")
        assert 2 <= len(lines) <= 5
        parsed = [parse_caption(line) for line in lines]
        for a, b, line_a, line_b in zip(parsed, parsed[1:], lines, lines[1:]):
            assert len(caption_difference(a, b)) == 1, (line_a, line_b)
            assert line_a.split()[:2] == line_b.split()[:2] or line_a.split()[-2:] == line_b.split()[-2:], (line_a, line_b)


def test_tiny_lm_lowers_its_loss(tmp_path):
    model, tok, state = train_lm(tiny_lm(steps=10), tmp_path, progress=False)
    assert np.mean(state.losses[-3:]) < np.mean(state.losses[:3])
    m = evaluate_lm(model, tok, n_docs=50, n_samples=4)
    assert m["heldout_perplexity"] > 1 and 0 <= m["samples_parse"] <= 1


def test_a_killed_lm_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """GPT-2's dropout draws from torch's global generator, restored with the checkpoint, and its
    output layer shares the embedding's tensor: both survive a resume bit for bit."""
    import torch

    from ip2p_lib.toyworld.pretrain import lm

    full, _, full_state = train_lm(tiny_lm(steps=4), tmp_path / "full", progress=False)
    assert full.config.resid_pdrop > 0 and full.lm_head.weight is full.transformer.wte.weight
    real = lm.encode_docs  # called once a step: dies in step 2, after checkpoints at steps 1 and 2
    monkeypatch.setattr(lm, "encode_docs", dying_at_call(real, 3))
    with pytest.raises(Killed):
        train_lm(tiny_lm(steps=4), tmp_path / "killed", progress=False, checkpoint_every_s=0)
    monkeypatch.setattr(lm, "encode_docs", real)
    resumed, _, state = train_lm(tiny_lm(steps=4), tmp_path / "killed", progress=False)
    assert state.losses == full_state.losses
    assert resumed.lm_head.weight is resumed.transformer.wte.weight
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
