"""The world's judgement of generated triples: instruction -> edit, caption difference, consistency."""

import numpy as np
import pytest

from ip2p_lib.text.evaluate import instruction_edit, judge_triple, quality_table
from ip2p_lib.toyworld import EDIT_KINDS, Edit, apply, caption, instruction, parse_caption, sample_edit, sample_scene


def test_every_world_phrasing_is_read_back_as_its_edit():
    """Train and held-out phrasings of random edits: the judge recovers kind and target."""
    rng = np.random.default_rng(0)
    for i in range(600):
        scene = sample_scene(rng)
        edit = sample_edit(scene, rng, kinds=(EDIT_KINDS[i % len(EDIT_KINDS)],))
        text = instruction(edit, scene, rng, split="all")
        source = parse_caption(caption(scene, with_position=bool(i % 2)))
        found, why = instruction_edit(text, source)
        assert found == edit, (text, found, why)


@pytest.mark.parametrize("text, expected", [
    ("the circle is too big, make it smaller", Edit("resize", "small")),
    ("make it blue instead of red", Edit("recolor", "blue")),
    ("swap the gray background for a white one", Edit("background", "white")),
    ("move it to the left", Edit("move", "left/middle")),
    ("make it blue and move it to the left", None),  # two kinds
    ("make it nice", None),  # no change named
    ("make it red", None),  # red is already its colour
])
def test_instruction_edit_on_hand_made_cases(text, expected):
    source = parse_caption("a big red circle on a gray background")
    assert instruction_edit(text, source)[0] == expected


CAP = "a big red circle on a gray background"


@pytest.mark.parametrize("completion, verdict", [
    ("make it blue\n%%\na big blue circle on a gray background", (True, True, True)),
    ("make it blue\n%%\na big green circle on a gray background", (True, True, False)),  # wrong target
    ("make it blue\n%%\na big blue square on a gray background", (True, True, False)),  # extra change
    ("make it blue\n%%\na big red circle on a gray background", (True, True, False)),  # no change
    ("move it to the top left\n%%\na big red circle in the top left on a gray background", (True, True, True)),
    ("move it to the top left\n%%\na big red circle on the left on a gray background", (True, True, False)),
    ("make it blue\n%%\na big blue circle in the top left on a gray background", (True, True, False)),  # invents a position
    ("make it blue\n%%\na big blue dog on a gray background", (True, False, False)),  # not a world caption
    ("make it blue a big blue circle", (False, False, False)),  # malformed
])
def test_judge_triple(completion, verdict):
    j = judge_triple(CAP, completion)
    assert (j.well_formed, j.parses, j.consistent) == verdict, j.reason


def test_position_change_without_move_is_inconsistent():
    cap = "a big red circle on the left on a gray background"
    assert not judge_triple(cap, "make it blue\n%%\na big blue circle on the right on a gray background").consistent
    assert judge_triple(cap, "make it blue\n%%\na big blue circle on a gray background").consistent  # dropped: fine


def test_quality_table_counts_rates_and_diversity():
    rng = np.random.default_rng(1)
    judged, seeds = [], []
    for i in range(40):
        scene = sample_scene(rng)
        edit = sample_edit(scene, rng, kinds=(EDIT_KINDS[i % 5],))
        text = instruction(edit, scene, rng)
        seeds.append(text)
        judged.append(judge_triple(caption(scene, with_position=True),
                                   f"{text}\n%%\n{caption(apply(scene, edit), with_position=True)}"))
    judged += [judge_triple(CAP, "garbage"), judge_triple(CAP, "a\n%%\nnot a caption at all")]
    row = quality_table(judged, seed_instructions=seeds[:20])
    assert row["n"] == 42
    assert row["well_formed"] == pytest.approx(41 / 42) and row["parses"] == pytest.approx(40 / 42)
    assert row["consistent"] == pytest.approx(40 / 42)
    assert sum(row[f"distinct_{k}"] for k in EDIT_KINDS) == len(set(seeds))
    assert 0 < row["new_templates"] <= row["templates"]
