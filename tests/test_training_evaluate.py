"""Held-out edit evaluation: the cases, the oracle's verdicts, the baselines, and batched editing."""

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from ip2p_lib.toyworld import EDIT_KINDS, apply, render
from ip2p_lib.toyworld.captions import all_captions
from ip2p_lib.toyworld.edits import instruction_slots, phrasings
from ip2p_lib.results.sdedit import sdedit
from ip2p_lib.training.evaluate import (
    EvalReport, caption_keys, evaluate_edits, heldout_cases, markdown_table, no_edit, oracle_target, scene_key,
    training_captions,
)
from tests.fixtures_ip2p import tiny_ip2p_dir  # noqa: F401  (fixture)

# One 8-bit level: batched and single edits sum their float32 products in another order, which
# moves pixels by 1.3e-6 at most (measured on the tiny model, 4 cases, 3 steps), far below this;
# another seed moves them by 0.57 to 0.70, and a wrong instruction or generator row fails the test.
BATCH_TOL = 1 / 255


@pytest.fixture(scope="module")
def cases():
    return heldout_cases(10, seed=3)  # two of each kind


def formatted(edit, scene, split):
    """Every instruction a split's phrasings give for this edit on this scene."""
    return {t.format(**instruction_slots(edit, scene, pick)) for t in phrasings(edit, split) for pick in (0, 1)}


# ---------------------------------------------------------------- the cases
def test_kinds_come_in_turn_balanced_and_the_seed_fixes_the_cases():
    first = heldout_cases(12, seed=1)
    counts = Counter(c.kind for c in first)
    assert [counts[k] for k in EDIT_KINDS] == [3, 3, 2, 2, 2]
    assert [c.kind for c in first[:5]] == list(EDIT_KINDS)
    again = heldout_cases(12, seed=1)
    assert [(c.scene, c.edit, c.instruction) for c in first] == [(c.scene, c.edit, c.instruction) for c in again]
    other = heldout_cases(12, seed=2)
    assert [c.scene for c in first] != [c.scene for c in other]
    two = heldout_cases(6, seed=0, kinds=("recolor", "resize"))
    assert [c.kind for c in two] == ["recolor", "resize"] * 3
    with pytest.raises(ValueError, match="recolor"):
        heldout_cases(2, kinds=("recolour",))  # the world spells it "recolor"


def test_cases_hold_renders_of_the_scene_and_of_the_edited_scene(cases):
    for c in cases:
        assert np.array_equal(c.image, render(c.scene)) and np.array_equal(c.target, render(apply(c.scene, c.edit)))
        assert not np.array_equal(c.image, c.target)  # every edit changes the scene
        assert c.edited_caption != c.caption


def test_instructions_are_heldout_phrasings_never_training_ones():
    for c in heldout_cases(40, seed=5):
        assert c.instruction in formatted(c.edit, c.scene, "heldout")
        assert c.instruction not in formatted(c.edit, c.scene, "train")


def test_scenes_that_a_positioned_caption_describes_are_skipped():
    # exclude every positioned caption except those of the top-left region: only top-left scenes remain
    everywhere = all_captions()
    others = [t for t in everywhere if "top left" not in t]
    for c in heldout_cases(10, seed=0, exclude_captions=others):
        assert (c.scene.hpos, c.scene.vpos) == ("left", "top")
    # a caption without a position describes no particular scene, and text outside the world is ignored
    assert caption_keys(["a large red circle on a gray background", "a cat on a mat"]) == set()
    plain = heldout_cases(10, seed=0)
    assert [c.scene for c in heldout_cases(10, seed=0, exclude_captions=["a large red circle against gray"])] == \
        [c.scene for c in plain]
    # the captions of these very scenes, in other wordings, push every one of them out
    wordings = [c.caption.replace(" on a ", " against ").replace(" background", "").upper() for c in plain]
    assert not {scene_key(c.scene) for c in heldout_cases(10, seed=0, exclude_captions=wordings)} & \
        {scene_key(c.scene) for c in plain}
    with pytest.raises(ValueError, match="cover"):
        heldout_cases(2, exclude_captions=everywhere, max_draws=50)


