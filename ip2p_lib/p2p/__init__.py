"""§3.1.2 Prompt-to-Prompt: attention control through diffusers' processors, the paired sampler, and
Prompt-to-Prompt's own cross-attention edits (importing `cross` registers their sampler variants);
`sweep` measures them with the oracle, `cost` counts what the paper's generation run costs.
Notebook: 02_prompt_to_prompt."""

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
from ip2p_lib.p2p.cross import CrossAttentionRefine, CrossAttentionReplace, refine_mapper, token_alignment, word_mapper
from ip2p_lib.p2p.sampler import VARIANTS, PairImages, PairSpec, draw_specs, generate_batch, generate_pairs

__all__ = [
    "VARIANTS", "AttentionCall", "AttentionStore", "ControlledAttention", "Controller", "ControllerList",
    "CrossAttentionRefine", "CrossAttentionReplace", "PairImages", "PairLayout", "PairSpec", "SelfAttentionSharing",
    "controlled", "draw_specs", "generate_batch", "generate_pairs", "refine_mapper", "token_alignment", "word_mapper",
]
