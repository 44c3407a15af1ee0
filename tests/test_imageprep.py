"""Reading any image as RGB, and the two sizing rules."""

import numpy as np
import pytest
from PIL import Image

from ip2p_lib.infra.errors import UserError
from ip2p_lib.editor.imageprep import load_rgb, resize_for_model, target_size, to_rgb


def test_authors_rule_matches_their_formula():
    assert target_size(1000, 700, 512, "authors", 64) == (512, 384)  # long side 512, short side rounded up then down
    assert target_size(512, 512, 512, "authors", 64) == (512, 512)
    assert target_size(64, 64, 512, "authors", 64) == (512, 512)  # small inputs are scaled up
    # their short side is rounded UP first, so the long side can exceed the resolution
    assert target_size(3000, 2000, 512, "authors", 64) == (576, 384)


def test_diffusers_rule_floors_to_multiples_and_downsizes_large_inputs():
    assert target_size(37, 45, 512, "diffusers", 8) == (32, 40)
    assert target_size(4000, 3000, 512, "diffusers", 8) == (512, 384)
    assert target_size(5, 5, 512, "diffusers", 8) == (8, 8)


def test_resize_crops_to_the_target():
    img = Image.new("RGB", (1000, 700), "red")
    assert resize_for_model(img, 512, "authors", 64).size == (512, 384)
    assert resize_for_model(img, 512, "diffusers", 8).size == (512, 352)  # 700 -> 358 -> 352


def test_rgba_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255  # red under alpha = 0 except one pixel
    rgba[0, 0, 3] = 255
    out = np.asarray(to_rgb(Image.fromarray(rgba, "RGBA")))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)


def test_palette_with_transparency_grayscale_and_16_bit():
    pal = Image.new("P", (2, 2), 0)
    pal.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    pal.putpixel((1, 1), 1)
    pal.info["transparency"] = 0
    out = np.asarray(to_rgb(pal))
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[1, 1]) == (10, 200, 30)
    gray = np.asarray(to_rgb(Image.new("L", (2, 2), 77)))
    assert gray.shape == (2, 2, 3) and (gray == 77).all()
    sixteen = Image.fromarray(np.full((2, 2), 32768, np.uint16))
    out16 = np.asarray(to_rgb(sixteen))
    assert out16.shape == (2, 2, 3) and (out16 == 128).all()  # 32768 / 65535 * 255, not clipped to white


def test_16_bit_png_round_trip(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((3, 5), 65535 // 4, np.uint16)).save(path)
    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (5, 3) and abs(int(np.asarray(img)[0, 0, 0]) - 64) <= 1


def test_missing_and_non_image_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_rgb(tmp_path / "nope.png")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(UserError, match="not an image"):
        load_rgb(bad)
