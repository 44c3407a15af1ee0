"""The loaders: committed toy models load offline through the same calls as the full models, and
a missing model gives one clear UserError that says what to download."""

import os

import pytest
import torch

from ip2p_lib.infra import models
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.paths import data_dir

MODELS = data_dir() / "toy" / "models"


def _committed(role, marker):
    return pytest.mark.skipif(not (MODELS / role / marker).exists(), reason=f"toy {role} not committed yet")


@_committed("clip", "open_clip_config.json")
@torch.no_grad()
def test_toy_clip_loads_offline_and_ranks_the_right_caption_first():
    from ip2p_lib.toyworld import Scene, caption, render

    model, preprocess, tokenizer = models.load_clip("toy")
    from PIL import Image

    scene = Scene("triangle", "blue", "beige", "large")
    image = preprocess(Image.fromarray(render(scene))).unsqueeze(0)
    rivals = [scene, scene.replace(shape="circle"), scene.replace(color="red"), scene.replace(background="black")]
    sims = model.encode_image(image, normalize=True) @ model.encode_text(tokenizer([caption(s) for s in rivals]), normalize=True).T
    assert int(sims.argmax()) == 0


@_committed("lm", "config.json")
def test_toy_lm_loads_offline_and_keeps_newlines():
    model, tok = models.load_lm("toy")
    text = "a big red circle\n##\nmake it blue\n%%\na big blue circle\nEND"
    assert tok.decode(tok(text).input_ids) == text
    assert model.config.model_type == "gpt2"


@_committed("sd", "model_index.json")
def test_toy_sd_loads_offline_in_fp32():
    pipe = models.load_sd("toy")
    assert pipe.unet.dtype == torch.float32
    assert pipe.tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert pipe.text_encoder.config.max_position_embeddings == 77


def test_missing_toy_folder_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "data_dir", lambda: tmp_path)
    with pytest.raises(UserError, match="ip2p toy pretrain clip"):
        models.load_clip("toy")


def test_unknown_profile_and_role_are_user_errors():
    with pytest.raises(UserError):
        models.load_sd("huge")
    with pytest.raises(UserError):
        models.toy_model_dir("gpt5")


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs the offline hub setting")
def test_full_sd_not_cached_offline_says_what_to_download():
    with pytest.raises(UserError, match="hf download stable-diffusion-v1-5/stable-diffusion-v1-5"):
        models.load_sd("full")


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs the offline hub setting")
def test_full_clip_not_cached_offline_says_what_to_download():
    with pytest.raises(UserError, match="ViT-L-14"):
        models.load_clip("full")


def _finished_sd() -> bool:
    card = MODELS / "sd" / "README.md"
    return card.exists() and "INTERIM" not in card.read_text()


@pytest.mark.skipif(not _finished_sd(), reason="no finished toy SD committed yet")
def test_committed_toy_sd_stays_above_a_quality_floor():
    """12 fixed captions, 20 Euler ancestral steps, CFG 5: far below the card's 200-caption
    numbers (shape/colour/background >= 0.9), so only a broken model or sampler fails."""
    from ip2p_lib.toyworld import attribute_accuracy, caption, sample_scenes
    from ip2p_lib.toyworld.pretrain.sd_assemble import sample

    scenes = sample_scenes(12, seed=2024)
    images = sample(models.load_sd("toy"), [caption(s) for s in scenes], guidance_scale=5.0, steps=20, seed=0)
    acc = attribute_accuracy(scenes, images)
    assert acc["color"] >= 0.75 and acc["background"] >= 0.75 and acc["shape"] >= 0.6, acc


@_committed("clip", "open_clip_config.json")
@torch.no_grad()
def test_committed_clip_text_tower_as_clip_text_model_is_the_same_function():
    from ip2p_lib.toyworld.pretrain.convert import to_hf_text_model
    from ip2p_lib.toyworld.pretrain.tokenizer import build_clip_tokenizer

    model, _, _ = models.load_clip("toy")
    hf = to_hf_text_model(model)
    ids = build_clip_tokenizer()(["a big red circle on a gray background", "there is a little blue square in the top left"],
                                 padding="max_length", max_length=77, return_tensors="pt").input_ids
    x = model.token_embedding(ids) + model.positional_embedding
    expected = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
    assert torch.allclose(hf(input_ids=ids).last_hidden_state, expected, atol=1e-5)
