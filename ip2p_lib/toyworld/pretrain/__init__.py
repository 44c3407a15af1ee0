"""Pretraining the miniature world's stand-ins for the paper's pretrained models.

The paper starts from GPT-3, Stable Diffusion 1.5 and CLIP ViT-L/14. The miniature world
trains its own, small enough for a 2-core CPU, with the same libraries and file formats:

- `tokenizer.py`: CLIP's real BPE tokenizer as transformers' `CLIPTokenizer`, rebuilt offline;
- `vae.py`: an `AutoencoderKL` for 64x64 renders (toy SD's `vae`);
- `clip.py`: an open_clip model with a small config (toy CLIP); its text tower becomes
  toy SD's `text_encoder`;
- `sd.py`: a `UNet2DConditionModel` trained on VAE latents, assembled into a diffusers folder;
- `lm.py`: a small GPT-2 with its own tokenizer (the stand-in for GPT-3 before fine-tuning).

Every trainer is seeded, and runs in the project's one training loop (`infra.trainloop.TrainLoop`,
through `common.py`): it checkpoints periodically and resumes after a kill to the same weights.
The command is `ip2p toy pretrain {clip,vae,sd,lm,all}` (`cli.py`).
"""
