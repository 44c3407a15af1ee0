"""Prompt-to-Prompt's cross-attention control: the word mapper and token alignment on hand-checked
token sequences, and the replace / refine controllers on toy SD (a few steps, two pairs): they edit
exactly the calls they claim, the maps after an edit are the mapped source maps, an identity edit
changes no pixel, and a real edit changes image 1's attention and pixels."""

import pytest
import torch

from ip2p_lib.infra import models
from ip2p_lib.infra.random_models import tiny_clip_tokenizer
from ip2p_lib.p2p import (
    VARIANTS,
    AttentionCall,
    AttentionStore,
    Controller,
    ControllerList,
    CrossAttentionRefine,
    CrossAttentionReplace,
    PairLayout,
    PairSpec,
    SelfAttentionSharing,
    generate_batch,
    refine_mapper,
    token_alignment,
    word_mapper,
)

# tiny tokenizer: "the" -> [the], "red" -> [red], "thing" -> [th, i, n, g], "blue" -> [b, l, u, e],
# "make" -> [mak, e]; sequences are [start, words..., end, pad...] (end = pad here).
TINY = tiny_clip_tokenizer()


def _mapper(pairs: dict[tuple[int, int], float], length: int) -> torch.Tensor:
    m = torch.zeros(length, length)
    for (s, t), w in pairs.items():
        m[s, t] = w
    return m


def test_tiny_tokenizer_splits_words_as_the_expected_matrices_assume():
    words = ("the", "red", "thing", "blue", "make")
    assert [len(TINY.encode(w, add_special_tokens=False)) for w in words] == [1, 1, 4, 4, 2]


def test_word_mapper_spreads_a_word_over_a_longer_target_word_and_shifts_the_padding():
    # "the red" = [S the red E P P P P P P], "the thing" = [S the th i n g E P P P]
    expected = _mapper({(0, 0): 1, (1, 1): 1, (2, 2): .25, (2, 3): .25, (2, 4): .25, (2, 5): .25,
                        (3, 6): 1, (4, 7): 1, (5, 8): 1, (6, 9): 1,
                        (7, 9): 1, (8, 9): 1, (9, 9): 1}, 10)      # sources past the end -> last column
    assert torch.equal(word_mapper(TINY, "the red", "the thing", 10), expected)


def test_word_mapper_gathers_a_multi_token_word_and_leaves_unreached_columns_empty():
    expected = _mapper({(0, 0): 1, (1, 1): 1, (2, 2): 1, (3, 2): 1, (4, 2): 1, (5, 2): 1,
                        (6, 3): 1, (7, 4): 1, (8, 5): 1, (9, 6): 1}, 10)   # columns 7-9: nothing maps
    m = word_mapper(TINY, "the thing", "the red", 10)
    assert torch.equal(m, expected)
    assert torch.equal(m.sum(1), torch.ones(10))                            # every source keeps its mass


def test_word_mapper_equal_token_counts_use_the_even_block():
    m = word_mapper(TINY, "the blue", "the thing", 10)
    assert torch.equal(m[2:6, 2:6], torch.full((4, 4), .25))
    assert torch.equal(m[6:, 6:], torch.eye(4))


def test_word_mapper_refuses_different_word_counts_and_names_refine():
    with pytest.raises(ValueError, match="same number of words.*use refine"):
        word_mapper(TINY, "the red", "make the red thing", 16)


def test_word_mapper_of_a_toy_caption_with_itself_is_the_identity():
    from transformers import CLIPTokenizer

    folder = models.toy_model_dir("sd", check=False) / "tokenizer"
    if not folder.exists():
        pytest.skip("toy SD not committed")
    tok = CLIPTokenizer.from_pretrained(folder)                 # SD 1.5's tokenizer: every toy word is one token
    c = "a large red circle on a gray background in the top left corner"
    assert torch.equal(word_mapper(tok, c, c, 77), torch.eye(77))


@pytest.mark.parametrize("tokens_1, mapper, alphas", [
    ([1, 2, 9, 3, 4], [0, 1, 1, 2, 3], [1, 1, 0, 1, 1]),    # insertion: 9 sits after token 1 of sequence 0
    ([1, 5, 3, 4], [0, 1, 2, 3], [1, 0, 1, 1]),             # substitution: a mismatch (-1) beats two gaps (-2)
    ([1, 3, 4], [0, 2, 3], [1, 1, 1]),                      # deletion of 2
    ([5, 6, 1, 2, 3, 4], [0, 0, 0, 1, 2, 3], [0, 0, 1, 1, 1, 1]),   # insertion at the start
])
def test_token_alignment_on_known_sequences(tokens_1, mapper, alphas):
    m, a = token_alignment([1, 2, 3, 4], tokens_1)
    assert m.tolist() == mapper and a.tolist() == alphas


def test_token_alignment_ties_match_the_later_copy():
    m, a = token_alignment([7], [7, 7])                      # traceback from the end prefers the diagonal
    assert m.tolist() == [0, 0] and a.tolist() == [0, 1]


