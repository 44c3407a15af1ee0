"""`ip2p edit`: every bad input is one line on stderr and exit code 2; odd images just work."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from ip2p_lib.cli import main
from ip2p_lib.infra import models
from tests.fixtures_ip2p import offline, tiny_ip2p_dir  # noqa: F401  (fixtures)


@pytest.fixture()
def photo(tmp_path):
    path = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(path)
    return path


def _edit(*extra, model, inp, out, instruction="make it red"):
    return main(["edit", str(inp), instruction, "-o", str(out), "--model", str(model), "--steps", "2", "--resolution", "32", *extra])


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("ip2p edit: error:") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--steps", "0"], "steps must be at least 1"),
        (["--steps", "ten"], "--steps must be an integer"),
        (["--text-guidance", "-1"], "text guidance s_T must be at least 0"),
        (["--image-guidance", "abc"], "--image-guidance must be a number"),
        (["--text-guidance", "nan"], "must be a finite number"),
        (["--seed", "x"], "--seed must be an integer"),
        (["--device", "tpu"], "--device must be"),
        (["--sizing", "stretch"], "--sizing must be"),
        (["--scheduler", "warp_drive"], "unknown scheduler"),
    ],
)
def test_bad_numbers_and_names(args, needle, photo, tmp_path, tiny_ip2p_dir, capsys):  # noqa: F811
    assert _edit(*args, model=tiny_ip2p_dir, inp=photo, out=tmp_path / "o.png") == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("instruction", ["", "   \t"])
def test_empty_instruction(instruction, photo, tmp_path, tiny_ip2p_dir, capsys):  # noqa: F811
    assert _edit(model=tiny_ip2p_dir, inp=photo, out=tmp_path / "o.png", instruction=instruction) == 2
    _one_line_error(capsys, "instruction is empty")


def test_missing_and_non_image_inputs(tmp_path, tiny_ip2p_dir, capsys):  # noqa: F811
    assert _edit(model=tiny_ip2p_dir, inp=tmp_path / "nope.png", out=tmp_path / "o.png") == 2
    _one_line_error(capsys, "does not exist")
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    assert _edit(model=tiny_ip2p_dir, inp=text, out=tmp_path / "o.png") == 2
    _one_line_error(capsys, "not an image")


def test_output_without_an_image_extension(photo, tmp_path, tiny_ip2p_dir, capsys):  # noqa: F811
    assert _edit(model=tiny_ip2p_dir, inp=photo, out=tmp_path / "out.weird") == 2
    _one_line_error(capsys, "extension")


def test_models_that_are_not_available(photo, tmp_path, offline, monkeypatch, capsys):  # noqa: F811
    assert _edit(model="ip2p-tests-nobody/not-cached-model-91c", inp=photo, out=tmp_path / "o.png") == 2
    _one_line_error(capsys, "hf download ip2p-tests-nobody/not-cached-model-91c", "HF_HUB_OFFLINE")
    import ip2p_lib.editor.cli as edit_cli

    monkeypatch.setitem(models.TOY_MODELS, "ip2p", dataclasses.replace(models.TOY_MODELS["ip2p"], folder="not-trained-ip2p"))
    assert _edit(model="toy", inp=photo, out=tmp_path / "o.png") == 2
    _one_line_error(capsys, "toy ip2p model is missing", "notebook 05")
    assert _edit(model=tmp_path / "no-such-folder/", inp=photo, out=tmp_path / "o.png") == 2
    _one_line_error(capsys, "no InstructPix2Pix model folder")


def test_full_means_the_released_checkpoint(photo, tmp_path, offline, capsys):  # noqa: F811
    assert _edit(model="full", inp=photo, out=tmp_path / "o.png") == 2
    _one_line_error(capsys, "timbrooks/instruct-pix2pix")


def _rgba(path):
    a = np.zeros((30, 30, 4), np.uint8)
    a[5:25, 5:25] = (200, 10, 10, 255)
    Image.fromarray(a, "RGBA").save(path)


def _palette(path):
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (33, 27, 3), dtype=np.uint8)).convert("P").save(path)


def _sixteen(path):
    Image.fromarray(np.linspace(0, 65535, 25 * 31).astype(np.uint16).reshape(25, 31)).save(path)


def _gray(path):
    Image.new("L", (30, 20), 90).save(path)


def _large(path):
    Image.new("RGB", (400, 300), "blue").save(path)


@pytest.mark.parametrize(
    "make, name, size",
    [(_rgba, "rgba.png", (32, 32)), (_palette, "pal.png", (28, 32)), (_sixteen, "deep.png", (32, 28)),
     (_gray, "gray.jpg", (36, 24)), (_large, "big.png", (32, 24))],
)
def test_odd_images_are_converted_and_resized(make, name, size, tmp_path, tiny_ip2p_dir, capsys):  # noqa: F811
    """Authors' sizing at --resolution 32 with the tiny model's multiple of 4 (64 for SD)."""
    make(tmp_path / name)
    out = tmp_path / "out" / "edited.png"
    assert _edit(model=tiny_ip2p_dir, inp=tmp_path / name, out=out) == 0, capsys.readouterr().err
    result = Image.open(out)
    assert result.mode == "RGB" and result.size == size
    assert "seed" in capsys.readouterr().out


def test_seed_gives_the_same_picture_and_diffusers_sizing(photo, tmp_path, tiny_ip2p_dir):  # noqa: F811
    for name in ("a.png", "b.png"):
        assert _edit("--seed", "3", "--sizing", "diffusers", model=tiny_ip2p_dir, inp=photo, out=tmp_path / name) == 0
    a, b = np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png"))
    assert a.shape == (20, 28, 3) and np.array_equal(a, b)
