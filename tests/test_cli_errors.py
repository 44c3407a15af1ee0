"""Every `ip2p` command: bad input gives one line on stderr and exit code 2, before any model loads.

One table over every subcommand: unwritable outputs, missing / unreadable / malformed input
files, missing models and out-of-range numbers. Each row runs `ip2p_lib.cli.main` in this
process. The `no_heavy_work` fixture replaces what would load a model, train or run a
notebook with a stub that fails the test, so a check that let a bad input through shows up as
that failure instead of a long run.
"""

from __future__ import annotations

import dataclasses

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from PIL import Image

from ip2p_lib.cli import build_parser, iter_parsers, main
from ip2p_lib.infra import checks
from ip2p_lib.infra.errors import UserError

TRIPLE = json.dumps({"input": "a red circle", "edit": "make it blue", "output": "a blue circle"})


def _files(tmp: Path) -> dict[str, Path]:
    """The inputs the rows name as {key}: good and bad files, folders, models."""
    f = {
        "tmp": tmp,
        "file": tmp / "plain.txt",  # a regular file: nothing can be made below it
        "dir": tmp / "folder",
        "dir_png": tmp / "folder.png",  # a folder whose name looks like an image
        "empty_dir": tmp / "empty",
        "missing": tmp / "missing",
        "triples_bad_line2": tmp / "triples.jsonl",
        "triples_good": tmp / "good.jsonl",
        "captions_bad_line3": tmp / "captions.jsonl",
        "captions_array": tmp / "array.jsonl",
        "captions_no_field": tmp / "nofield.jsonl",
        "captions_binary": tmp / "binary.txt",
        "output_not_jsonl": tmp / "done.jsonl",
        "lm": tmp / "lm",  # passes the folder check; loading it would fail
        "ip2p": tmp / "ip2p",
        "image": tmp / "in.png",
        "not_image": tmp / "notes.png",
    }
    f["file"].write_text("x\n")
    for key in ("dir", "dir_png", "empty_dir", "lm", "ip2p"):
        f[key].mkdir()
    f["triples_bad_line2"].write_text(TRIPLE + "\nnot json\n")
    f["triples_good"].write_text(TRIPLE + "\n")
    f["captions_bad_line3"].write_text('{"caption": "a red circle"}\n\n{"caption": oops}\n')
    f["captions_array"].write_text('["a red circle"]\n')
    f["captions_no_field"].write_text('{"words": "a red circle"}\n')
    f["captions_binary"].write_bytes(b"a red circle\n\xff\xfe\x00\n")
    f["output_not_jsonl"].write_text("this is not JSON\n")
    (f["lm"] / "config.json").write_text("{}")
    (f["ip2p"] / "model_index.json").write_text("{}")
    Image.new("RGB", (20, 16), "red").save(f["image"])
    f["not_image"].write_text("hello")
    return f


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    return _files(tmp_path)


def _stub(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"the checks let a bad input through: {what} would start")

    return fail


@pytest.fixture(autouse=True)
def no_heavy_work(monkeypatch, tmp_path):
    """Stub every model load, training run and notebook run the commands could reach."""
    for model in ("vae", "clip", "lm", "sd"):
        fake = types.ModuleType(f"ip2p_lib.toyworld.pretrain.{model}")
        fake.default_config = fake.main = fake.evaluate_checkpoint = _stub(f"toy {model} pretraining")
        monkeypatch.setitem(sys.modules, fake.__name__, fake)
    for name, attrs in {"ip2p_lib.text.hf_backend": ("HFBackend", "finetune_hf"),
                        "ip2p_lib.text.openai_backend": ("OpenAIBackend", "finetune_openai")}.items():
        fake = types.ModuleType(name)
        fake.DEFAULT_BASE_MODEL = "base"
        for attr in attrs:
            setattr(fake, attr, _stub(attr))
        monkeypatch.setitem(sys.modules, name, fake)
    papermill = types.ModuleType("papermill")
    papermill.execute_notebook = _stub("a notebook")
    exceptions = types.ModuleType("papermill.exceptions")
    exceptions.PapermillExecutionError = type("PapermillExecutionError", (Exception,), {})
    monkeypatch.setitem(sys.modules, "papermill", papermill)
    monkeypatch.setitem(sys.modules, "papermill.exceptions", exceptions)
    import ip2p_lib.editor

    monkeypatch.setattr(ip2p_lib.editor.InstructPix2PixEditor, "from_pretrained", _stub("loading an InstructPix2Pix model"))
    import ip2p_lib.dataset.cli

    monkeypatch.setattr(ip2p_lib.dataset.cli, "_load_pipe", _stub("loading a Stable Diffusion model"))
    import ip2p_lib.editor.cli
    import ip2p_lib.infra.models
    import ip2p_lib.toyworld.pretrain.cli as pretrain_cli

    monkeypatch.setitem(ip2p_lib.infra.models.TOY_MODELS, "ip2p", dataclasses.replace(ip2p_lib.infra.models.TOY_MODELS["ip2p"], folder="not-trained-ip2p"))
    monkeypatch.setattr(pretrain_cli, "default_run_dir", lambda model: tmp_path / "runs" / model)
    monkeypatch.setattr(pretrain_cli, "default_out", lambda model: tmp_path / "toy-models" / model)


