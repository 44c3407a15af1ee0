"""§3.1.2 Prompt-to-Prompt: attention control through diffusers' processors, and the paired sampler."""

from ip2p_lib.p2p.attention import (
    AttentionCall,
    AttentionStore,
    ControlledAttention,
    Controller,
    ControllerList,
    PairLayout,
    SelfAttentionSharing,
    controlled,
)
from ip2p_lib.p2p.sampler import VARIANTS, PairImages, PairSpec, draw_specs, generate_batch, generate_pairs

__all__ = [
    "VARIANTS", "AttentionCall", "AttentionStore", "ControlledAttention", "Controller", "ControllerList",
    "PairImages", "PairLayout", "PairSpec", "SelfAttentionSharing", "controlled", "draw_specs",
    "generate_batch", "generate_pairs",
]