def test_training_captions_reads_both_caption_columns_of_the_shards(tmp_path):
    import pandas as pd

    frame = pd.DataFrame({"original_prompt": ["a small red square in the top left against white", "x"],
                          "edited_prompt": ["a small blue square in the top left against white", None],
                          "edit_prompt": ["make it blue", "y"], "triple_index": [0, 1], "sample": [0, 0]})
    frame.to_parquet(tmp_path / "part-000000.parquet")
    assert training_captions(tmp_path) == {"a small red square in the top left against white", "x",
                                           "a small blue square in the top left against white"}
    assert training_captions(tmp_path, columns=["original_prompt"]) == {
        "a small red square in the top left against white", "x"}


# ---------------------------------------------------------------- the verdicts and the report
def test_the_oracle_target_succeeds_and_no_edit_changes_nothing(cases):
    target, unchanged = oracle_target(cases), no_edit(cases)
    for kind in EDIT_KINDS:
        assert target.rates([kind]) == pytest.approx({"n": 2, "edit_success": 1.0, "preserved": 1.0, "success": 1.0,
                                                     "target_l1": 0.0})
        r = unchanged.rates([kind])
        assert (r["n"], r["edit_success"], r["preserved"], r["success"]) == (2, 0.0, 1.0, 0.0)
        assert r["target_l1"] > 0
    assert target.meets_targets() and not unchanged.meets_targets()


def test_verdicts_are_the_pair_judges_verdicts(cases):
    from ip2p_lib.p2p.evaluate import oracle_verdicts

    def wrong_or_right(batch, seeds):  # the target, the input, or another case's target
        return [c.target if s % 3 == 0 else c.image if s % 3 == 1 else cases[(s + 1) % len(cases)].target
                for c, s in zip(batch, seeds)]

    report = evaluate_edits(wrong_or_right, cases, batch_size=4)
    verdicts = oracle_verdicts(np.stack([c.image for c in cases]), report.outputs,
                               [c.caption for c in cases], [c.edited_caption for c in cases])
    assert list(verdicts["kind"]) == report.kinds
    assert np.array_equal(verdicts["changed"], report.edit_success)
    assert np.array_equal(verdicts["preserved"], report.preserved)
    assert 0 < report.success.mean() < 1


def test_rates_groups_tables_and_json():
    report = EvalReport("half", ["recolor", "recolor", "move", "move"], np.array([1, 0, 1, 1], bool),
                        np.array([1, 1, 0, 1], bool), np.zeros(4), edit_seconds=2.0)
    assert list(report.groups()) == ["recolor", "move", "targets", "all"]
    assert report.rates(["recolor"])["success"] == 0.5 and report.rates(["move"])["success"] == 0.5
    assert report.rates()["edit_success"] == 0.75 and report.rates()["preserved"] == 0.75
    data = json.loads(json.dumps(report.to_dict(per_case=True)))
    assert data["rates"]["targets"]["n"] == 2 and data["seconds_per_edit"] == 0.5
    assert data["cases"]["edit_success"] == [True, False, True, True]
    assert not data["meets_targets"]  # 50% edit success on recolor
    assert "| recolor | 2 | 50.0 | 100.0 | 50.0 |" in report.table()
    assert "| half | 50 / 100 / 50 | 100 / 50 / 50 |" in markdown_table([report])


def test_case_i_gets_seed_plus_i_whatever_the_batching(cases):
    seen = {}

    def record(batch, seeds):
        seen.update({id(c): s for c, s in zip(batch, seeds)})
        return [c.image for c in batch]

    for batch_size in (1, 3, 10):
        seen.clear()
        evaluate_edits(record, cases, seed=100, batch_size=batch_size)
        assert [seen[id(c)] for c in cases] == [100 + i for i in range(len(cases))]


