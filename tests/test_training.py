"""The InstructPix2Pix trainer: its loop, its resumes, its folder, its errors (issue 13, §3.2).

Everything runs on a tiny random SD (16 px images) and a dataset of a few random pairs, so a
whole training run takes a second or two."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ip2p_lib.cli import main
from ip2p_lib.dataset import shards
from ip2p_lib.dataset.shards import write_shard
from ip2p_lib.infra.trainloop import EpochSampler, checkpoints, make_ema

ROOT = Path(__file__).resolve().parents[1]
N_PAIRS = 24


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", **extra)
    return env


def pairs_folder(root: Path, n: int = N_PAIRS, size: int = 16, seed: int = 0, drop: str | None = None) -> Path:
    """Shards of `n` random 16 px pairs (one caption pair each), optionally without column `drop`."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        b = np.clip(a.astype(int) + 60, 0, 255).astype(np.uint8)
        rows.append({**dict.fromkeys(shards.SCORE_COLUMNS, 0.0), "original_prompt": "a", "edited_prompt": "b",
                     "edit_prompt": ["make it red", "the red"][i % 2], "original_image": a, "edited_image": b,
                     "triple_index": i, "sample": 0, "seed": i, "cfg": 0.0, "p": 0.0, "steps": 0, "variant": "v",
                     "model": "m"})
    root.mkdir(parents=True, exist_ok=True)
    write_shard(root / "part-000000.parquet", rows)
    if drop:
        import pyarrow.parquet as pq

        table = pq.read_table(root / "part-000000.parquet")
        pq.write_table(table.drop([drop]), root / "part-000000.parquet")
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from ip2p_lib.infra.random_models import build_tiny_ip2p, build_tiny_sd

    root = tmp_path_factory.mktemp("train")
    torch.set_num_threads(1)
    return {"sd": build_tiny_sd(root / "sd", seed=0, prediction_type="v_prediction"),
            "ip2p": build_tiny_ip2p(root / "ip2p", seed=1),
            "data": pairs_folder(root / "data")}


def train_args(world, out: Path, steps: int = 8, *extra: str) -> list[str]:
    return ["train", "--data", str(world["data"]), "--init", str(world["sd"]), "--out", str(out),
            "--steps", str(steps), "--batch-size", "4", "--resolution", "16", "--lr", "1e-3",
            "--ema-decay", "0.9", "--quiet", "--threads", "1", *extra]


def unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[:3]}"


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def reference(world, tmp_path_factory):
    """An uninterrupted 8-step run (checkpointing every step, as the killed runs do)."""
    out = tmp_path_factory.mktemp("ref") / "model"
    assert main(train_args(world, out, 8, "--checkpoint-every", "0")) == 0
    return out


# ---------------------------------------------------------------- the sampler


def test_each_epoch_visits_every_example_once_and_processes_never_overlap():
    s = EpochSampler(n=10, batch=2, seed=3, processes=2, accumulation=1)
    seen = np.concatenate([s.indices(step, 0, rank) for step in range(5) for rank in range(2)])  # 20 samples
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert not set(s.indices(0, 0, 0)) & set(s.indices(0, 0, 1))
    assert list(seen[:10]) != list(seen[10:]), "each epoch is a fresh permutation"
    assert s.effective_batch == 4 and s.epochs_at(5) == 2.0
    # the draws of a step depend on the step alone, not on what ran before
    again = EpochSampler(n=10, batch=2, seed=3, processes=2)
    assert np.array_equal(again.indices(3, 0, 1), s.indices(3, 0, 1))


# ---------------------------------------------------------------- kill -9 and resume


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights_bit_for_bit(world, reference, tmp_path):
    out = tmp_path / "model"
    run_dir = Path(str(out) + ".run")
    cmd = [sys.executable, "-m", "ip2p_lib.cli", *train_args(world, out, 8, "--checkpoint-every", "0")]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while proc.poll() is None and time.monotonic() < deadline:
            done = checkpoints(run_dir)
            if done and 2 <= done[-1][0] < 8:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it was killed"
    assert not (out / "model_index.json").exists()
    assert main(train_args(world, out, 8, "--checkpoint-every", "0")) == 0  # the same command again
    assert_same_weights(unet_weights(out), unet_weights(reference))
    # the loss curve of the resumed run is the uninterrupted one (steps logged twice agree too)
    assert dict(losses(run_dir)) == dict(losses(Path(str(reference) + ".run")))


