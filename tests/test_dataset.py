"""The edit dataset: `ip2p pairs generate` (resume after kills, shards across processes, errors),
the shard format through `datasets`, regeneration from metadata, the authors' layout, the
training loader's pair augmentation, and the oracle pairs.

Every generation here uses a tiny random Stable Diffusion folder (16 px images), 2 samples per
caption pair and 3 sampler steps, on one CPU thread, so that records are bit-identical between
this process and the `ip2p` subprocesses.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from ip2p_lib.cli import main
from ip2p_lib.dataset import generate as gen
from ip2p_lib.dataset import shards
from ip2p_lib.dataset.generate import RunSettings, file_sha256, generate_dataset, regenerate
from ip2p_lib.dataset.shards import images_of, load_hf, read_table, write_shard
from ip2p_lib.infra.errors import UserError
from ip2p_lib.toyworld import apply, caption, instruction, judge, parse_caption, sample_edit, sample_scenes

ROOT = Path(__file__).resolve().parents[1]
N_TRIPLES = 8
OPTIONS = ["--samples-per-pair", "2", "--steps", "3", "--triples-per-shard", "2", "--batch-size", "3", "--threads", "1"]
N_SHARDS = N_TRIPLES // 2
pytestmark = pytest.mark.xdist_group("dataset")  # one worker builds the reference run once


class Killed(Exception):
    """A simulated SIGKILL."""


def world_triples(n: int, seed: int = 3) -> list[dict[str, str]]:
    """`n` triples of the miniature world: a scene's caption, an edit of it, the edited caption."""
    rng = np.random.default_rng(seed)
    out = []
    for k, scene in enumerate(sample_scenes(n, seed)):
        edit = sample_edit(scene, rng)
        variant = {"template": k, "with_position": True}
        out.append({"input": caption(scene, **variant), "edit": instruction(edit, scene, rng),
                    "output": caption(apply(scene, edit), **variant)})
    return out


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what `--threads 1` gives the subprocesses: bit-identical results
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    """The tiny SD folder, the triples file, the generate command's arguments and the records of
    an uninterrupted single-process run (made in this process, through `ip2p_lib.cli.main`)."""
    from ip2p_lib.infra.random_models import build_tiny_sd

    tmp = tmp_path_factory.mktemp("pairs")
    model = build_tiny_sd(tmp / "sd")
    triples = write_jsonl(tmp / "triples.jsonl", world_triples(N_TRIPLES))
    args = ["pairs", "generate", "--triples", str(triples), "--model", str(model), *OPTIONS]
    assert main([*args, "--out", str(tmp / "reference")]) == 0
    reference = read_table(tmp / "reference")
    return {"tmp": tmp, "model": model, "triples": triples, "args": args, "reference": reference,
            "reference_dir": tmp / "reference"}


