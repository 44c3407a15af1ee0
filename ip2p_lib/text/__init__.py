"""§3.1.1 of the paper: a fine-tuned language model writes an instruction and an edited caption.

The authors wrote 700 (caption, instruction, edited caption) triples by hand, fine-tuned GPT-3
on them for one epoch, and then let it write 454,445 more from LAION captions. The same steps
here, at two scales:

- `seed.py`: the miniature world's 700 seed triples, and readers of the authors' files;
- `format.py`: the authors' exact fine-tuning format and the paper's filters;
- `backends.py`: one interface (`TextBackend`) and the sampling settings of the paper;
- `hf_backend.py`: any local transformers causal LM (the toy LM on a CPU);
- `openai_backend.py`: OpenAI's fine-tuning jobs API (or any OpenAI-compatible server);
- `generate.py`: generation at scale with the filters, into a resumable JSONL file;
- `evaluate.py`: the miniature world judges each generated triple exactly;
- `caption_lm.py`: a small caption-pretrained GPT-2 made on the fly (tests, fallback);
- `cli.py`: `ip2p text seed | finetune | generate`.
"""