def test_refine_mapper_aligns_words_and_continues_the_padding():
    # "the red" = [S the red E P ...], "make the red thing" = [S mak e the red th i n g E P ...]
    m, a = refine_mapper(TINY, "the red", "make the red thing", 16)
    assert m.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9]
    assert a.tolist() == [1, 0, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]


# ---------------------------------------------------------------- controllers on toy SD

C_RED = "a large red circle on a gray background at the top"
C_BLUE = "a large blue circle on a gray background at the top"
C_TRI = "a small green square on a white background"
C_TRI_1 = "a small green triangle on a white background"
# pair 0 of each: a mapping that is not the identity ("hexagon" is two tokens, "big" is inserted)
EDITED_PAIRS = {"replace": [("a large green square on a gray background", "a large green hexagon on a gray background"),
                            (C_TRI, C_TRI_1)],
                "refine": [("a red circle on a gray background", "a big red circle on a gray background"),
                           (C_TRI, C_TRI_1)]}
STEPS = 4


@pytest.fixture(scope="module")
def pipe():
    folder = models.toy_model_dir("sd", check=False)
    if not (folder / models.TOY_MODELS["sd"].marker).exists():
        pytest.skip("toy SD not committed")
    p = models.load_sd("toy")
    p.set_progress_bar_config(disable=True)
    return p


def _specs(pairs, p, variant="none"):
    ps = p if isinstance(p, list) else [p] * len(pairs)
    return [PairSpec(a, b, seed, 7.5, q, STEPS, variant) for seed, ((a, b), q) in enumerate(zip(pairs, ps))]


