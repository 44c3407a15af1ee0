"""`ip2p world`: PNG files plus one JSONL record per image."""

import json

import numpy as np
from PIL import Image

from ip2p_lib.cli import main
from ip2p_lib.toyworld import Scene, parse_caption, render


def test_world_writes_images_and_records(tmp_path, capsys):
    assert main(["world", "--n", "7", "--seed", "3", "--out", str(tmp_path / "w")]) == 0
    records = [json.loads(line) for line in (tmp_path / "w" / "scenes.jsonl").read_text().splitlines()]
    assert len(records) == 7
    for rec in records:
        scene = Scene(rec["shape"], rec["color"], rec["background"], rec["size"], rec["u"], rec["v"])
        assert (rec["hpos"], rec["vpos"]) == (scene.hpos, scene.vpos)
        png = np.asarray(Image.open(tmp_path / "w" / rec["file"]))
        assert np.array_equal(png, render(scene))
        assert parse_caption(rec["caption"])["shape"] == rec["shape"]
    assert "wrote 7 scenes" in capsys.readouterr().out


def test_world_is_reproducible(tmp_path):
    main(["world", "--n", "4", "--seed", "9", "--out", str(tmp_path / "a")])
    main(["world", "--n", "4", "--seed", "9", "--out", str(tmp_path / "b")])
    assert (tmp_path / "a" / "scenes.jsonl").read_text() == (tmp_path / "b" / "scenes.jsonl").read_text()


def test_world_rejects_bad_arguments_with_one_line(tmp_path, capsys):
    assert main(["world", "--n", "0", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--n must be at least 1" in err and "Traceback" not in err
    (tmp_path / "file").write_text("x")
    assert main(["world", "--n", "1", "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err
