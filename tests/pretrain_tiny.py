"""Tiny configurations of every stand-in, shared by the pretraining tests (seconds, not minutes)."""

from ip2p_lib.toyworld.pretrain.clip import CLIPConfig
from ip2p_lib.toyworld.pretrain.lm import LMConfig
from ip2p_lib.toyworld.pretrain.sd import SDConfig
from ip2p_lib.toyworld.pretrain.vae import VAEConfig


def tiny_vae(steps: int = 6) -> VAEConfig:
    return VAEConfig(block_out_channels=(8, 16), norm_num_groups=4, steps=steps, batch_size=4, lr=1e-3, warmup=1)


def tiny_clip(steps: int = 8) -> CLIPConfig:
    return CLIPConfig(embed_dim=16, patch_size=16, vision_width=32, vision_layers=1, vision_head_width=16,
                      text_width=16, text_heads=2, text_layers=1, context_length=24, steps=steps, batch_size=8,
                      lr=3e-3, warmup=1)


def tiny_lm(steps: int = 8) -> LMConfig:
    return LMConfig(vocab_size=300, n_embd=32, n_layer=1, n_head=2, n_positions=256, tokenizer_docs=300,
                    steps=steps, batch_size=8, lr=3e-3, warmup=1)


def tiny_sd(steps: int = 10) -> SDConfig:
    return SDConfig(block_out_channels=(16, 32), heads=(2, 2), norm_num_groups=4, steps=steps, batch_size=4,
                    lr=3e-3, warmup=1)