def test_a_run_lengthened_later_equals_one_run_of_the_full_length(world, reference, tmp_path):
    """Constant learning rate: 5 steps, then the same command with --steps 8 = 8 steps at once.
    A half-written checkpoint folder (killed while saving) is ignored."""
    out = tmp_path / "model"
    assert main(train_args(world, out, 5, "--checkpoint-every", "0")) == 0
    (Path(str(out) + ".run") / "checkpoint-6.tmp").mkdir()  # what a kill during save_state leaves
    assert main(train_args(world, out, 8, "--checkpoint-every", "0")) == 0
    assert_same_weights(unet_weights(out), unet_weights(reference))


def test_a_changed_recipe_is_refused_on_resume(world, reference, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(train_args(world, out, 2)) == 0
    capsys.readouterr()  # noqa: the first run's output
    assert main([*train_args(world, out, 3), "--lr", "5e-3"]) == 2  # the last --lr wins
    err = capsys.readouterr().err
    assert "another configuration" in err and "lr" in err and err.count("\n") == 1


# ---------------------------------------------------------------- what the run saves


def test_the_saved_folder_is_an_instructpix2pix_pipeline_with_the_ema_weights(world, reference):
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from ip2p_lib.editor.editor import InstructPix2PixEditor

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(reference)
    assert pipe.unet.config.in_channels == 8
    card = json.loads((reference / "training.json").read_text())
    assert card["result"]["steps"] == 8 and card["result"]["effective_batch"] == 4 and card["init_kind"] == "sd"
    assert card["result"]["examples"] == int(0.9 * N_PAIRS)  # the contiguous train split
    readme = (reference / "README.md").read_text()
    assert f"ip2p train --data {world['data']}" in readme and "| effective batch | 4 |" in readme
    assert len((reference / "training_log.jsonl").read_text().splitlines()) == 1  # logged every 10 steps and at the end
    assert json.loads((reference / "training_captions.json").read_text()) == ["a", "b"]
    # EMA weights, not the last training weights: they differ from the checkpoint's model
    ckpt = checkpoints(Path(str(reference) + ".run"))[-1][1]
    trained = load_file(ckpt / "model.safetensors")
    saved = unet_weights(reference)
    assert not torch.equal(saved["conv_in.weight"], trained["conv_in.weight"])
    editor = InstructPix2PixEditor.from_pretrained(str(reference))
    from PIL import Image

    result = editor.edit(Image.new("RGB", (16, 16)), "make it red", steps=2, seed=0)
    assert np.asarray(result.image).shape == (16, 16, 3)


def test_sd_init_is_widened_and_an_ip2p_init_is_kept(world):
    from diffusers import UNet2DConditionModel

    from ip2p_lib.training.trainer import load_models

    sd = load_models(str(world["sd"]))
    original = UNet2DConditionModel.from_pretrained(world["sd"], subfolder="unet")
    assert sd.kind == "sd" and sd.unet.config.in_channels == 8
    assert torch.equal(sd.unet.conv_in.weight[:, :4], original.conv_in.weight)
    assert torch.count_nonzero(sd.unet.conv_in.weight[:, 4:]) == 0
    ip2p = load_models(str(world["ip2p"]))
    released = UNet2DConditionModel.from_pretrained(world["ip2p"], subfolder="unet")
    assert ip2p.kind == "ip2p" and torch.equal(ip2p.unet.conv_in.weight, released.conv_in.weight)


def test_a_half_precision_folder_holds_the_same_model_rounded(world, reference, tmp_path):
    """Re-running a finished run only exports: --save-precision fp16 gives the fp32 weights rounded."""
    import shutil

    from diffusers import StableDiffusionInstructPix2PixPipeline

    out = tmp_path / "model"
    shutil.copytree(Path(str(reference) + ".run"), Path(str(out) + ".run"))
    assert main([*train_args(world, out, 8), "--save-precision", "fp16"]) == 0
    half, full = unet_weights(out), unet_weights(reference)
    assert all(half[k].dtype == torch.float16 and torch.equal(half[k], full[k].half()) for k in full)
    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(out)
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32  # loads as float32 by default
    assert pipe.tokenizer("make it red").input_ids == StableDiffusionInstructPix2PixPipeline.from_pretrained(
        reference).tokenizer("make it red").input_ids
    assert "--save-precision fp16" in (out / "README.md").read_text()


def test_fine_tuning_an_instructpix2pix_folder(world, tmp_path):
    out = tmp_path / "ft"
    args = train_args(world, out, 2)
    args[args.index("--init") + 1] = str(world["ip2p"])
    assert main(args) == 0
    assert json.loads((out / "training.json").read_text())["init_kind"] == "ip2p"


def test_encoding_once_trains_like_encoding_every_step(world, tmp_path):
    a, b = tmp_path / "cached", tmp_path / "per_step"
    assert main([*train_args(world, a, 3), "--cache", "on"]) == 0
    assert main([*train_args(world, b, 3), "--cache", "off"]) == 0
    la, lb = losses(Path(str(a) + ".run")), losses(Path(str(b) + ".run"))
    assert [s for s, _ in la] == [s for s, _ in lb]
    assert np.allclose([v for _, v in la], [v for _, v in lb], rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- the EMA


def test_ema_without_warm_up_stays_at_the_initial_weights_and_with_it_follows():
    """Training moves a weight from 0 to 1 over 100 steps: the paper's 0.9999 without warm-up
    barely leaves 0; the authors' (1 + n) / (10 + n) warm-up follows closely; the power form lags."""
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    emas = {w: make_ema(model, 0.9999, w) for w in ("none", "authors", "power")}
    for n in range(1, 101):
        with torch.no_grad():
            model.weight.fill_(n / 100)
        for ema in emas.values():
            ema.step(model.parameters())
    got = {w: float(e.shadow_params[0]) for w, e in emas.items()}
    by_hand = sum(1e-4 * 0.9999 ** (100 - n) * n / 100 for n in range(1, 101))  # EMA with constant decay
    assert got["none"] == pytest.approx(by_hand, rel=1e-3) and got["none"] < 0.01
    assert got["authors"] > 0.85 and 0.5 < got["power"] < got["authors"]
    with pytest.raises(ValueError, match="warm-up"):
        make_ema(model, 0.9, "sometimes")


# ---------------------------------------------------------------- several processes


def test_accelerate_launch_with_two_processes_reports_the_effective_batch(world, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu",  # no GPU here: gloo on CPU
           "-m", "ip2p_lib.cli", *train_args(world, out, 3, "--accumulation", "2")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((out / "training.json").read_text())["result"]
    assert card["effective_batch"] == 4 * 2 * 2 and card["describe"]["processes"] == 2
    assert card["describe"]["samples"] == 3 * 16
    assert "effective batch 16" in done.stdout


# ---------------------------------------------------------------- bad input: one line, exit 2


@pytest.mark.parametrize("case, message", [
    ("no data", "no dataset folder"),
    ("no columns", "edit_prompt"),
    ("not a model", "model_index.json"),
    ("three channels", "input channels"),
])
def test_bad_input_is_one_line_and_exit_2(world, tmp_path, capsys, case, message):
    args = train_args(world, tmp_path / "out", 1)
    if case == "no data":
        args[args.index("--data") + 1] = str(tmp_path / "missing")
    elif case == "no columns":
        args[args.index("--data") + 1] = str(pairs_folder(tmp_path / "bad", n=4, drop="edit_prompt"))
    elif case == "not a model":
        (tmp_path / "empty").mkdir()
        args[args.index("--init") + 1] = str(tmp_path / "empty")
    else:
        from diffusers import UNet2DConditionModel

        import shutil

        folder = tmp_path / "odd"
        shutil.copytree(world["sd"], folder)
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
        from ip2p_lib.surgery import widen_conv_in

        widen_conv_in(unet, 5).save_pretrained(folder / "unet")
        args[args.index("--init") + 1] = str(folder)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
