"""Throughput of triple generation with the hf back end, against plain `generate`.

Times `HFBackend.complete` (the paper's sampling: OpenAI frequency penalty as a logits
processor, per-row stop at "\\nEND") against transformers' own sampling with
`repetition_penalty=1.0` and `stop_strings` on the same prompts, and prints triples per
second for both and their ratio (the cost of doing the paper's sampling exactly).

    python benchmarks/text_throughput.py --model data/toy/models/lm --n 256
"""

from __future__ import annotations

import argparse
import time

import torch

from ip2p_lib.text.backends import SamplingSettings
from ip2p_lib.text.caption_lm import toy_lm_path, world_captions
from ip2p_lib.text.format import STOP, make_prompt
from ip2p_lib.text.hf_backend import HFBackend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(toy_lm_path()), help="a (fine-tuned) causal LM folder")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backend = HFBackend(args.model, batch_size=args.batch_size)
    prompts = [make_prompt(c) for c in world_captions(args.n, seed=7)]
    settings = SamplingSettings()
    backend.complete(prompts[: args.batch_size], settings)  # warm-up

    start = time.perf_counter()
    backend.complete(prompts, settings)
    ours = time.perf_counter() - start

    model, tok = backend.model, backend.tokenizer
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(prompts), args.batch_size):
            enc = tok(prompts[i:i + args.batch_size], return_tensors="pt", padding=True).to(model.device)
            room = model.config.n_positions - enc["input_ids"].shape[1]
            model.generate(**enc, do_sample=True, temperature=0.7, top_p=1.0, top_k=0, max_new_tokens=min(256, room),
                           stop_strings=[STOP], tokenizer=tok, pad_token_id=tok.pad_token_id)
    plain = time.perf_counter() - start
    print(f"ours  (frequency penalty + stop at END): {args.n / ours:.1f} completions/s")
    print(f"plain (transformers stop_strings only):  {args.n / plain:.1f} completions/s")
    print(f"ratio ours/plain time: {ours / plain:.2f}")


if __name__ == "__main__":
    main()
