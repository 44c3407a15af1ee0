"""The hf back end on a tiny GPT-2 made here: loss mask, frequency penalty, stopping, fine-tuning."""

import math

import numpy as np
import pytest
import torch

from ip2p_lib.text.backends import SamplingSettings
from ip2p_lib.text.caption_lm import make_caption_lm
from ip2p_lib.text.format import make_completion, make_prompt
from ip2p_lib.text.hf_backend import (
    FrequencyPenaltyLogitsProcessor,
    HFBackend,
    StopOnText,
    collate,
    encode_example,
    finetune_hf,
    load_causal_lm,
)

torch.set_num_threads(1)  # tiny matrices: threads only add overhead on a shared CPU

TRIPLE = {"input": "a big red circle on a gray background", "edit": "make it blue",
          "output": "a big blue circle on a gray background"}


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """An untrained 1-layer GPT-2 with a byte-level BPE trained on 300 world captions."""
    path = tmp_path_factory.mktemp("tiny_lm")
    make_caption_lm(path, n_captions=300, steps=0, n_layer=1, n_embd=32, n_head=2, n_positions=96, vocab_size=300)
    return path


@pytest.fixture(scope="module")
def memorised_lm(tiny_lm, tmp_path_factory):
    """The tiny LM fine-tuned on one triple until it writes that completion greedily."""
    out = tmp_path_factory.mktemp("memorised")
    result = finetune_hf(tiny_lm, [TRIPLE] * 4, out, epochs=120, batch_size=4, lr=1e-2, warmup=0.0, progress=False)
    return out, result


