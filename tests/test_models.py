"""The one model loader: committed toy models load offline through the same calls as the full
models; a missing model, folder or hub id gives one clear UserError that says what to download;
"offline" means what huggingface_hub means by it."""

import re

import numpy as np
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


def card_quality(card: str) -> tuple[int, int, float, dict[str, float]]:
    """(captions, steps, CFG scale, accuracy per attribute) from the toy SD card's Quality section."""
    head = re.search(r"^## Quality \(oracle, (\d+) random captions of held-out scenes, (\d+) Euler ancestral steps, "
                     r"CFG ([\d.]+)\)$", card, re.M)
    assert head, "the toy SD card has no Quality section in the format sd_assemble.finish writes"
    table = card[head.end():].split("\n## ")[0]
    values = {k: float(v) for k, v in re.findall(r"^\| (\w+) \| ([\d.]+) \|$", table, re.M)}
    return int(head.group(1)), int(head.group(2)), float(head.group(3)), values


def binomial_floor(p_card: float, n_card: int, n: int, alpha: float = 1e-3) -> int:
    """The fewest of `n` fresh samples a model as good as its card may get right, failing a
    correct model with probability <= 2 alpha: the card's rate, measured on `n_card` samples, is
    at least p_lo (one-sided Clopper-Pearson bound at level alpha), and a model with rate p_lo
    gets fewer than the returned k right out of n with probability <= alpha."""
    from scipy.stats import beta, binom

    k_card = round(p_card * n_card)
    p_lo = float(beta.ppf(alpha, k_card, n_card - k_card + 1)) if k_card > 0 else 0.0
    return max(k for k in range(n + 1) if binom.cdf(k - 1, n, p_lo) <= alpha)


def test_binomial_floor_is_tight_and_safe():
    from scipy.stats import binom

    floor = binomial_floor(0.995, 200, 24)  # the committed card's shape accuracy
    assert floor == 19  # 79%: a 60%-accurate model passes with probability 0.04
    assert binom.cdf(floor - 1, 24, 0.955) <= 1e-3 < binom.cdf(floor, 24, 0.955)
    assert binomial_floor(1.0, 200, 24) >= floor and binomial_floor(0.6, 200, 24) < 12


N_QUALITY = 24  # fresh captions: ~35 s of sampling on one core


@pytest.mark.skipif(not _finished_sd(), reason="no finished toy SD committed yet")
def test_committed_toy_sd_is_as_good_as_its_card_says():
    """Sample N_QUALITY random captions of held-out scenes the card did not use, with the card's
    sampler settings, and require per attribute the binomial floor derived from the card's own
    accuracy (read from the card, so a retrained model is held to its new numbers)."""
    from ip2p_lib.toyworld import attribute_accuracy, random_caption
    from ip2p_lib.toyworld.pretrain.data import held_out_scenes
    from ip2p_lib.toyworld.pretrain.sd_assemble import sample

    n_card, steps, cfg, quality = card_quality((models.toy_model_dir("sd") / "README.md").read_text())
    scenes = held_out_scenes(N_QUALITY, offset=5)  # the card used offsets 1 and 3
    rng = np.random.default_rng([0, 79])
    images = sample(models.load_sd("toy"), [random_caption(s, rng) for s in scenes], guidance_scale=cfg, steps=steps, seed=0)
    acc = attribute_accuracy(scenes, images)
    for attribute in ("shape", "color", "background"):
        floor = binomial_floor(quality[attribute], n_card, N_QUALITY)
        assert round(acc[attribute] * N_QUALITY) >= floor, (attribute, acc, quality, floor)


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