class _Seen(Controller):
    """Records every attention call it sees, on either path."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def edit_probs(self, probs, call):
        self.seen[call.layer] = call
        return probs

    def edit_qkv(self, q, k, v, call):
        self.seen[call.layer] = call
        return q, k, v


def _run(pipe, pairs, p, controller):
    before, after = AttentionStore(), AttentionStore()
    result = generate_batch(pipe, _specs(pairs, p), ControllerList(before, controller, after))
    return result, before, after


def test_needs_probs_only_on_edited_calls():
    ctl = CrossAttentionReplace(torch.eye(77).expand(2, 77, 77), torch.tensor([0.5, 0.25]), 0.5, 2)
    ctl.begin_step(1, 4)
    assert ctl.needs_probs(AttentionCall("x", True, 8, 1))                  # cross, inside pair 0's window
    assert not ctl.needs_probs(AttentionCall("x", False, 8, 1))             # self injection runs on the fused kernel
    ctl.begin_step(2, 4)
    assert not ctl.needs_probs(AttentionCall("x", True, 8, 2))              # both windows over


def test_identity_replace_of_identical_prompts_changes_no_pixel(pipe):
    pairs = [(C_RED, C_RED), (C_TRI, C_TRI)]
    tok = pipe.tokenizer
    mappers = torch.stack([word_mapper(tok, a, b) for a, b in pairs])
    assert torch.equal(mappers, torch.eye(77).expand(2, 77, 77))
    ctl = CrossAttentionReplace(mappers, 1.0, 0.0, 2)
    edited = generate_batch(pipe, _specs(pairs, 1.0), ControllerList(ctl, AttentionStore()))
    plain = generate_batch(pipe, _specs(pairs, 1.0), AttentionStore())   # same probability path, no edit
    assert ctl.edits["cross"] > 0
    assert (edited.image_0 == plain.image_0).all() and (edited.image_1 == plain.image_1).all()


def test_replace_counts_its_edits_per_window(pipe):
    pairs = [(C_RED, C_BLUE), (C_TRI, C_TRI_1)]
    mappers = torch.stack([word_mapper(pipe.tokenizer, a, b) for a, b in pairs])
    ctl = CrossAttentionReplace(mappers, torch.tensor([0.5, 0.25]), torch.tensor([0.25, 0.0]), 2, self_max_resolution=8)
    seen = _Seen()
    generate_batch(pipe, _specs(pairs, 0.5), ControllerList(seen, ctl))
    cross = sum(1 for c in seen.seen.values() if c.is_cross)
    coarse_self = sum(1 for c in seen.seen.values() if not c.is_cross and c.resolution <= 8)
    self_layers = sum(1 for c in seen.seen.values() if not c.is_cross)
    assert cross > 0 and 0 < coarse_self < self_layers
    assert ctl.edits == {"cross": cross * 2, "self": coarse_self * 1}       # steps < 0.5 * 4, steps < 0.25 * 4


class _SelfRecorder(Controller):
    """Keeps the self-attention queries (fused path) or probabilities (`probs=True`) it is handed."""

    def __init__(self, probs):
        super().__init__()
        self.probs, self.kept = probs, {}

    def needs_probs(self, call):
        return self.probs and not call.is_cross

    def edit_probs(self, probs, call):
        if not call.is_cross:
            self.kept[(call.layer, call.step)] = (call.resolution, probs.clone())
        return probs

    def edit_qkv(self, q, k, v, call):
        if not call.is_cross:
            self.kept[(call.layer, call.step)] = (call.resolution, q.clone())
        return q, k, v


@pytest.mark.parametrize("probs", [False, True], ids=["fused", "probs"])
def test_self_injection_copies_the_conditional_half_at_coarse_layers_only(pipe, probs):
    pairs = [(C_RED, C_BLUE), (C_TRI, C_TRI_1)]
    mappers = torch.stack([word_mapper(pipe.tokenizer, a, b) for a, b in pairs])
    ctl = CrossAttentionReplace(mappers, 0.0, 0.5, 2, self_max_resolution=8)
    recorder = _SelfRecorder(probs)
    generate_batch(pipe, _specs(pairs, 0.5), ControllerList(ctl, recorder))
    rows = PairLayout(2)
    same = {half: set() for half in ("uncond", "cond")}
    for (layer, step), (resolution, x) in recorder.kept.items():
        for half in same:
            if torch.equal(x[rows.rows(half, 0)], x[rows.rows(half, 1)]):
                same[half].add((step, resolution <= 8))
    assert (1, True) in same["cond"] and (1, False) not in same["cond"]      # injected: step 1, coarse layers
    assert not any(step >= 2 for step, _ in same["cond"])                    # window over
    assert not any(step >= 1 for step, _ in same["uncond"])                  # the unconditional half is P2P's own


@pytest.mark.parametrize("variant", ["replace", "refine"])
def test_maps_after_the_edit_are_the_mapped_source_maps(pipe, variant):
    pairs = EDITED_PAIRS[variant]
    ctl = VARIANTS[variant](_specs(pairs, [0.5, 0.0], variant), pipe.tokenizer)   # pair 1 is never edited
    if variant == "replace":
        assert not torch.equal(ctl.mappers[0], torch.eye(77))
    else:
        assert 0 < ctl.alphas[0].sum() < 77 and not torch.equal(ctl.mappers[0], torch.arange(77))
    _, before, after = _run(pipe, pairs, [0.5, 0.0], ctl)
    rows = PairLayout(2)
    src, tgt, un = rows.rows("cond", 0), rows.rows("cond", 1), slice(0, 4)
    for (layer, step), b in before.maps.items():
        a = after.maps[(layer, step)]
        assert torch.equal(a[un], b[un]) and torch.equal(a[src], b[src])    # uncond half and image 0 untouched
        assert torch.equal(a[tgt][1], b[tgt][1])                            # pair 1: fraction 0
        if step >= 2:
            assert torch.equal(a, b)
            continue
        s, t = b[src][0], b[tgt][0]
        if variant == "replace":
            expected = s @ ctl.mappers[0]
        else:
            alpha = ctl.alphas[0]
            expected = alpha * s[:, ctl.mappers[0]] + (1 - alpha) * t
        torch.testing.assert_close(a[tgt][0], expected, rtol=0, atol=1e-6)
        assert not torch.allclose(a[tgt][0], t, atol=1e-3)                  # and it is not image 1's own map


def test_replace_changes_image_1s_attention_and_pixels(pipe):
    pairs = [(C_RED, C_BLUE), (C_TRI, C_TRI_1)]
    none_result, _, none_maps = _run(pipe, pairs, 0.5, Controller())
    ctl = VARIANTS["replace"](_specs(pairs, 0.5, "replace"), pipe.tokenizer)
    replace_result, _, replace_maps = _run(pipe, pairs, 0.5, ctl)
    tgt = PairLayout(2).rows("cond", 1)
    layer = none_maps.layers(is_cross=True, resolution=16)[0]
    diff = (none_maps.maps[(layer, 1)][tgt] - replace_maps.maps[(layer, 1)][tgt]).abs().max()
    assert diff > 1e-2
    assert (none_result.image_0 == replace_result.image_0).all()            # image 0 is never touched
    assert (none_result.image_1 != replace_result.image_1).any()


def test_replace_variant_fails_on_different_word_counts_and_both_handles_them(pipe):
    pairs = [("a red circle on gray", "a big red circle on gray")]
    with pytest.raises(ValueError, match="use refine"):
        generate_batch(pipe, _specs(pairs, 0.5, "replace"))
    specs = _specs(pairs, 0.5, "both")
    ctl = VARIANTS["both"](specs, pipe.tokenizer)
    assert isinstance(ctl, ControllerList)
    sharing, refine = ctl.controllers
    assert isinstance(sharing, SelfAttentionSharing) and sharing.halves == ("uncond", "cond")
    assert isinstance(refine, CrossAttentionRefine) and refine.cross_fraction.tolist() == [0.5]
    generate_batch(pipe, specs, ctl)
    assert refine.edits["cross"] > 0 and refine.edits["self"] == 0