def _no_toy_models(monkeypatch, tmp_path):
    """A repository whose data/toy/models/ is empty."""
    monkeypatch.setattr("ip2p_lib.infra.models.data_dir", lambda: tmp_path / "empty-data")


def _another_run(monkeypatch, tmp_path):
    """An output folder that holds another run of `ip2p pairs generate`."""
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "run.json").write_text(json.dumps({"model": "some/other-model"}))


def _old_pretrain_run(monkeypatch, tmp_path):
    """A run folder left by the pretraining loop before TrainLoop (one `checkpoint.pt`)."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"")


SETUP = {"pre-sd-without-vae": _no_toy_models, "edit-model-toy-not-trained": _no_toy_models, "pairs-out-another-run": _another_run,
         "pre-run-dir-of-the-old-loop": _old_pretrain_run}  # rows that need more than files


EDIT = ["edit", "{image}", "make it blue", "-o", "{tmp}/out.png", "--model", "{ip2p}"]
GEN = ["text", "generate", "--n", "3", "--out", "{tmp}/gen.jsonl", "--model", "{lm}"]
FT = ["text", "finetune", "--out", "{tmp}/ft"]
PRE = ["toy", "pretrain"]
RUN = ["--run-dir", "{tmp}/run"]
PAIRS = ["pairs", "generate", "--triples", "{triples_good}", "--out", "{tmp}/pairs"]
TRAIN = ["train", "--data", "{dir}", "--init", "{ip2p}", "--out", "{tmp}/model"]
ORACLE = ["pairs", "oracle", "--triples", "{triples_good}", "--out", "{tmp}/oracle"]

# (id, argv with {file keys}, the command named in the message, fragments the message must contain)
ROWS = [
    # ip2p world
    ("world-out-unmakable", ["world", "--n", "5", "--out", "{file}/out"], "ip2p world", ["--out", "cannot create this folder"]),
    ("world-out-is-file", ["world", "--out", "{file}"], "ip2p world", ["--out", "not a folder"]),
    ("world-n-negative", ["world", "--n", "-5", "--out", "{tmp}/w"], "ip2p world", ["--n must be at least 1, got -5"]),
    ("world-n-not-int", ["world", "--n", "five", "--out", "{tmp}/w"], "ip2p world", ["--n", "invalid int value"]),
    ("world-seed-negative", ["world", "--seed", "-1", "--out", "{tmp}/w"], "ip2p world", ["--seed must be at least 0"]),
    ("world-seed-huge", ["world", "--seed", str(2**40), "--out", "{tmp}/w"], "ip2p world", ["--seed must be at most 4294967295"]),
    ("world-p-position", ["world", "--p-position", "1.5", "--out", "{tmp}/w"], "ip2p world", ["--p-position must be at most 1"]),
    ("world-resolution-huge", ["world", "--resolution", "100000", "--out", "{tmp}/w"], "ip2p world", ["--resolution must be at most"]),
    ("world-resolution-small", ["world", "--resolution", "8", "--out", "{tmp}/w"], "ip2p world", ["--resolution must be at least 16"]),
    ("world-unknown-option", ["world", "--out", "{tmp}/w", "--colour", "red"], "ip2p", ["unrecognized arguments: --colour"]),
    # ip2p text seed
    ("seed-n-zero", ["text", "seed", "--n", "0", "--out", "{tmp}/s.jsonl"], "ip2p text seed", ["--n must be at least 1"]),
    ("seed-out-is-dir", ["text", "seed", "--out", "{dir}"], "ip2p text seed", ["--out", "is a folder"]),
    ("seed-out-under-a-file", ["text", "seed", "--out", "{file}/s.jsonl"], "ip2p text seed", ["plain.txt exists and is not a folder"]),
    ("seed-out-unmakable", ["text", "seed", "--out", "{file}/sub/s.jsonl"], "ip2p text seed", ["cannot create this folder"]),
    ("seed-seed-negative", ["text", "seed", "--seed", "-2", "--out", "{tmp}/s.jsonl"], "ip2p text seed", ["--seed must be at least 0"]),
    # ip2p text finetune
    ("ft-seed-file-bad-line", [*FT, "--seed-file", "{triples_bad_line2}"], "ip2p text finetune",
     ["triples.jsonl:2 is not a JSON object"]),
    ("ft-seed-file-missing", [*FT, "--seed-file", "{missing}.jsonl"], "ip2p text finetune", ["no triples file at", "missing.jsonl"]),
    ("ft-seed-file-is-dir", [*FT, "--seed-file", "{dir}"], "ip2p text finetune", ["--seed-file", "is a folder"]),
    ("ft-model-missing", [*FT, "--model", "{missing}/"], "ip2p text finetune", ["no language model folder at"]),
    ("ft-model-not-a-model", [*FT, "--model", "{empty_dir}"], "ip2p text finetune", ["has no config.json"]),
    ("ft-epochs-zero", [*FT, "--epochs", "0"], "ip2p text finetune", ["--epochs must be greater than 0"]),
    ("ft-epochs-openai-fraction", [*FT, "--backend", "openai", "--epochs", "1.5"], "ip2p text finetune", ["whole number"]),
    ("ft-batch-size-zero", [*FT, "--batch-size", "0"], "ip2p text finetune", ["--batch-size must be at least 1"]),
    ("ft-lr-negative", [*FT, "--lr", "-0.001"], "ip2p text finetune", ["--lr must be greater than 0"]),
    ("ft-dropout-one", [*FT, "--dropout", "1"], "ip2p text finetune", ["--dropout must be at most 0.99"]),
    ("ft-out-unmakable", ["text", "finetune", "--out", "{file}/ft"], "ip2p text finetune", ["cannot create this folder"]),
    ("ft-backend-unknown", [*FT, "--backend", "gpt5"], "ip2p text finetune", ["--backend", "invalid choice"]),
    # ip2p text generate
    ("gen-captions-not-json", [*GEN, "--captions", "{captions_bad_line3}"], "ip2p text generate",
     ["captions.jsonl:3 is not a JSON object", "fix or delete that line"]),
    ("gen-captions-not-object", [*GEN, "--captions", "{captions_array}"], "ip2p text generate", ["array.jsonl:1 is not a JSON object"]),
    ("gen-captions-no-field", [*GEN, "--captions", "{captions_no_field}"], "ip2p text generate",
     ["nofield.jsonl:1 lacks the field(s) caption"]),
    ("gen-captions-not-utf8", [*GEN, "--captions", "{captions_binary}"], "ip2p text generate", ["binary.txt is not UTF-8"]),
    ("gen-captions-missing", [*GEN, "--captions", "{missing}.txt"], "ip2p text generate", ["no caption file at"]),
    ("gen-captions-is-dir", [*GEN, "--captions", "{dir}"], "ip2p text generate", ["--captions", "is a folder"]),
    ("gen-out-is-dir", [*GEN[:5], "{dir}", *GEN[6:]], "ip2p text generate", ["--out", "is a folder"]),
    ("gen-out-unmakable", [*GEN[:5], "{file}/sub/gen.jsonl", *GEN[6:]], "ip2p text generate", ["cannot create this folder"]),
    ("gen-out-not-jsonl", [*GEN[:5], "{output_not_jsonl}", *GEN[6:]], "ip2p text generate", ["done.jsonl:1 is not a JSON object"]),
    ("gen-seed-file-bad-line", [*GEN, "--seed-file", "{triples_bad_line2}"], "ip2p text generate", ["triples.jsonl:2"]),
    ("gen-no-model", GEN[:6], "ip2p text generate", ["--model is required"]),
    ("gen-model-missing", [*GEN[:6], "--model", "{missing}/"], "ip2p text generate", ["no language model folder at"]),
    ("gen-model-not-a-model", [*GEN[:6], "--model", "{empty_dir}"], "ip2p text generate", ["has no config.json"]),
    ("gen-no-n", ["text", "generate", "--out", "{tmp}/g.jsonl"], "ip2p text generate", ["required: --n"]),
    ("gen-n-negative", [*GEN[:2], "--n", "-1", *GEN[4:]], "ip2p text generate", ["--n must be at least 1, got -1"]),
    ("gen-batch-size-zero", [*GEN, "--batch-size", "0"], "ip2p text generate", ["--batch-size must be at least 1"]),
    ("gen-temperature", [*GEN, "--temperature", "3"], "ip2p text generate", ["--temperature must be at most 2"]),
    ("gen-top-p-zero", [*GEN, "--top-p", "0"], "ip2p text generate", ["--top-p must be greater than 0"]),
    ("gen-frequency-penalty", [*GEN, "--frequency-penalty", "-5"], "ip2p text generate", ["--frequency-penalty must be at least -2"]),
    ("gen-retries-negative", [*GEN, "--retries", "-1"], "ip2p text generate", ["--retries must be at least 0"]),
    ("gen-max-captions-zero", [*GEN, "--max-captions", "0"], "ip2p text generate", ["--max-captions must be at least 1"]),
    ("gen-workers-zero", [*GEN, "--workers", "0"], "ip2p text generate", ["--workers must be at least 1"]),
    ("gen-seed-negative", [*GEN, "--seed", "-3"], "ip2p text generate", ["--seed must be at least 0"]),
    ("gen-temperature-nan", [*GEN, "--temperature", "nan"], "ip2p text generate", ["--temperature must be a finite number"]),
    ("text-no-subcommand", ["text"], "ip2p text", ["required: SUBCOMMAND"]),
    # ip2p notebooks
    ("nb-out-is-file", ["notebooks", "--out", "{file}"], "ip2p notebooks", ["--out", "not a folder"]),
    ("nb-out-unmakable", ["notebooks", "--out", "{file}/nb"], "ip2p notebooks", ["cannot create this folder"]),
    ("nb-figures-unmakable", ["notebooks", "--figures", "{file}/fig"], "ip2p notebooks", ["--figures", "cannot create this folder"]),
    ("nb-unknown-notebook", ["notebooks", "--only", "99", "--out", "{tmp}/nb"], "ip2p notebooks", ["no notebook matches 99"]),
    ("nb-unknown-profile", ["notebooks", "--profile", "huge"], "ip2p notebooks", ["--profile", "invalid choice"]),
    # ip2p toy pretrain
    ("pre-steps-zero", [*PRE, "vae", "--steps", "0", *RUN], "ip2p toy pretrain", ["--steps must be at least 1"]),
    ("pre-lr-zero", [*PRE, "clip", "--lr", "0", *RUN], "ip2p toy pretrain", ["--lr must be greater than 0"]),
    ("pre-threads-zero", [*PRE, "lm", "--threads", "0", *RUN], "ip2p toy pretrain", ["--threads must be at least 1"]),
    ("pre-seed-negative", [*PRE, "vae", "--seed", "-1", *RUN], "ip2p toy pretrain", ["--seed must be at least 0"]),
    ("pre-run-dir-is-file", [*PRE, "vae", "--run-dir", "{file}"], "ip2p toy pretrain", ["--run-dir", "not a folder"]),
    ("pre-run-dir-unmakable", [*PRE, "vae", "--run-dir", "{file}/run"], "ip2p toy pretrain", ["--run-dir", "cannot create"]),
    ("pre-out-unmakable", [*PRE, "vae", *RUN, "--out", "{file}/vae"], "ip2p toy pretrain", ["--out", "cannot create"]),
    ("pre-init-from-wrong-model", [*PRE, "lm", *RUN, "--init-from", "{dir}"], "ip2p toy pretrain",
     ["--init-from is for clip and sd, not lm"]),
    ("pre-init-from-missing", [*PRE, "sd", *RUN, "--init-from", "{missing}"], "ip2p toy pretrain", ["no toy sd folder at"]),
    ("pre-init-from-not-a-model", [*PRE, "clip", *RUN, "--init-from", "{empty_dir}"], "ip2p toy pretrain",
     ["has no open_clip_config.json"]),
    ("pre-sd-without-vae", [*PRE, "sd", *RUN], "ip2p toy pretrain", ["toy vae model is missing", "ip2p toy pretrain vae"]),
    ("pre-eval-only-no-checkpoint", [*PRE, "sd", "--eval-only", "--run-dir", "{empty_dir}"], "ip2p toy pretrain",
     ["no checkpoint in"]),
    ("pre-eval-only-not-sd", [*PRE, "lm", "--eval-only"], "ip2p toy pretrain", ["--eval-only is for"]),
    ("pre-run-dir-of-the-old-loop", [*PRE, "vae", *RUN], "ip2p toy pretrain",
     ["{tmp}/run/checkpoint.pt was written by the old pretraining loop", "use a new --run-dir"]),
    ("pre-unknown-model", [*PRE, "gpt"], "ip2p toy pretrain", ["invalid choice: 'gpt'"]),
    # ip2p edit
    ("edit-steps-zero", [*EDIT, "--steps", "0"], "ip2p edit", ["steps must be at least 1"]),
    ("edit-steps-text", [*EDIT, "--steps", "many"], "ip2p edit", ["--steps must be an integer"]),
    ("edit-text-guidance-negative", [*EDIT, "--text-guidance", "-1"], "ip2p edit", ["text guidance s_T must be at least 0"]),
    ("edit-image-guidance-inf", [*EDIT, "--image-guidance", "inf"], "ip2p edit", ["--image-guidance must be a finite number"]),
    ("edit-empty-instruction", ["edit", "{image}", " ", "-o", "{tmp}/o.png", "--model", "{ip2p}"], "ip2p edit",
     ["instruction is empty"]),
    ("edit-seed-negative", [*EDIT, "--seed", "-5"], "ip2p edit", ["--seed must be at least 0"]),
    ("edit-resolution-huge", [*EDIT, "--resolution", "100000"], "ip2p edit", ["--resolution must be at most"]),
    ("edit-input-missing", ["edit", "{missing}.png", *EDIT[2:]], "ip2p edit", ["missing.png does not exist"]),
    ("edit-input-not-image", ["edit", "{not_image}", *EDIT[2:]], "ip2p edit", ["notes.png is not an image"]),
    ("edit-output-no-extension", [*EDIT[:4], "{tmp}/out", *EDIT[5:]], "ip2p edit", ["give it an extension"]),
    ("edit-output-is-dir", [*EDIT[:4], "{dir_png}", *EDIT[5:]], "ip2p edit", ["--output", "is a folder"]),
    ("edit-output-unmakable", [*EDIT[:4], "{file}/out.png", *EDIT[5:]], "ip2p edit", ["--output", "not a folder"]),
    ("edit-model-missing", [*EDIT[:6], "{missing}/"], "ip2p edit", ["no InstructPix2Pix model folder at"]),
    ("edit-model-not-a-model", [*EDIT[:6], "{empty_dir}"], "ip2p edit", ["has no model_index.json"]),
    ("edit-model-toy-not-trained", [*EDIT[:6], "toy"], "ip2p edit", ["notebook 05"]),
    ("edit-no-output", ["edit", "{image}", "make it blue"], "ip2p edit", ["required: -o/--output"]),
    # ip2p pairs
    ("pairs-triples-bad-line", [*PAIRS[:3], "{triples_bad_line2}", *PAIRS[4:]], "ip2p pairs generate",
     ["triples.jsonl:2 is not a JSON object"]),
    ("pairs-triples-missing", [*PAIRS[:3], "{missing}.jsonl", *PAIRS[4:]], "ip2p pairs generate", ["no triples file at"]),
    ("pairs-model-missing", [*PAIRS, "--model", "{missing}/"], "ip2p pairs generate",
     ["no Stable Diffusion pipeline folder at"]),
    ("pairs-model-not-a-model", [*PAIRS, "--model", "{empty_dir}"], "ip2p pairs generate", ["has no model_index.json"]),
    ("pairs-shard-out-of-range", [*PAIRS, "--shard", "3/2"], "ip2p pairs generate", ["--shard '3/2': need 0 <= I < N"]),
    ("pairs-shard-not-i-of-n", [*PAIRS, "--shard", "half"], "ip2p pairs generate", ["write it as I/N"]),
    ("pairs-out-another-run", PAIRS, "ip2p pairs generate", ["holds another run's data", "some/other-model"]),
    ("pairs-out-unmakable", [*PAIRS[:5], "{file}/pairs"], "ip2p pairs generate", ["--out", "cannot create this folder"]),
    ("pairs-steps-zero", [*PAIRS, "--steps", "0"], "ip2p pairs generate", ["--steps must be at least 1"]),
    ("pairs-samples-zero", [*PAIRS, "--samples-per-pair", "0"], "ip2p pairs generate",
     ["--samples-per-pair must be at least 1"]),
    ("pairs-limit-zero", [*PAIRS, "--limit", "0"], "ip2p pairs generate", ["--limit must be at least 1"]),
    ("pairs-max-shards-negative", [*PAIRS, "--max-shards", "-1"], "ip2p pairs generate",
     ["--max-shards must be at least 1"]),
    ("pairs-variant-unknown", [*PAIRS, "--variant", "nonsense"], "ip2p pairs generate", ["--variant 'nonsense'"]),
    ("filter-data-missing", ["pairs", "filter", "--data", "{missing}", "--out", "{tmp}/f"], "ip2p pairs filter",
     ["--data", "no such folder"]),
    ("filter-thresholds-unknown", ["pairs", "filter", "--data", "{dir}", "--out", "{tmp}/f", "--thresholds", "strict"],
     "ip2p pairs filter", ["--thresholds 'strict'"]),
    ("oracle-triples-bad-line", [*ORACLE[:3], "{triples_bad_line2}", *ORACLE[4:]], "ip2p pairs oracle",
     ["triples.jsonl:2 is not a JSON object"]),
    ("oracle-resolution-small", [*ORACLE, "--resolution", "4"], "ip2p pairs oracle", ["--resolution must be at least 8"]),
    ("oracle-shard-out-of-range", [*ORACLE, "--shard", "2/2"], "ip2p pairs oracle", ["need 0 <= I < N"]),
    ("match-like-missing", ["pairs", "match", "--data", "{dir}", "--like", "{missing}", "--out", "{tmp}/m"],
     "ip2p pairs match", ["--like", "no such folder"]),
    ("match-data-empty", ["pairs", "match", "--data", "{empty_dir}", "--like", "{empty_dir}", "--out", "{tmp}/m"],
     "ip2p pairs match", ["no shards in"]),
    ("filter-keep-per-pair-zero", ["pairs", "filter", "--data", "{dir}", "--out", "{tmp}/f", "--keep-per-pair", "0"],
     "ip2p pairs filter", ["--keep-per-pair must be at least 1"]),
    ("filter-by-unknown", ["pairs", "filter", "--data", "{dir}", "--out", "{tmp}/f", "--by", "eye"],
     "ip2p pairs filter", ["--by", "invalid choice"]),
    ("subset-fraction-zero", ["pairs", "subset", "--data", "{dir}", "--fraction", "0", "--out", "{tmp}/s"],
     "ip2p pairs subset", ["--fraction must be greater than 0"]),
    ("subset-fraction-text", ["pairs", "subset", "--data", "{dir}", "--fraction", "half", "--out", "{tmp}/s"],
     "ip2p pairs subset", ["--fraction must be a number"]),
    ("subset-data-empty", ["pairs", "subset", "--data", "{empty_dir}", "--fraction", "0.5", "--out", "{tmp}/s"],
     "ip2p pairs subset", ["no shards in"]),
    # ip2p train
    ("train-data-missing", [*TRAIN[:1], "--data", "{missing}", *TRAIN[3:]], "ip2p train", ["--data: no dataset folder at"]),
    ("train-init-missing", [*TRAIN[:3], "--init", "{missing}/", *TRAIN[5:]], "ip2p train",
     ["no Stable Diffusion or InstructPix2Pix model folder at"]),
    ("train-init-not-a-model", [*TRAIN[:3], "--init", "{empty_dir}", *TRAIN[5:]], "ip2p train",
     ["has no model_index.json"]),
    ("train-data-not-a-dataset", [*TRAIN[:1], "--data", "{empty_dir}", *TRAIN[3:]], "ip2p train",
     ["no dataset here"]),
    ("train-steps-zero", [*TRAIN, "--steps", "0"], "ip2p train", ["--steps must be at least 1"]),
    ("train-lr-text", [*TRAIN, "--lr", "fast"], "ip2p train", ["--lr must be a number"]),
    ("train-batch-size-zero", [*TRAIN, "--batch-size", "0"], "ip2p train", ["--batch-size must be at least 1"]),
    ("train-clip-norm-negative", [*TRAIN, "--clip-norm", "-1"], "ip2p train", ["--clip-norm must be at least 0"]),
    ("train-seed-negative", [*TRAIN, "--seed", "-1"], "ip2p train", ["--seed must be at least 0"]),
    ("train-out-unmakable", [*TRAIN[:5], "--out", "{file}/model"], "ip2p train", ["--out", "cannot create this folder"]),
    ("train-recipe-unknown", [*TRAIN, "--recipe", "mine"], "ip2p train", ["--recipe", "invalid choice"]),
    # ip2p figures
    ("figures-only-unknown", ["figures", "--only", "fig99", "--out", "{tmp}/f"], "ip2p figures",
     ["--only fig99: unknown figure", "fig04"]),
    ("figures-profile-unknown", ["figures", "--profile", "huge", "--out", "{tmp}/f"], "ip2p figures",
     ["unknown profile 'huge'"]),
    ("figures-n-zero", ["figures", "--n", "0", "--out", "{tmp}/f"], "ip2p figures", ["--n must be at least 1"]),
    ("figures-steps-text", ["figures", "--steps", "many", "--out", "{tmp}/f"], "ip2p figures",
     ["--steps must be an integer"]),
    ("figures-data-missing", ["figures", "--data", "{missing}", "--out", "{tmp}/f"], "ip2p figures",
     ["--data", "no such folder"]),
    ("figures-full-without-data", ["figures", "--profile", "full", "--out", "{tmp}/f"], "ip2p figures",
     ["the full profile needs a test set: --data FOLDER"]),
    ("figures-out-unmakable", ["figures", "--out", "{file}/figs"], "ip2p figures", ["--out", "cannot create"]),
    ("convert-from-missing", ["pairs", "convert", "--from", "{missing}", "--out", "{tmp}/c"], "ip2p pairs convert",
     ["not a folder in the authors' layout"]),
    ("convert-from-not-authors", ["pairs", "convert", "--from", "{empty_dir}", "--out", "{tmp}/c"], "ip2p pairs convert",
     ["not a folder in the authors' layout"]),
]


@pytest.mark.parametrize("row, argv, command, fragments", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_and_exit_2(row, argv, command, fragments, files, capsys, monkeypatch):
    if row in SETUP:
        SETUP[row](monkeypatch, files["tmp"])
    args = [a.format(**files) for a in argv]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(f"{command}: error: "), err
    for fragment in fragments:
        assert fragment.format(**files) in err, err


def test_every_subcommand_has_rows():
    """The table covers every command that runs, so a new command needs its rows."""
    leaves = {p.prog for p in iter_parsers(build_parser()) if p.get_default("func") is not None}
    covered = {row[2] for row in ROWS}
    assert leaves <= covered, f"no bad-input rows for {sorted(leaves - covered)}"


def test_a_failed_check_writes_nothing(files):
    """Checks come before work: a bad number leaves no output behind."""
    assert main(["world", "--n", "0", "--out", str(files["tmp"] / "never")]) == 2
    assert main(["text", "seed", "--n", "-1", "--out", str(files["tmp"] / "never.jsonl")]) == 2
    assert not (files["tmp"] / "never").exists() and not (files["tmp"] / "never.jsonl").exists()


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            yield from ((f"{parser.prog} {c.dest}", c) for c in action._choices_actions)
            continue
        yield f"{parser.prog} {'/'.join(action.option_strings) or action.dest}", action


def test_every_option_says_what_it_does_and_its_default():
    problems = []
    for parser in iter_parsers(build_parser()):
        for name, action in _options(parser):
            text = (action.help or "") % {"default": action.default, "prog": parser.prog}
            if len(text.split()) < 2:
                problems.append(f"{name}: no help text")
            elif action.option_strings and action.required and "required" not in text:
                problems.append(f"{name}: a required option whose help does not say so")
            elif action.option_strings and not action.required and "default" not in text:
                problems.append(f"{name}: the help does not state the default")
            elif action.option_strings and action.default not in (None, False) and str(action.default) not in text:
                problems.append(f"{name}: the help does not show the default {action.default!r}")
    assert not problems, "\n".join(problems)


def test_text_generation_defaults_are_the_papers():
    """PAPER_NOTES §3.1.1: temperature 0.7, top_p 1.0, frequency_penalty 0.1, up to 3 retries."""
    generate = next(p for p in iter_parsers(build_parser()) if p.prog == "ip2p text generate")
    defaults = {a.dest: a.default for a in generate._actions}
    assert (defaults["temperature"], defaults["top_p"], defaults["frequency_penalty"], defaults["retries"]) == (0.7, 1.0, 0.1, 3)


def test_help_imports_no_torch():
    """Every check runs before the heavy imports: building the parser must not import torch."""
    code = "import sys, ip2p_lib.cli as c; c.build_parser(); print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "[]", result.stdout


@pytest.mark.parametrize("instruction, steps, s_T, s_I", [("", 10, 7.5, 1.5), ("go", 0, 7.5, 1.5), ("go", 10, -1.0, 1.5),
                                                          ("go", 10, 7.5, -0.5)])
def test_the_editor_and_ip2p_edit_give_the_same_message(instruction, steps, s_T, s_I, files, capsys):
    """`check_edit_arguments` owns the edit's checks: the library and the CLI say the same thing."""
    from ip2p_lib.editor import InstructPix2PixEditor

    with pytest.raises(UserError) as raised:
        InstructPix2PixEditor.edit(object(), Image.new("RGB", (8, 8)), instruction, steps=steps,
                                   s_text=s_T, s_image=s_I)
    argv = ["edit", str(files["image"]), instruction, "-o", str(files["tmp"] / "o.png"), "--model", str(files["ip2p"]),
            "--steps", str(steps), "--text-guidance", str(s_T), "--image-guidance", str(s_I)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"ip2p edit: error: {raised.value}"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: checks.number("2.5", "--n", int), "--n must be an integer, got '2.5'"),
        (lambda: checks.number(2.5, "--n", int), "--n must be an integer, got 2.5"),
        (lambda: checks.number("1e400", "--x"), "--x must be a finite number"),
        (lambda: checks.number(0.5, "--x", minimum=1), "--x must be at least 1, got 0.5"),
        (lambda: checks.number(3, "--x", maximum=2.5), "--x must be at most 2.5, got 3"),
        (lambda: checks.number(0, "--x", above=0), "--x must be greater than 0, got 0"),
        (lambda: checks.seed(2**32), "--seed must be at most 4294967295"),
    ],
)
def test_number_checks(call, message):
    with pytest.raises(UserError) as raised:
        call()
    assert message in str(raised.value)


def test_numbers_in_range_pass_through():
    assert checks.number("7", "--n", int, minimum=1, maximum=7) == 7
    assert checks.number(0.0, "--x", minimum=0) == 0.0
    assert checks.seed("4294967295") == 2**32 - 1
