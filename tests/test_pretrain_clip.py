"""Toy CLIP: a registered open_clip config, a tiny contrastive run, and its text tower in
transformers form computing exactly open_clip's text features."""

import numpy as np
import open_clip
import pytest
import torch

from ip2p_lib.toyworld import Scene
from ip2p_lib.toyworld.pretrain.clip import (BOUNDARY_MARGIN_PX, EXPORT_CONTEXT, MODEL_NAME, REGIONS, at_region,
                                             boundary_distance_px, evaluate_clip, export_clip, one_attribute_changed,
                                             other_region, region_test_scenes, train_clip)
from ip2p_lib.toyworld.pretrain.convert import to_hf_text_model
from tests.pretrain_tiny import tiny_clip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = tiny_clip(steps=10)
    model, tok, state = train_clip(cfg, tmp_path_factory.mktemp("clip"), progress=False)
    return cfg, model, tok, state


def test_config_is_registered_with_open_clip(trained):
    assert MODEL_NAME in open_clip.list_models()


def test_tiny_clip_lowers_its_loss(trained):
    losses = trained[3].losses
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_hard_negative_differs_in_exactly_one_attribute():
    rng = np.random.default_rng(0)
    s = Scene("circle", "red", "gray", "small")
    for _ in range(50):
        t = one_attribute_changed(s, rng)
        assert sum(getattr(s, a) != getattr(t, a) for a in ("shape", "color", "background", "size")) == 1


def _open_clip_hidden(model, ids):
    x = model.token_embedding(ids) + model.positional_embedding
    return model.ln_final(model.transformer(x, attn_mask=model.attn_mask))


@torch.no_grad()
def test_exported_model_reloads_with_77_positions_and_same_features(trained, tmp_path):
    from ip2p_lib.infra.models import load_open_clip_folder

    cfg, model, tok, _ = trained
    export_clip(model, cfg, tmp_path, {})
    loaded, _ = load_open_clip_folder(tmp_path)
    assert loaded.positional_embedding.shape[0] == EXPORT_CONTEXT
    texts = ["a big red circle on a gray background", "a little blue square in the top left against white"]
    short, long = tok(texts), open_clip.get_tokenizer(f"local-dir:{tmp_path}")(texts)
    assert long.shape[1] == 77
    # fp16 storage: features agree to fp16 precision, and padding positions change nothing
    assert torch.allclose(model.encode_text(short), loaded.encode_text(long), atol=2e-2)


@torch.no_grad()
def test_text_tower_as_clip_text_model_gives_open_clip_hidden_states(trained):
    model = trained[1]
    hf = to_hf_text_model(model, with_projection=True)
    ids = trained[2](["a big red circle on a gray background", "there is a small green triangle on black"])
    out = hf(input_ids=ids)
    assert torch.allclose(out.last_hidden_state, _open_clip_hidden(model, ids), atol=1e-5)
    assert torch.allclose(out.text_embeds, model.encode_text(ids), atol=1e-5)


def test_evaluation_reports_every_bar(trained):
    m = evaluate_clip(trained[1], trained[2], n=20, batch=20)
    assert set(m) == {"zero_shot_shape", "zero_shot_color", "zero_shot_background", "zero_shot_size", "one_edit_ranking",
                      "zero_shot_region", "zero_shot_hpos", "zero_shot_vpos"}
    assert all(0.0 <= v <= 1.0 for v in m.values())


def test_position_hard_negatives_differ_only_in_position():
    rng = np.random.default_rng(0)
    s = Scene("circle", "red", "gray", "small", u=0.1, v=0.9)
    for region in REGIONS:
        moved = at_region(s, region, rng)
        assert (moved.hpos, moved.vpos) == region
        assert (moved.shape, moved.color, moved.background, moved.size) == (s.shape, s.color, s.background, s.size)
    for _ in range(100):
        t = other_region(s, rng)
        assert (t.hpos, t.vpos) != (s.hpos, s.vpos)


def test_region_test_scenes_keep_away_from_region_boundaries():
    scenes = region_test_scenes(200)
    assert len(scenes) == 200 and len({(s.u, s.v) for s in scenes}) == 200
    assert min(boundary_distance_px(s) for s in scenes) >= BOUNDARY_MARGIN_PX
    # a large object whose centre sits exactly on the boundary u = 1/3 is 0 px away
    assert boundary_distance_px(Scene("circle", "red", "gray", "large", u=1 / 3, v=0.5)) < 1e-9


@torch.no_grad()
def test_continued_training_starts_from_the_exported_weights(trained, tmp_path):
    from ip2p_lib.toyworld.pretrain.clip import build_clip, load_init_weights

    cfg, model, tok, _ = trained
    export_clip(model, cfg, tmp_path / "export", {})
    fresh = build_clip(cfg, tmp_path / "cfg")
    ids = tok(["a big red circle in the top left on a gray background"])
    assert not torch.allclose(fresh.encode_text(ids), model.encode_text(ids), atol=1e-2)
    load_init_weights(fresh, tmp_path / "export")
    assert torch.allclose(fresh.encode_text(ids), model.encode_text(ids), atol=2e-2)  # fp16 storage
