"""The authors' fine-tuning format, the paper's filters, the toy seed set and the file readers."""

import json
import re

import numpy as np
import pytest

from ip2p_lib.infra.errors import UserError
from ip2p_lib.text.evaluate import judge_triple
from ip2p_lib.text.format import EDIT_END, is_unchanged, make_completion, make_prompt, parse_completion
from ip2p_lib.text.seed import (
    EXTRA_PHRASINGS, SEED_SIZE, load_seed_set, make_seed_set, read_triples, uses_heldout_phrasing,
)
from ip2p_lib.toyworld import EDIT_KINDS, instruction, sample_edit, sample_scene


def test_format_is_exactly_the_authors():
    assert make_prompt("a cat") == "a cat\n##\n"
    assert make_completion("make it a dog", "a dog") == "make it a dog\n%%\na dog\nEND"
    # what generation returns (stop sequence removed) splits back into the two parts
    assert parse_completion("make it a dog\n%%\na dog") == ("make it a dog", "a dog")
    assert parse_completion("make it a dog\n%%\na dog\nEND") == ("make it a dog", "a dog")


@pytest.mark.parametrize("text", ["no delimiter at all", "a\n%%\nb\n%%\nc", "", None])
def test_completion_must_split_into_exactly_two_parts(text):
    assert parse_completion(text) is None


def test_unchanged_filter_uses_strip_punctuation_and_case():
    assert is_unchanged("A red circle.", " a red circle!")
    assert is_unchanged("a red circle", "A RED CIRCLE?")
    assert not is_unchanged("a red circle", "a blue circle")


def test_committed_seed_set_is_the_generator_output_and_covers_every_kind():
    seed = load_seed_set()
    assert len(seed) == SEED_SIZE
    assert seed == make_seed_set()  # reproducible: the file is what `ip2p text seed` writes
    assert len({t["input"] for t in seed}) == SEED_SIZE
    judged = [judge_triple(t["input"], t["edit"] + EDIT_END + t["output"]) for t in seed]
    assert all(j.consistent for j in judged), [j.reason for j in judged if not j.consistent][:3]
    kinds = [j.kind for j in judged]
    for kind in EDIT_KINDS:
        assert kinds.count(kind) == SEED_SIZE // len(EDIT_KINDS)
    # varied phrasing: many distinct instructions, both directions of resize, every extra wording used
    assert len({t["edit"] for t in seed}) > 400
    lowered = " ".join(t["edit"].lower() for t in seed)
    assert "bigger" in lowered and "smaller" in lowered and "please" in lowered
    assert any(t["edit"][0].isupper() for t in seed) and any(t["edit"].endswith(".") for t in seed)
    for key, extras in EXTRA_PHRASINGS.items():
        used = sum(bool(re.fullmatch(re.sub(r"\\\{[a-z_]+\\\}", ".+", re.escape(e.lower())) + r"\.?",
                                     re.sub(r"^please ", "", t["edit"].lower()))) for e in extras for t in seed)
        assert used > 0, key


def test_seed_set_contains_no_heldout_phrasing():
    # the patterns catch every held-out phrasing, filled in with world values ...
    rng = np.random.default_rng(0)
    for i in range(200):
        scene = sample_scene(rng)
        edit = sample_edit(scene, rng, kinds=(EDIT_KINDS[i % 5],))
        assert uses_heldout_phrasing("Please " + instruction(edit, scene, rng, split="heldout") + ".")
    assert not uses_heldout_phrasing("give it a white background")  # an everyday wording, not "... backdrop"
    # ... and none occurs in the seed set
    assert [t["edit"] for t in load_seed_set() if uses_heldout_phrasing(t["edit"])] == []


def test_readers_accept_the_authors_files_and_their_field_name_quirk(tmp_path):
    human = tmp_path / "human-written-prompts.jsonl"
    human.write_text(json.dumps({"input": "a cat on a sofa", "edit": "make it a dog", "output": "a dog on a sofa"}) + "\n"
                     + json.dumps({"input": "a bowl of fruit", "edit": "add grapes", "output": "a bowl of fruit and grapes"}) + "\n")
    generated = tmp_path / "gpt-generated-prompts.jsonl"
    generated.write_text(json.dumps({"caption": "a house", "edit": "make it winter", "output": "a house in winter",
                                     "url": "http://x/1.jpg"}) + "\n\n")
    a = read_triples(human)
    assert [t["input"] for t in a] == ["a cat on a sofa", "a bowl of fruit"] and a[0]["edit"] == "make it a dog"
    b = read_triples(generated)
    assert b == [{"input": "a house", "edit": "make it winter", "output": "a house in winter", "url": "http://x/1.jpg"}]


def test_readers_reject_bad_files_with_a_user_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="no triples"):
        read_triples(empty)
    partial = tmp_path / "partial.jsonl"
    partial.write_text(json.dumps({"input": "a cat", "edit": "x"}) + "\n")
    with pytest.raises(UserError, match="output"):
        read_triples(partial)
    with pytest.raises(UserError, match="no triples file"):
        read_triples(tmp_path / "missing.jsonl")