# ---------------------------------------------------------------- real editors, tiny random models
@pytest.fixture(scope="module")
def editor(tiny_ip2p_dir):  # noqa: F811
    from ip2p_lib.editor import InstructPix2PixEditor

    return InstructPix2PixEditor.from_pretrained(str(tiny_ip2p_dir))


@pytest.mark.parametrize("s_text, s_image, rule", [(7.5, 1.5, "paper"), (1.0, 1.0, "diffusers")])
def test_a_batched_edit_is_each_single_edit(editor, cases, s_text, s_image, rule):
    images = [Image.fromarray(c.image) for c in cases[:3]]
    texts, seeds = [c.instruction for c in cases[:3]], [11, 12, 13]
    kwargs = dict(steps=3, s_text=s_text, s_image=s_image, guidance_rule=rule)
    batch = editor.edit_batch(images, texts, seeds=seeds, **kwargs)
    state = editor.prepare_batch(images, texts, seeds=seeds, **kwargs)
    assert state.branches == (3 if rule == "paper" else 1) and state.batch_size == 3
    for i, out in enumerate(batch):
        alone = editor.edit(images[i], texts[i], seed=seeds[i], **kwargs)
        assert out.seed == alone.seed == seeds[i]
        assert np.abs(out.array - alone.array).max() < BATCH_TOL
    # a row does not depend on its neighbours: reversing the batch reverses the results
    flipped = editor.edit_batch(images[::-1], texts[::-1], seeds=seeds[::-1], **kwargs)
    assert np.abs(flipped[0].array - batch[2].array).max() < BATCH_TOL
    # and the seed matters (so the comparisons above are not trivially equal)
    assert np.abs(editor.edit(images[0], texts[0], seed=99, **kwargs).array - batch[0].array).max() > 5 * BATCH_TOL
    with pytest.raises(ValueError, match="one seed per image"):
        editor.edit_batch(images, texts, seeds=seeds[:2], steps=1)


def test_an_editor_runs_through_evaluate_edits(editor, cases):
    report = evaluate_edits(editor, cases, steps=2, batch_size=4, name="tiny")
    assert report.n == len(cases) and report.outputs.shape == (len(cases), 16, 16, 3)  # the tiny model's 16 px
    assert report.settings["steps"] == 2 and report.settings["s_T"] == 7.5
    for group, r in report.by_group().items():
        assert r["n"] == {"targets": 8, "all": 10}.get(group, 2)
        assert all(0.0 <= r[k] <= 1.0 for k in ("edit_success", "preserved", "success"))
    again = evaluate_edits(editor, cases, steps=2, batch_size=10, name="tiny")
    assert np.abs(again.outputs.astype(int) - report.outputs).max() <= 1  # same seeds, other batches


def test_sdedit_runs_img2img_per_case_seeded(tmp_path, cases):
    from diffusers import StableDiffusionPipeline

    from ip2p_lib.infra.random_models import build_tiny_sd

    pipe = StableDiffusionPipeline.from_pretrained(build_tiny_sd(tmp_path / "sd", prediction_type="v_prediction"),
                                                   safety_checker=None, requires_safety_checker=False)
    few = cases[:3]
    one = sdedit(pipe, few, strength=0.5, steps=4, batch_size=1)
    three = sdedit(pipe, few, strength=0.5, steps=4, batch_size=3)
    assert one.name == "SDEdit 0.5" and one.settings["strength"] == 0.5
    assert np.abs(one.outputs.astype(int) - three.outputs).max() <= 1
    assert not np.array_equal(one.outputs, np.stack([c.image for c in few]))  # it did change the inputs
    stronger = sdedit(pipe, few, strength=1.0, steps=4, batch_size=3)
    assert np.abs(stronger.outputs.astype(int) - three.outputs).max() > 1
