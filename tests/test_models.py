"""The one model loader: committed toy models load offline through the same calls as the full
models; a missing model, folder or hub id gives one clear UserError that says what to download;
"offline" means what huggingface_hub means by it."""

import pytest
import torch

from ip2p_lib.infra import models
from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.models import from_pretrained
from tests.fixtures_ip2p import offline  # noqa: F401  (fixture)


def _committed(role):
    folder = models.toy_model_dir(role, check=False)
    return pytest.mark.skipif(not (folder / models.TOY_MODELS[role].marker).exists(), reason=f"toy {role} not committed yet")


@_committed("clip")
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


@_committed("lm")
def test_toy_lm_loads_offline_and_keeps_newlines():
    model, tok = models.load_lm("toy")
    text = "a big red circle\n##\nmake it blue\n%%\na big blue circle\nEND"
    assert tok.decode(tok(text).input_ids) == text
    assert model.config.model_type == "gpt2"


@_committed("sd")
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
    with pytest.raises(UserError, match="toy, smoke, full"):
        models.load_sd("huge")
    with pytest.raises(UserError, match="sd, vae, clip, lm, ip2p"):
        models.toy_model_dir("gpt5")


def test_every_toy_folder_is_named_in_one_place(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "data_dir", lambda: tmp_path)
    assert models.toy_model_dir("vae", check=False) == tmp_path / "toy" / "models" / "sd" / "vae"
    assert models.toy_model_dir("ip2p", check=False) == tmp_path / "toy" / "models" / "ip2p"
    with pytest.raises(UserError, match="notebook 05_training"):  # the editor's toy model is made by training
        models.toy_model_dir("ip2p")
    (tmp_path / "toy" / "models" / "ip2p").mkdir(parents=True)
    (tmp_path / "toy" / "models" / "ip2p" / "model_index.json").write_text("{}")
    assert models.toy_model_dir("ip2p") == tmp_path / "toy" / "models" / "ip2p"


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("On", True),
    ("0", False), ("false", False), ("no", False), ("off", False), ("", False), (None, False),
])
def test_offline_reads_hf_hub_offline_as_huggingface_hub_does(monkeypatch, value, expected):
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if value is None:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    else:
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert models.is_offline() is expected
    where = "offline mode" if expected else "could not be loaded from the hub"
    assert where in str(models.hub_error("model", "a/b", OSError("x")))


def test_transformers_offline_counts_only_when_hf_hub_offline_is_unset(monkeypatch):
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert models.is_offline()
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert not models.is_offline()


class _Loader:
    @classmethod
    def from_pretrained(cls, name, **kwargs):
        return name


def test_uncached_hub_id_offline_names_the_download_command(offline):  # noqa: F811
    from diffusers import StableDiffusionInstructPix2PixPipeline

    name = "ip2p-tests-nobody/never-uploaded-model-4f2a"
    with pytest.raises(UserError) as info:
        from_pretrained(StableDiffusionInstructPix2PixPipeline, name, what="InstructPix2Pix model")
    msg = str(info.value)
    assert name in msg and f"hf download {name}" in msg and "offline mode" in msg and "\n" not in msg


def test_bad_names_and_folders(tmp_path):
    with pytest.raises(UserError, match="no model folder"):
        from_pretrained(_Loader, str(tmp_path / "missing") + "/")
    with pytest.raises(UserError, match="valid hub id"):
        from_pretrained(_Loader, "not a valid id!")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="model_index.json"):
        from_pretrained(_Loader, str(tmp_path / "empty"), required_file="model_index.json")
    assert from_pretrained(_Loader, str(tmp_path / "empty")) == str(tmp_path / "empty")


def test_a_folder_without_a_language_model_is_a_user_error(tmp_path):
    from ip2p_lib.text.hf_backend import load_causal_lm

    with pytest.raises(UserError, match="no config.json"):
        load_causal_lm(tmp_path)


@pytest.mark.skipif(not models.is_offline(), reason="needs the offline hub setting")
def test_full_sd_not_cached_offline_says_what_to_download():
    with pytest.raises(UserError, match="hf download stable-diffusion-v1-5/stable-diffusion-v1-5"):
        models.load_sd("full")


@pytest.mark.skipif(not models.is_offline(), reason="needs the offline hub setting")
def test_full_clip_not_cached_offline_says_what_to_download():
    with pytest.raises(UserError, match="ViT-L-14"):
        models.load_clip("full")


def _finished_sd() -> bool:
    card = models.toy_model_dir("sd", check=False) / "README.md"
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


@_committed("clip")
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