@pytest.fixture(scope="module")
def loaded(world):
    """The pipeline and the scorer, loaded once, and the run's settings as the CLI makes them."""
    from diffusers import StableDiffusionPipeline

    from ip2p_lib.filtering import ClipScorer
    from ip2p_lib.text.seed import read_triples

    pipe = StableDiffusionPipeline.from_pretrained(world["model"], safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    settings = RunSettings(model=str(world["model"]), triples_sha256=file_sha256(world["triples"]), steps=3,
                           samples_per_pair=2, triples_per_shard=2, batch_size=3)
    return pipe, ClipScorer.from_profile("toy"), read_triples(world["triples"]), settings


def assert_same_records(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Record for record, every column, image bytes included; no (caption pair, sample) twice."""
    assert not a.duplicated(["triple_index", "sample"]).any()
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


# ---------------------------------------------------------------- the uninterrupted run


def test_reference_run_has_every_sample_once_with_its_metadata(world, loaded):
    ref, settings = world["reference"], loaded[3]
    assert len(shards.shard_files(world["reference_dir"])) == N_SHARDS
    assert list(zip(ref.triple_index, ref["sample"])) == [(i, j) for i in range(N_TRIPLES) for j in range(2)]
    triples = loaded[2]
    for i in range(N_TRIPLES):
        rows = ref[ref.triple_index == i]
        specs = gen.specs_for(i, triples[i], settings)
        assert list(rows.seed) == [s.seed for s in specs] and list(rows.cfg) == [s.cfg for s in specs]
        assert set(rows.original_prompt) == {triples[i]["input"]} and set(rows.edited_prompt) == {triples[i]["output"]}
        assert set(rows.edit_prompt) == {triples[i]["edit"]}
    assert ((ref.cfg >= 7.5) & (ref.cfg <= 15) & (ref.p >= 0.1) & (ref.p <= 0.9)).all()
    assert (ref.steps == 3).all() and (ref.variant == "self").all() and (ref.model == str(world["model"])).all()
    assert np.isfinite(ref[["sim_0", "sim_1", "sim_direction", "sim_image"]].to_numpy()).all()
    a, b = images_of(ref, "original_image"), images_of(ref, "edited_image")
    assert a.shape == (2 * N_TRIPLES, 16, 16, 3) and not np.array_equal(a, b)
    assert len({x.tobytes() for x in a}) == len(a)  # every sample its own noise


# ---------------------------------------------------------------- kills


@pytest.mark.parametrize("kills", [[("write", 0)], [("write", 1), ("sample", 3)], [("sample", 1), ("write", 2)]])
def test_simulated_kills_then_rerun_give_the_uninterrupted_records(world, loaded, tmp_path, monkeypatch, kills):
    """("write", k): the run dies while writing its (k+1)-th shard, half of the parquet bytes on
    disk; ("sample", k): it dies while sampling its k-th chunk. Then the run goes to the end."""
    from datasets import Dataset

    pipe, scorer, triples, settings = loaded
    out = tmp_path / "pairs"
    real_to_parquet, real_generate = Dataset.to_parquet, gen.generate_pairs
    for where, k in kills:
        count = [0]

        def dying_to_parquet(self, path, *a, k=k, count=count, **kw):
            result = real_to_parquet(self, path, *a, **kw)
            if count[0] == k:
                data = Path(path).read_bytes()
                Path(path).write_bytes(data[: len(data) // 2])
                raise Killed
            count[0] += 1
            return result

        def dying_generate(*a, k=k, count=count, **kw):
            count[0] += 1
            if count[0] == k:
                raise Killed
            return real_generate(*a, **kw)

        monkeypatch.setattr(Dataset, "to_parquet", dying_to_parquet if where == "write" else real_to_parquet)
        monkeypatch.setattr(gen, "generate_pairs", dying_generate if where == "sample" else real_generate)
        with pytest.raises(Killed):
            generate_dataset(pipe, scorer, triples, out, settings, progress=False)
        if where == "write":
            assert list(out.glob(".part-*.tmp-*")), "the simulated kill should leave a half-written file"
            done = read_table(out)  # the half-written file is never read
            assert len(done) == 4 * k and (k == 0 or done.equals(world["reference"].iloc[: 4 * k]))
    monkeypatch.setattr(Dataset, "to_parquet", real_to_parquet)
    monkeypatch.setattr(gen, "generate_pairs", real_generate)
    stats = generate_dataset(pipe, scorer, triples, out, settings, progress=False)
    assert stats.shards_done_before + stats.shards_written == N_SHARDS
    assert_same_records(read_table(out), world["reference"])
    assert_same_records(load_hf(out).to_pandas(), world["reference"])
    assert not list(out.glob(".*tmp*")), "the rerun removes what the killed writes left"


def test_sigkill_mid_run_then_the_same_command_resumes(world, tmp_path):
    out = tmp_path / "pairs"
    argv = [*world["args"], "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "ip2p_lib.cli", *argv], env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    assert 1 <= len(shards.shard_files(out)) < N_SHARDS
    assert main(argv) == 0  # the same command again
    assert_same_records(read_table(out), world["reference"])


# ---------------------------------------------------------------- shards across processes


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", **extra)
    return env


def test_two_processes_make_the_single_process_dataset(world, tmp_path):
    """`--shard 0/2` and, as `accelerate launch` would start it, RANK=1 WORLD_SIZE=2: in parallel,
    into one folder; their union is the single-process run, record for record."""
    out = tmp_path / "pairs"
    cmd = [sys.executable, "-m", "ip2p_lib.cli", *world["args"], "--out", str(out)]
    procs = [subprocess.Popen([*cmd, "--shard", "0/2"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True),
             subprocess.Popen(cmd, env=_env(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-2000:]
    assert "shard 0/2: 2 new shards" in results[0][0] and "shard 1/2: 2 new shards" in results[1][0]
    assert_same_records(read_table(out), world["reference"])
    assert sorted(p.name for p in out.iterdir()) == [f"part-{c:06d}.parquet" for c in range(N_SHARDS)] + ["run.json"]


def test_rank_and_world_size_select_the_shard(monkeypatch):
    from ip2p_lib.dataset.cli import _accelerate_shard

    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _accelerate_shard() == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert _accelerate_shard() == (2, 3)
    assert gen.pending_chunks(Path("/nonexistent"), 10, 1, (2, 3)) == ([2, 5, 8], 0)


def test_claim_folder_when_another_process_creates_run_json_first(tmp_path, monkeypatch):
    """Processes started together (accelerate launch) all find no run.json; one creates it, the
    others must compare with it, not fail and not overwrite it."""
    mine, theirs = RunSettings(model="m", triples_sha256="x"), RunSettings(model="m", triples_sha256="x", seed=1)
    real_link = os.link
    for other, ok in ((mine, True), (theirs, False)):
        out = tmp_path / f"out{int(ok)}"

        def link_after_the_other(src, dst, other=other):
            Path(dst).write_text(json.dumps(other.to_json()))  # the other process won the race
            return real_link(src, dst)

        monkeypatch.setattr(gen.os, "link", link_after_the_other)
        if ok:
            gen.claim_folder(out, mine)
        else:
            with pytest.raises(UserError, match="another run"):
                gen.claim_folder(out, mine)
        assert json.loads((out / "run.json").read_text()) == other.to_json()
        assert [p.name for p in out.iterdir()] == ["run.json"]  # no temporary file left


# ---------------------------------------------------------------- bad input


def _one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line_and_exit_2(world, tmp_path, capsys, monkeypatch):
    args, out = world["args"], ["--out", str(tmp_path / "out")]
    broken = tmp_path / "broken.jsonl"
    broken.write_text(world["triples"].read_text().splitlines()[0] + "\n{not json\n")
    i = args.index("--triples") + 1
    assert f"{broken}:2" in _one_line_error(capsys, [*args[:i], str(broken), *args[i + 1:], *out])
    j = args.index("--model") + 1
    assert "/nonexistent" in _one_line_error(capsys, [*args[:j], "/nonexistent", *args[j + 1:], *out])
    assert "--shard '3/2'" in _one_line_error(capsys, [*args, *out, "--shard", "3/2"])
    assert "I/N" in _one_line_error(capsys, [*args, *out, "--shard", "two"])
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "RANK='3'" in _one_line_error(capsys, [*args, *out])
    monkeypatch.delenv("RANK")
    ref = ["--out", str(world["reference_dir"])]
    before = sorted(p.name for p in world["reference_dir"].iterdir())
    assert "seed: 0 there, 1 now" in _one_line_error(capsys, [*args, *ref, "--seed", "1"])
    assert "steps: 3 there, 4 now" in _one_line_error(capsys, [*args, *ref, "--steps", "4"])
    # a shorter --limit is another run (it used to skip the rest of a half-full chunk on resume)
    assert "limit: None there, 3 now" in _one_line_error(capsys, [*args, *ref, "--limit", "3"])
    assert sorted(p.name for p in world["reference_dir"].iterdir()) == before
    not_ours = tmp_path / "not_ours"
    not_ours.mkdir()
    (not_ours / "run.json").write_text("{half")
    assert "not valid JSON" in _one_line_error(capsys, [*args, "--out", str(not_ours)])
    assert "--from" in _one_line_error(capsys, ["pairs", "convert", "--from", str(tmp_path / "none"), *out])


# ---------------------------------------------------------------- the format


def test_datasets_reads_the_shards_with_the_exact_pixels(world, tmp_path):
    rng = np.random.default_rng(0)
    rows = [{**dict.fromkeys(shards.SCORE_COLUMNS, 0.5), "original_prompt": f"in {i}", "edit_prompt": "e",
             "edited_prompt": f"out {i}", "original_image": rng.integers(0, 256, (12 + i, 9, 3), dtype=np.uint8),
             "edited_image": rng.integers(0, 256, (7, 5, 3), dtype=np.uint8), "triple_index": 5 - i, "sample": 0,
             "seed": i, "cfg": np.nan, "p": 0.5, "steps": 1, "variant": "v", "model": "m"} for i in range(5)]
    write_shard(tmp_path / "part-000000.parquet", rows[:3])
    write_shard(tmp_path / "part-000001.parquet", rows[3:])
    (tmp_path / ".part-000002.parquet.tmp-1").write_bytes((tmp_path / "part-000000.parquet").read_bytes()[:100])
    ds = load_hf(tmp_path)
    assert ds.column_names == list(shards.features())
    assert len(ds) == 5
    for i, got in enumerate(ds):
        assert isinstance(got["original_image"], Image.Image)
        assert np.array_equal(np.asarray(got["original_image"]), rows[i]["original_image"])
        assert np.array_equal(np.asarray(got["edited_image"]), rows[i]["edited_image"])
        assert got["original_prompt"] == f"in {i}" and got["seed"] == i and np.isnan(got["cfg"])
    frame = read_table(tmp_path)
    assert list(frame.triple_index) == [1, 2, 3, 4, 5]  # sorted by (triple_index, sample)
    ref = load_hf(world["reference_dir"])
    assert np.array_equal(np.stack([np.asarray(im) for im in ref["edited_image"]]),
                          images_of(world["reference"], "edited_image"))


def test_a_record_regenerated_from_its_metadata(world, loaded):
    pipe = loaded[0]
    ref = world["reference"]
    for k in (0, 5, 2 * N_TRIPLES - 1):
        record = ref.iloc[k].to_dict()
        image_0, image_1 = regenerate(pipe, record)
        for got, column in ((image_0, "original_image"), (image_1, "edited_image")):
            want = shards.decode_png(record[column]).astype(int)
            assert np.abs(got.astype(int) - want).max() <= 1


def test_filter_keeps_passing_samples_at_most_k_per_pair(world, tmp_path):
    ref = world["reference"]
    cut = float(np.median(ref.sim_direction))
    out = tmp_path / "train"
    argv = ["pairs", "filter", "--data", str(world["reference_dir"]), "--out", str(out), "--thresholds", "paper",
            "--sim-image", "-1", "--sim-0", "-1", "--sim-1", "-1", "--sim-direction", str(cut), "--keep-per-pair", "1"]
    assert main(argv) == 0
    kept = read_table(out)
    passing = ref[ref.sim_direction >= cut]
    best = passing.sort_values(["triple_index", "sim_direction"], ascending=[True, False]).groupby("triple_index").head(1)
    assert_same_records(kept, best.sort_values(["triple_index", "sample"]))


# ---------------------------------------------------------------- the authors' layout


def authors_folder(root: Path) -> tuple[Path, dict]:
    """A small folder in the authors' layout: three caption pairs, the first prompt.json with
    `caption` (their generation script), the others with `input` (their released files); one
    seed per folder left out of seeds.json (filtered away)."""
    root.mkdir()
    rng = np.random.default_rng(1)
    triples = world_triples(3, seed=11)
    seeds = {"0000000": [17, 4], "0000001": [8], "0000002": [23, 2, 99]}
    for k, (d, kept) in enumerate(seeds.items()):
        folder = root / d
        folder.mkdir()
        t = triples[k]
        prompt = {"caption" if k == 0 else "input": t["input"], "edit": t["edit"], "output": t["output"]}
        (folder / "prompt.json").write_text(json.dumps(prompt))
        meta = []
        for seed in [*kept, 1000 + k]:
            for side in (0, 1):
                pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{seed}_{side}.jpg", quality=95)
            meta.append({"seed": seed, "p2p_threshold": 0.1 + seed / 1000, "cfg_scale": 7.5 + seed / 100,
                         "clip_sim_0": 0.21, "clip_sim_1": 0.22, "clip_sim_dir": seed / 100, "clip_sim_image": 0.8})
        write_jsonl(folder / "metadata.jsonl", meta)
    (root / "seeds.json").write_text(json.dumps([[d, s] for d, s in seeds.items()]))
    return root, {"triples": triples, "seeds": seeds}


def test_authors_layout_reads_as_our_records_and_converts(tmp_path, capsys):
    from ip2p_lib.dataset.readers import AuthorsLayout, read_records

    folder, truth = authors_folder(tmp_path / "authors")
    layout = AuthorsLayout(folder)
    records = list(layout.records())
    assert [(r["triple_index"], r["seed"]) for r in records] == [
        (k, s) for k, kept in enumerate(truth["seeds"].values()) for s in kept]
    for r in records:
        t = truth["triples"][r["triple_index"]]
        assert (r["original_prompt"], r["edit_prompt"], r["edited_prompt"]) == (t["input"], t["edit"], t["output"])
        assert r["p"] == pytest.approx(0.1 + r["seed"] / 1000) and r["cfg"] == pytest.approx(7.5 + r["seed"] / 100)
        assert (r["sim_0"], r["sim_1"], r["sim_direction"], r["sim_image"]) == (0.21, 0.22, r["seed"] / 100, 0.8)
        d = folder / f"{r['triple_index']:07d}"
        assert r["original_image"] == (d / f"{r['seed']}_0.jpg").read_bytes()
        assert r["edited_image"] == (d / f"{r['seed']}_1.jpg").read_bytes()
    assert [r["sample"] for r in records] == [0, 1, 0, 0, 1, 2]

    (folder / "seeds.json").rename(folder / "seeds.json.bak")  # without seeds.json: every sample on disk
    assert [(r["triple_index"], r["seed"]) for r in read_records(folder)] == [
        (k, s) for k, kept in enumerate(truth["seeds"].values()) for s in sorted([*kept, 1000 + k])]
    (folder / "seeds.json.bak").rename(folder / "seeds.json")

    out = tmp_path / "converted"
    assert main(["pairs", "convert", "--from", str(folder), "--out", str(out), "--model-name", "sd15"]) == 0
    assert json.loads(capsys.readouterr().out)["samples"] == 6
    frame = read_table(out)
    assert list(frame.seed) == [r["seed"] for r in records] and set(frame.model) == {"sd15"}
    ds = load_hf(out)
    for r, got in zip(records, ds):
        want = np.asarray(Image.open(io.BytesIO(r["edited_image"])).convert("RGB"))
        assert np.array_equal(np.asarray(got["edited_image"]), want)  # the JPEG bytes, decoded once


# ---------------------------------------------------------------- the training loader


def _pairs_folder(root: Path, pairs, prompts=None) -> Path:
    """Shards from (image 0, image 1) arrays, one caption pair each."""
    root.mkdir(exist_ok=True)
    rows = [{**dict.fromkeys(shards.SCORE_COLUMNS, 0.0), "original_prompt": "a", "edited_prompt": "b",
             "edit_prompt": prompts[i] if prompts else f"edit {i}", "original_image": a, "edited_image": b,
             "triple_index": i, "sample": 0, "seed": i, "cfg": 0.0, "p": 0.0, "steps": 0, "variant": "v", "model": "m"}
            for i, (a, b) in enumerate(pairs)]
    write_shard(root / "part-000000.parquet", rows)
    return root


def _marker(x: torch.Tensor) -> tuple[int, int]:
    ys, xs = torch.nonzero(x[0] > 0.9, as_tuple=True)
    assert len(ys) == 1
    return int(ys[0]), int(xs[0])


def test_training_pairs_get_the_same_crop_and_flip(tmp_path):
    from ip2p_lib.dataset.training import load_for_training

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    a = np.full((40, 40, 3), 100, np.uint8)
    b = np.full((40, 40, 3), 150, np.uint8)
    a[20, 22] = (255, 0, 0)   # a marker on image 0 ...
    b[20, 22] = (255, 0, 255)  # ... and at the same place on image 1 (inside every 24 px crop of 40)
    folder = _pairs_folder(tmp_path / "pairs", [(noise, noise), (a, b)])
    data = load_for_training(folder, 24, crop="random", split="all", resize_range=(40, 40))  # crops, no resize
    assert len(data) == 2 and data[1]["edit_prompt"] == "edit 1"
    places, same_noise = set(), set()
    for epoch in range(12):
        data.set_epoch(epoch)
        x = data[0]
        assert torch.equal(x["original"], x["edited"])  # the same array stays the same array
        same_noise.add(x["original"].numpy().tobytes())
        y = data[1]
        assert _marker(y["original"]) == _marker(y["edited"])  # the marker moves identically
        places.add(_marker(y["original"]))
        assert y["original"].shape == (3, 24, 24) and y["original"].dtype == torch.float32
    assert len(places) > 3 and len(same_noise) > 3  # the crops and flips do vary

    flipped = load_for_training(folder, 40, crop=None, split="all")  # flips only: x = 22 or 39 - 22
    columns = set()
    for epoch in range(12):
        flipped.set_epoch(epoch)
        y = flipped[1]
        assert _marker(y["original"]) == _marker(y["edited"])
        columns.add(_marker(y["original"]))
    assert columns == {(20, 22), (20, 17)}

    # no crop, no flip: each value is 2 * p / 255 - 1 of the pixel written
    exact = load_for_training(folder, 40, crop=None, flip=False, split="all")[1]
    assert torch.equal(exact["original"], torch.from_numpy(a).permute(2, 0, 1).float() / 127.5 - 1)
    assert exact["original"].min() >= -1 and exact["edited"].max() <= 1


def test_training_draws_are_seeded_and_resizes_keep_the_pair_aligned(tmp_path):
    from ip2p_lib.dataset.training import load_for_training

    rng = np.random.default_rng(1)
    pairs = [(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),) * 2 for _ in range(3)]
    folder = _pairs_folder(tmp_path / "pairs", pairs)

    def items(seed, epoch=0):
        data = load_for_training(folder, 16, seed=seed, split="all", resize_range=(20, 28))
        data.set_epoch(epoch)
        return [data[i] for i in range(len(data))]

    first, again, other = items(0), items(0), items(1)
    for x, y in zip(first, again):
        assert torch.equal(x["original"], y["original"]) and torch.equal(x["edited"], y["edited"])
    assert any(not torch.equal(x["original"], y["original"]) for x, y in zip(first, other))
    assert any(not torch.equal(x["original"], y["original"]) for x, y in zip(first, items(0, epoch=1)))
    for x in first:
        assert torch.equal(x["original"], x["edited"])  # one resize size, one crop, one flip for both
        assert x["original"].min() >= -1 and x["original"].max() <= 1
    batch = next(iter(torch.utils.data.DataLoader(load_for_training(folder, 16, split="all"), batch_size=2)))
    assert batch["original"].shape == (2, 3, 16, 16) and len(batch["edit_prompt"]) == 2


def test_training_splits_are_contiguous_by_caption_pair(tmp_path):
    from ip2p_lib.dataset.training import load_for_training, split_range

    assert [split_range(40, s) for s in ("train", "val", "test")] == [(0, 36), (36, 38), (38, 40)]
    tile = np.zeros((8, 8, 3), np.uint8)
    rows = []
    for i in range(40):
        for j in range(2 if i % 3 else 1):  # some caption pairs keep two samples
            rows.append({**dict.fromkeys(shards.SCORE_COLUMNS, 0.0), "original_prompt": "a", "edited_prompt": "b",
                         "edit_prompt": f"{i}/{j}", "original_image": tile, "edited_image": tile, "triple_index": 39 - i,
                         "sample": j, "seed": 0, "cfg": 0.0, "p": 0.0, "steps": 0, "variant": "v", "model": "m"})
    folder = tmp_path / "pairs"
    folder.mkdir()
    write_shard(folder / "part-000000.parquet", rows[::2])
    write_shard(folder / "part-000001.parquet", rows[1::2])
    seen = {}
    for split in ("train", "val", "test"):
        data = load_for_training(folder, 8, split=split)
        seen[split] = [data[k]["edit_prompt"] for k in range(len(data))]
    pair = lambda p: 39 - int(p.split("/")[0])  # noqa: E731 - the triple_index of an edit prompt
    assert sorted({pair(p) for p in seen["train"]}) == list(range(36))
    assert [pair(p) for p in seen["val"]] == sorted(pair(p) for p in seen["val"]) and {pair(p) for p in seen["val"]} == {36, 37}
    assert {pair(p) for p in seen["test"]} == {38, 39}
    assert sum(map(len, seen.values())) == len(rows)
    assert len(load_for_training(folder, 8, split="all", per_pair=True)) == 40


def test_training_reads_the_authors_layout_like_its_conversion(tmp_path):
    from ip2p_lib.dataset.readers import convert_authors
    from ip2p_lib.dataset.training import load_for_training

    folder, _ = authors_folder(tmp_path / "authors")
    convert_authors(folder, tmp_path / "converted")
    for per_pair in (False, True):
        a = load_for_training(folder, 16, split="all", seed=3, resize_range=(20, 24), per_pair=per_pair)
        b = load_for_training(tmp_path / "converted", 16, split="all", seed=3, resize_range=(20, 24), per_pair=per_pair)
        assert len(a) == len(b) == (3 if per_pair else 6)
        for i in range(len(a)):
            x, y = a[i], b[i]
            assert x["edit_prompt"] == y["edit_prompt"]
            assert torch.equal(x["original"], y["original"]) and torch.equal(x["edited"], y["edited"])


# ---------------------------------------------------------------- oracle pairs


def test_oracle_pairs_show_what_the_captions_say_and_resume(tmp_path, one_thread):
    from ip2p_lib.p2p.evaluate import oracle_verdicts

    triples = [*world_triples(10, seed=5), {"input": "a photo of a dog", "edit": "make it a cat", "output": "a cat"},
               {"input": "a small red circle on a gray background", "edit": "make it blue and big",
                "output": "a large blue circle on a gray background"}]  # two edits at once: no oracle
    path = write_jsonl(tmp_path / "triples.jsonl", triples)
    argv = ["pairs", "oracle", "--triples", str(path), "--samples-per-pair", "2", "--triples-per-shard", "3"]
    out, resumed = tmp_path / "oracle", tmp_path / "resumed"
    assert main([*argv, "--out", str(out)]) == 0
    frame = read_table(out)
    assert sorted(set(frame.triple_index)) == list(range(10)) and len(frame) == 20
    a, b = images_of(frame, "original_image"), images_of(frame, "edited_image")
    verdict = oracle_verdicts(a, b, list(frame.original_prompt), list(frame.edited_prompt))
    assert verdict["success"].all() and verdict["faithful_0"].all()
    for image, text in zip([*a, *b], [*frame.original_prompt, *frame.edited_prompt]):
        said, seen = parse_caption(text), judge(image).attributes()
        assert all(seen[k] == said[k] for k in ("shape", "color", "background", "size", "hpos", "vpos"))
    assert (frame.model == "oracle").all() and (frame.variant == "oracle").all() and frame.cfg.isna().all()
    assert np.isfinite(frame[list(shards.SCORE_COLUMNS)].to_numpy()).all()
    assert frame.groupby("triple_index").seed.nunique().eq(2).all()

    assert main([*argv, "--out", str(resumed), "--max-shards", "2"]) == 0
    assert len(shards.shard_files(resumed)) == 2
    assert main([*argv, "--out", str(resumed)]) == 0
    assert_same_records(read_table(resumed), frame)
    assert main([*argv, "--out", str(resumed), "--seed", "1"]) == 2  # another run's folder


# ---------------------------------------------------------------- the ablation sets (Figure 10)


def test_filter_by_oracle_keeps_exactly_the_right_pairs_and_by_none_keeps_all(tmp_path, one_thread):
    from ip2p_lib.dataset.filtered import write_frame

    path = write_jsonl(tmp_path / "triples.jsonl", world_triples(6, seed=3))
    assert main(["pairs", "oracle", "--triples", str(path), "--samples-per-pair", "3", "--out", str(tmp_path / "o")]) == 0
    frame = read_table(tmp_path / "o")
    broken = frame.index % 2 == 1  # every other pair: the edited image replaced by the input (no edit made)
    frame.loc[broken, "edited_image"] = frame.loc[broken, "original_image"]
    write_frame(frame, tmp_path / "mixed")
    for by, keep, want in (("oracle", "4", frame[~broken]), ("none", "4", frame), ("oracle", "1", None)):
        out = tmp_path / f"{by}-{keep}"
        assert main(["pairs", "filter", "--data", str(tmp_path / "mixed"), "--out", str(out), "--by", by,
                     "--keep-per-pair", keep]) == 0
        kept = read_table(out)
        if want is not None:
            assert_same_records(kept, want)
        else:  # the cap: one per caption pair, the best sim_direction among the good ones
            good = frame[~broken]
            best = good.sort_values(["triple_index", "sim_direction"], ascending=[True, False]).groupby("triple_index").head(1)
            assert_same_records(kept, best.sort_values(["triple_index", "sample"]))
        assert json.loads((out / "filter.json").read_text())["by"] == by


def test_subset_draws_whole_caption_pairs_seeded(tmp_path, one_thread):
    path = write_jsonl(tmp_path / "triples.jsonl", world_triples(10, seed=4))
    assert main(["pairs", "oracle", "--triples", str(path), "--samples-per-pair", "2", "--out", str(tmp_path / "o")]) == 0
    frame = read_table(tmp_path / "o")
    picks = []
    for seed in (0, 0, 1):
        out = tmp_path / f"s{len(picks)}"
        assert main(["pairs", "subset", "--data", str(tmp_path / "o"), "--fraction", "0.3", "--seed", str(seed),
                     "--out", str(out)]) == 0
        sub = read_table(out)
        pairs = sorted(set(sub.triple_index))
        assert len(pairs) == 3 and len(sub) == 6  # 30% of 10 caption pairs, both samples of each
        assert_same_records(sub, frame[frame.triple_index.isin(pairs)])
        picks.append(pairs)
    assert picks[0] == picks[1] and picks[0] != picks[2]