def test_labels_cover_the_completion_only(tiny_lm):
    _, tok = load_causal_lm(tiny_lm, "cpu")
    ids, labels = encode_example(tok, TRIPLE)
    n_prompt = len(tok(make_prompt(TRIPLE["input"]), add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(ids) == make_prompt(TRIPLE["input"]) + make_completion(TRIPLE["edit"], TRIPLE["output"])
    assert tok.decode(labels[n_prompt:]) == make_completion(TRIPLE["edit"], TRIPLE["output"])


def test_model_loss_is_the_mean_cross_entropy_of_completion_tokens(tiny_lm):
    model, tok = load_causal_lm(tiny_lm, "cpu")
    short = {"input": "a small red square against white", "edit": "make it big", "output": "a big red square against white"}
    batch = collate([encode_example(tok, TRIPLE), encode_example(tok, short)], tok.pad_token_id)
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()  # padding carries no loss
    with torch.no_grad():
        loss = model(**batch).loss
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    terms = []
    for row in range(2):
        for t in range(1, batch["input_ids"].shape[1]):
            target = int(batch["labels"][row, t])
            if target != -100:  # token t is predicted from position t - 1
                terms.append(-float(logp[row, t - 1, target]))
    assert float(loss) == pytest.approx(np.mean(terms), rel=1e-4)


def test_frequency_penalty_follows_openai_definition():
    vocab, prompt_len = 6, 3
    ids = torch.tensor([[4, 4, 4, 3, 3, 5, 3], [1, 2, 0, 0, 0, 0, 0]])  # 3 prompt tokens, 4 generated
    scores = torch.zeros(2, vocab)
    out = FrequencyPenaltyLogitsProcessor(0.1, 0.5, prompt_len)(ids, scores.clone())
    # row 0 generated [3, 3, 5, 3]: token 3 three times, token 5 once; token 4 only in the prompt: no penalty
    expected0 = torch.tensor([0, 0, 0, -(0.1 * 3 + 0.5), 0, -(0.1 * 1 + 0.5)])
    expected1 = torch.tensor([-(0.1 * 4 + 0.5), 0, 0, 0, 0, 0])
    assert torch.allclose(out[0], expected0) and torch.allclose(out[1], expected1)
    # nothing generated yet: unchanged
    assert torch.equal(FrequencyPenaltyLogitsProcessor(0.1, 0.5, 7)(ids, scores.clone()), scores)


def test_frequency_penalty_is_not_repetition_penalty():
    from transformers import RepetitionPenaltyLogitsProcessor

    ids = torch.tensor([[1, 2, 2, 2]])  # prompt [1], generated [2, 2, 2]
    scores = torch.tensor([[1.0, 2.0, 2.0]])
    ours = FrequencyPenaltyLogitsProcessor(0.1, 0.0, 1)(ids, scores.clone())
    theirs = RepetitionPenaltyLogitsProcessor(1.1)(ids, scores.clone())
    assert ours[0, 1] == 2.0 and theirs[0, 1] < 2.0  # repetition penalty also hits prompt tokens
    assert ours[0, 2] == pytest.approx(2.0 - 0.3)  # ours grows with the count (3 times)


def test_stop_on_text_is_per_row(tiny_lm):
    _, tok = load_causal_lm(tiny_lm, "cpu")
    rows = [tok("x\n##\nmake it blue\nEND", add_special_tokens=False)["input_ids"],
            tok("x\n##\nmake it blue\nEN", add_special_tokens=False)["input_ids"]]
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    done = StopOnText("\nEND", tok, prompt_length=2)(ids, None)
    assert done.tolist() == [True, False]


def test_finetuning_learns_the_format_and_generation_stops_at_end(memorised_lm):
    path, result = memorised_lm
    assert result.losses[-1] < 0.1 * result.losses[0]
    backend = HFBackend(path, device="cpu")
    greedy = SamplingSettings(temperature=0.0, frequency_penalty=0.0)
    out = backend.complete([make_prompt(TRIPLE["input"])] * 2, greedy)
    assert out == [TRIPLE["edit"] + "\n%%\n" + TRIPLE["output"]] * 2  # "\nEND" cut off
    # sampling with the paper's settings runs, and respects max_tokens when it cannot stop
    short = backend.complete([make_prompt(TRIPLE["input"])], SamplingSettings(max_tokens=3))
    assert len(backend.tokenizer(short[0], add_special_tokens=False)["input_ids"]) <= 3


def test_max_tokens_is_clamped_to_the_context(tiny_lm):
    backend = HFBackend(tiny_lm, device="cpu")
    out = backend.complete([make_prompt(TRIPLE["input"])], SamplingSettings(max_tokens=10_000))
    assert isinstance(out[0], str)  # no position-embedding overflow


def test_finetune_defaults_to_one_epoch(tiny_lm, tmp_path):
    triples = [TRIPLE] * 20
    result = finetune_hf(tiny_lm, triples, tmp_path / "ft", batch_size=8, progress=False)
    assert len(result.losses) == math.ceil(20 / 8) and result.settings["epochs"] == 1.0
    assert (tmp_path / "ft" / "finetune.json").exists() and (tmp_path / "ft" / "config.json").exists()


def test_cli_generates_and_resumes_with_a_local_model(memorised_lm, tmp_path, capsys):
    from ip2p_lib.cli import main
    from ip2p_lib.text.generate import read_done

    captions = tmp_path / "captions.txt"
    variants = [f"a {size} red circle on a {bg} background" for size in ("big", "large") for bg in ("gray", "white", "black")]
    captions.write_text("\n".join(variants))
    out = tmp_path / "triples.jsonl"
    args = ["text", "generate", "--backend", "hf", "--model", str(memorised_lm[0]), "--captions", str(captions),
            "--out", str(out), "--temperature", "0"]
    assert main(args + ["--n", "3"]) == 0
    assert main(args + ["--n", "4"]) == 0
    records = read_done(out)
    assert len(records) == 4 and len({r["input"] for r in records}) == 4
    assert [r["input"] for r in records] == variants[:4]
    assert "1 new, 3 from before" in capsys.readouterr().out


def test_missing_toy_lm_falls_back_to_a_stand_in_with_a_note(tmp_path, monkeypatch):
    import ip2p_lib.text.caption_lm as caption_lm

    monkeypatch.setattr(caption_lm, "toy_lm_path", lambda: tmp_path / "absent")
    path, note = caption_lm.resolve_toy_lm(tmp_path / "fallback", fallback_steps=2, n_captions=300)
    assert path == tmp_path / "fallback" and "NOTE" in note and "ip2p toy pretrain lm" in note
    model, tok = load_causal_lm(path, "cpu")
    assert model.config.n_layer == 3 and model.config.n_embd == 96  # the toy LM's architecture
    assert tok.decode(tok("a\n##\nb\n%%\nc\nEND")["input_ids"]) == "a\n##\nb\n%%\nc\nEND"  # byte-level: no unknowns


# ---------------------------------------------------------------- per-row seeds, and resuming with a real model


def test_each_row_samples_with_its_own_seed(tiny_lm):
    """A completion depends on its prompt and seed only: not on its batch-mates, their order,
    or the batch size. (Exact equality: a row's logits move with its batch by float rounding,
    ~1e-7, which flips a draw only if it lands that close to a boundary of the sampled token's
    probability interval: ~1e-6 per token, over the 120 draws here.)"""
    from ip2p_lib.text.caption_lm import world_captions

    backend = HFBackend(tiny_lm, device="cpu", batch_size=6)
    prompts = [make_prompt(c) for c in world_captions(6, seed=3)]
    seeds = [101, 7, 55, 3, 900, 12]
    settings = SamplingSettings(max_tokens=20)
    together = backend.complete(prompts, settings, seeds=seeds)
    assert backend.complete(prompts[::-1], settings, seeds=seeds[::-1]) == together[::-1]
    assert [backend.complete([p], settings, seeds=[s])[0] for p, s in zip(prompts, seeds)] == together
    assert backend.complete(prompts, settings, seeds=[s + 1 for s in seeds]) != together  # the seed matters
    backend.batch_size = 4  # chunks of 4 and 2
    assert backend.complete(prompts, settings, seeds=seeds) == together


def test_seeded_row_sampler_draws_each_token_with_its_probability():
    """4000 rows with the same scores and seeds 0..3999: each token is drawn in proportion to
    softmax(scores), within 5 standard deviations of a binomial count (the seeds are fixed, so
    the test is deterministic; an off-by-one token, unscaled or shared uniforms fail it); a
    token at -inf (top-p filtered) never; a row's next step uses its next uniform."""
    from ip2p_lib.text.hf_backend import SeededRowSampler

    n, prompt_length = 4000, 3
    probs = torch.tensor([0.05, 0.1, 0.15, 0.2, 0.5, 0.0])
    scores = torch.log(probs).expand(n, -1).clone()  # log 0 = -inf
    sampler = SeededRowSampler([torch.Generator().manual_seed(s) for s in range(n)], steps=2, prompt_length=prompt_length)
    draws = []
    for step in range(2):
        out = sampler(torch.zeros(n, prompt_length + step, dtype=torch.long), scores)
        assert ((out == 0).sum(dim=1) == 1).all() and (out[out != 0] == float("-inf")).all()  # one token left per row
        draws.append(out.argmax(dim=1))
        counts = torch.bincount(draws[-1], minlength=6).double()
        expected = n * probs.double()
        assert ((counts - expected).abs() <= 5 * (expected * (1 - probs.double())).sqrt()).all(), counts
        assert counts[5] == 0
    assert (draws[0] != draws[1]).float().mean() > 0.5  # step 2 draws afresh (same-token rate: sum p^2 = 0.33)
    again = SeededRowSampler([torch.Generator().manual_seed(s) for s in range(3)], steps=2, prompt_length=prompt_length)
    assert torch.equal(again(torch.zeros(3, prompt_length, dtype=torch.long), scores[:3]).argmax(dim=1), draws[0][:3])


def test_a_killed_hf_run_writes_what_an_uninterrupted_run_writes(memorised_lm, tmp_path):
    """The real model and sampler, killed mid-batch and mid-line, resumed: the same file."""
    from ip2p_lib.text.generate import generate_triples, toy_captions
    from tests.kill_and_resume import generate_with_kills

    backend = HFBackend(memorised_lm[0], device="cpu", batch_size=8)
    captions = [c.caption for c, _ in zip(toy_captions(seed=3), range(80))]
    options = dict(n=12, settings=SamplingSettings(temperature=1.0, max_tokens=40), retries=2, batch_size=8, seed=3)
    reference, out = tmp_path / "reference.jsonl", tmp_path / "killed.jsonl"
    ref = generate_triples(backend, captions, reference, progress=False, **options)
    assert ref.written == 12 and ref.rejected["malformed"] > 0  # sampling made retries to reproduce
    generate_with_kills(backend, captions, out, [("record", 2), ("request", 2), ("record", 3)], **options)
    assert out.read_bytes() == reference.read_bytes()
