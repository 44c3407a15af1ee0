"""§4 results: sweeps batched over settings, Figure 8's metrics, the figures' compute/plot/save,
the failure reasons, and the Figure 10 ablation's bookkeeping. Smoke sizes, the committed toy models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ip2p_lib.infra.errors import UserError
from ip2p_lib.results import fig08, fig10, gallery
from ip2p_lib.results.common import sizes
from ip2p_lib.results.figures import FIGURES, load_numbers, make_figure, saved_numbers
from ip2p_lib.results.metrics import PhotoCase, clip_edit_scores, dataset_cases, judgeable
from ip2p_lib.results.sweep import Setting, ip2p_outputs, ip2p_settings, run_sweep, score
from ip2p_lib.toyworld import judge
from ip2p_lib.training.evaluate import heldout_cases, judge_outputs

STEPS = 4  # 3 Euler ancestral steps give NaN on the toy scheduler (notebook 06)


def numbers(curves: dict) -> dict:
    """Sweep curves without their timings (the only thing a rerun may change)."""
    return {k: [{f: v for f, v in p.items() if f != "seconds_per_edit"} for p in points] for k, points in curves.items()}


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def editor(one_thread):
    from ip2p_lib.results.common import load_profile_editor

    return load_profile_editor("smoke")


@pytest.fixture(scope="module")
def scorer():
    from ip2p_lib.results.common import load_profile_scorer

    return load_profile_scorer("smoke")


@pytest.fixture(scope="module")
def cases():
    return heldout_cases(5, seed=3)


def test_a_batched_sweep_row_is_the_edit_made_alone(editor, cases):
    settings = ip2p_settings([3.0, 7.5], [1.0, 1.5])  # 4 settings x 2 cases, 3 rows per batch: batches cut settings
    out = ip2p_outputs(editor, cases[:2], settings, steps=STEPS, seed=10, rows=3)
    assert out.shape == (4, 2, 64, 64, 3) and out.dtype == np.uint8
    from PIL import Image

    for k, s in enumerate(settings):
        for i, case in enumerate(cases[:2]):
            alone = editor.edit(Image.fromarray(case.image), case.instruction, steps=STEPS, s_text=s.s_T, s_image=s.s_I,
                                seed=10 + i)
            assert np.abs(np.asarray(alone.image).astype(int) - out[k, i]).max() <= 1  # float32 rounding, 8-bit
    assert not np.array_equal(out[0], out[3])  # the settings do differ


def test_per_image_scales_must_agree_on_the_branches_under_diffusers_rule(editor, cases):
    from PIL import Image

    pictures = [Image.fromarray(c.image) for c in cases[:2]]
    with pytest.raises(ValueError, match="separate batches"):
        editor.prepare_batch(pictures, ["a", "b"], steps=STEPS, s_text=[7.5, 1.0], s_image=[1.5, 1.5], seeds=[0, 1],
                             guidance_rule="diffusers")
    with pytest.raises(ValueError, match="one scale or one per image"):
        editor.prepare_batch(pictures, ["a", "b"], steps=STEPS, s_text=[7.5], seeds=[0, 1])


def test_a_point_holds_the_scorers_and_the_oracles_numbers(scorer, cases):
    outputs = np.stack([c.target for c in cases])  # the ground truth as the "edit": the oracle says 100%
    point = score(cases, outputs, scorer, Setting("ip2p", 7.5, 1.5))
    want = scorer.scores(np.stack([c.image for c in cases]), outputs, [c.caption for c in cases],
                         [c.edited_caption for c in cases])
    assert point["clip_direction"] == pytest.approx(float(np.mean(want["sim_direction"])), abs=1e-6)
    assert point["clip_image"] == pytest.approx(float(np.mean(want["sim_image"])), abs=1e-6)
    assert point["clip_direction_sem"] == pytest.approx(np.std(want["sim_direction"], ddof=1) / np.sqrt(5), abs=1e-6)
    assert point["oracle"] == judge_outputs(cases, list(outputs)).by_group()
    assert point["oracle"]["all"]["success"] == 1.0
    unchanged = score(cases, np.stack([c.image for c in cases]), scorer, Setting("sdedit", strength=0.5))
    assert unchanged["oracle"]["all"]["edit_success"] == 0.0 and unchanged["label"] == "SDEdit 0.5"
    assert unchanged["clip_image"] == pytest.approx(1.0, abs=1e-5)  # output = input


def test_photo_cases_come_from_the_test_split_one_per_caption_pair(tmp_path, scorer):
    from ip2p_lib.cli import main
    from ip2p_lib.dataset.shards import read_table
    from tests.test_dataset import world_triples, write_jsonl

    path = write_jsonl(tmp_path / "t.jsonl", world_triples(20, seed=2))
    assert main(["pairs", "oracle", "--triples", str(path), "--samples-per-pair", "2", "--out", str(tmp_path / "o")]) == 0
    frame = read_table(tmp_path / "o")
    got = dataset_cases(tmp_path / "o", n=10)
    pairs = sorted(frame.triple_index.unique())
    from ip2p_lib.dataset.training import split_range

    lo, hi = split_range(20, "test")
    test_pairs = pairs[lo:hi]
    assert len(got) == len(test_pairs) and not judgeable(got)
    for case, pair in zip(got, test_pairs):
        row = frame[frame.triple_index == pair].iloc[0]
        assert (case.caption, case.instruction, case.edited_caption) == (
            row.original_prompt, row.edit_prompt, row.edited_prompt)
    scores = clip_edit_scores(scorer, got, np.stack([c.image for c in got]))
    assert np.allclose(scores["clip_image"], 1.0, atol=1e-5)
    resized = dataset_cases(tmp_path / "o", n=1, resolution=32)
    assert isinstance(resized[0], PhotoCase) and resized[0].image.shape == (32, 32, 3)


def test_failure_reasons_say_why_and_agree_with_the_oracle(cases):
    for case in cases:
        assert gallery.reasons(case, case.target) == []  # the ground truth never fails
        why = gallery.reasons(case, case.image)  # nothing done
        assert why and why[0].startswith("edit not made")
    recolor = next(c for c in heldout_cases(10, seed=1) if c.kind == "recolor")
    from ip2p_lib.toyworld import Edit, apply, render

    other = [b for b in ("white", "black", "gray", "beige") if b != recolor.scene.background][0]
    wrong = render(apply(apply(recolor.scene, recolor.edit), Edit("background", other)), 64)  # edit + a side effect
    assert gallery.reasons(recolor, wrong) == [f"background changed ({recolor.scene.background} -> {other})"]
    assert gallery.category("moved 0.21") == "moved" and gallery.category("edit not made (x)") == "edit not made"


def test_spearman_agreement_reads_the_points():
    points = [{"clip_direction": d, "clip_image": i, "oracle": {"all": {"edit_success": e, "preserved": p}}}
              for d, i, e, p in ((0.1, 0.9, 0.2, 0.8), (0.2, 0.8, 0.5, 0.9), (0.3, 0.7, 0.6, 0.3))]
    a = fig08.agreement(points)
    assert a["direction_vs_edit_success"] == pytest.approx(1.0) and a["image_vs_preserved"] == pytest.approx(0.5)
    assert fig08.agreement(points[:2]) == {}


def test_beats_interpolates_the_curve_at_the_others_points():
    def pt(label, d, i, e, k):
        return {"label": label, "clip_direction": d, "clip_image": i,
                "oracle": {"all": {"edit_success": e, "preserved": k}}}

    data = {"curves": {"ip2p": [pt("a", 0.2, 0.9, 0.5, 0.9), pt("b", 0.4, 0.7, 0.9, 0.5)],
                       "sde": [pt("s1", 0.3, 0.6, 0.7, 0.6), pt("s2", 0.5, 0.5, 0.2, 0.95)]}}
    got = fig08.beats(data, "ip2p", "sde")
    assert [g["label"] for g in got] == ["s1"] and got[0]["gain"] == pytest.approx(0.8 - 0.6)  # s2 is outside 0.2-0.4
    oracle = fig08.beats(data, "ip2p", "sde", "edit_success", "preserved")
    assert [g["label"] for g in oracle] == ["s1"] and oracle[0]["gain"] == pytest.approx(0.7 - 0.6)
    for curve in data["curves"].values():
        for p in curve:
            p["oracle"]["move"] = {"success": 0.25 if p["label"] == "a" else 0.5}
            p["oracle"]["all"]["success"] = 0.125
    rows = fig08.per_kind_table(data, ["a", "s2", "missing"]).splitlines()
    assert rows[0] == "| kind | a | s2 |" and rows[2:] == ["| all | 12 | 12 |", "| move | 25 | 50 |"]


def test_settings_come_from_the_profile_and_a_misspelt_one_is_refused():
    assert sizes(fig08.DEFAULTS, "smoke", {"n": 7, "steps": None})["n"] == 7
    assert sizes(fig08.DEFAULTS, "toy", {})["s_I_sweep"] == (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.2)  # the authors'
    with pytest.raises(TypeError, match="unknown settings"):
        sizes(fig08.DEFAULTS, "toy", {"s_i_sweep": (1.0,)})
    assert set(FIGURES) == {"fig04", "fig08", "fig10", "gallery"}
    for module in FIGURES.values():
        assert set(module.DEFAULTS) == {"toy", "smoke", "full"}


def test_figure_8_saves_its_numbers_and_the_same_seed_gives_the_same_numbers(tmp_path, one_thread):
    data = make_figure("fig08", "smoke", tmp_path / "a", command="test", progress=False, n=2)
    saved = json.loads((tmp_path / "a" / f"{fig08.NAME}.json").read_text())
    assert (tmp_path / "a" / f"{fig08.NAME}.png").stat().st_size > 10_000
    assert saved["command"] == "test" and saved["profile"] == "smoke" and saved["n"] == 2
    assert [len(c) for c in saved["curves"].values()] == [2, 1, 2]  # smoke: s_I 1.0 / 2.2, s_T 3, SDEdit 0.5 / 0.9
    assert saved["curves"] == json.loads(json.dumps(saved_numbers(data)["curves"]))
    again = fig08.compute("smoke", progress=False, n=2)
    assert numbers(json.loads(json.dumps(again["curves"]))) == numbers(saved["curves"])  # timings aside
    assert load_numbers("fig08", folder=tmp_path / "a")["agreement"] == saved["agreement"]
    with pytest.raises(UserError, match="ip2p figures --profile toy --only fig04"):
        load_numbers("fig04", folder=tmp_path / "a")


def test_figure_4_and_the_gallery_draw_their_pictures(tmp_path, one_thread):
    import matplotlib

    matplotlib.use("Agg")
    from ip2p_lib.results import fig04

    data = fig04.compute("smoke", progress=False, n=3, examples=1)
    assert data["_grids"].shape == (1, 2, 2, 64, 64, 3) and len(data["cells"]) == 4
    assert fig04.rate_grid(data, "success").shape == (2, 2)
    assert len(fig04.plot(data).axes) >= 4 + 3  # the example grid and the three rate maps
    g = gallery.compute("smoke", progress=False, n=5, per_kind=1, failures=2)
    assert len(g["shown"]) == 5 and g["_shown"].shape == (5, 2, 64, 64, 3)
    assert all(f["reasons"] for f in g["failures"])
    assert sum(g["failed"].values()) == round(5 * (1 - g["point"]["oracle"]["all"]["success"]))
    gallery.plot(g)


def test_figure_10_names_the_commands_of_missing_models_and_runs_on_given_ones(tmp_path, one_thread):
    fake = {"a": fig10.Ablation("a", str(tmp_path / "nothing"), "data", ("ip2p train --out nothing",))}
    with pytest.raises(UserError, match="ip2p train --out nothing"):
        fig10.compute("smoke", progress=False, models=fake)
    with pytest.raises(UserError, match="toy world only"):
        fig10.compute("full", progress=False)
    from ip2p_lib.infra.models import toy_model_dir
    from tests.test_dataset import world_triples, write_jsonl
    from ip2p_lib.cli import main

    path = write_jsonl(tmp_path / "t.jsonl", world_triples(8, seed=2))
    assert main(["pairs", "oracle", "--triples", str(path), "--out", str(tmp_path / "o")]) == 0
    model = str(toy_model_dir("ip2p"))
    two = {n: fig10.Ablation(n, model, str(tmp_path / "o"), ("-",)) for n in ("one", "two")}
    data = fig10.compute("smoke", progress=False, models=two, n=2)
    assert data["groups"] == {"models": ["one", "two"]}
    assert numbers(data["curves"])["one"] == numbers(data["curves"])["two"]  # one model twice: the same numbers
    assert data["curves"]["one"][0]["training_examples"] > 0
    assert "| one |" in fig10.table(data)
    fig10.plot(data)


def test_the_readme_shows_the_saved_toy_figures():
    from ip2p_lib.infra.measurements import block
    from ip2p_lib.infra.paths import repo_root
    from ip2p_lib.results.figures import README_BEGIN, README_END, readme_block

    readme = (repo_root() / "README.md").read_text()
    assert block(readme, README_BEGIN, README_END) == readme_block(repo_root() / "figures" / "toy"), (
        "README.md's figures section is not the saved figures/toy/*.json: run `ip2p figures --profile toy` "
        "or `python -c 'from ip2p_lib.results.figures import update_readme; update_readme(\"README.md\", \"figures/toy\")'`")


def test_the_readme_block_renders_every_saved_figure(tmp_path, one_thread):
    from ip2p_lib.results.figures import readme_block

    make_figure("gallery", "smoke", tmp_path, command="ip2p figures --only gallery", progress=False, n=5)
    text = readme_block(tmp_path)
    assert "![gallery](figures/toy/gallery.png)" in text and "`ip2p figures --only gallery`" in text
    assert "| kind | failed |" in text and "fig08`)" in text  # the gallery's reasons; Figure 8 not made yet


def test_figure_10_keeps_each_models_points_and_reuses_them(tmp_path, one_thread, monkeypatch):
    from ip2p_lib.cli import main
    from ip2p_lib.infra.models import toy_model_dir
    from tests.test_dataset import world_triples, write_jsonl

    path = write_jsonl(tmp_path / "t.jsonl", world_triples(8, seed=2))
    assert main(["pairs", "oracle", "--triples", str(path), "--out", str(tmp_path / "o")]) == 0
    one = {"one": fig10.Ablation("one", str(toy_model_dir("ip2p")), str(tmp_path / "o"), ("-",))}
    first = fig10.compute("smoke", progress=False, models=one, n=2, cache=str(tmp_path / "cache"))
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    monkeypatch.setattr(fig10, "run_sweep", lambda *a, **k: pytest.fail("a cached model was evaluated again"))
    assert fig10.compute("smoke", progress=False, models=one, n=2, cache=str(tmp_path / "cache"))["curves"] == first["curves"]
    with pytest.raises(BaseException, match="evaluated again"):  # other settings: another file
        fig10.compute("smoke", progress=False, models=one, n=3, cache=str(tmp_path / "cache"))


def test_widgets_show_only_in_a_live_kernel_outside_the_runner(monkeypatch):
    import types

    import IPython

    from ip2p_lib.infra import measurements
    from ip2p_lib.infra.runner import widgets_can_show

    monkeypatch.delenv(measurements.ENV_FILE, raising=False)
    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    assert not widgets_can_show()  # plain Python
    monkeypatch.setattr(IPython, "get_ipython", lambda: types.SimpleNamespace(config={"IPKernelApp": {}}))
    assert widgets_can_show()  # Jupyter
    monkeypatch.setenv(measurements.ENV_FILE, "/tmp/m.json")
    assert not widgets_can_show()  # `ip2p notebooks` (papermill): the static figure
