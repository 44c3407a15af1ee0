"""SD's text conditioning, written once: the same numbers as diffusers' pipeline and the editor."""

import torch

from ip2p_lib.infra.prompts import encode_prompts
from tests.fixtures_ip2p import tiny_ip2p_dir  # noqa: F401  (fixture)

PROMPTS = ["make the red circle blue", "", "a " * 100]  # the last is longer than 77 tokens: truncated


@torch.no_grad()
def test_same_as_diffusers_encode_prompt_and_the_editor(tiny_ip2p_dir):  # noqa: F811
    from diffusers import StableDiffusionInstructPix2PixPipeline

    from ip2p_lib.editor import InstructPix2PixEditor

    pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(tiny_ip2p_dir, safety_checker=None,
                                                                  requires_safety_checker=False)
    # one prompt at a time, so the float32 sums run in the same order as diffusers' (bit for bit)
    for prompt in PROMPTS:
        ours = encode_prompts(pipe.text_encoder, pipe.tokenizer, [prompt])
        assert ours.shape == (1, pipe.tokenizer.model_max_length, pipe.text_encoder.config.hidden_size)
        torch.testing.assert_close(ours, pipe._encode_prompt(prompt, "cpu", 1, False), rtol=0, atol=0)
    pair = encode_prompts(pipe.text_encoder, pipe.tokenizer, PROMPTS[:2])
    editor = InstructPix2PixEditor.from_pretrained(str(tiny_ip2p_dir))
    torch.testing.assert_close(editor.encode_text(PROMPTS[0]), pair, rtol=0, atol=0)  # [c_T, null text]
    assert not torch.allclose(pair[0], pair[1])
