"""open_clip text tower -> transformers `CLIPTextModel`: toy CLIP's text tower as toy SD's text encoder.

Stable Diffusion conditions its UNet on the last hidden states of CLIP's text tower
(`CLIPTextModel.last_hidden_state`, after the final layer norm). open_clip and transformers
implement the same computation with different parameter names; this maps one onto the other:

    open_clip                               transformers (text_model.)
    token_embedding / positional_embedding  embeddings.token_embedding / embeddings.position_embedding
    transformer.resblocks.i.ln_1, ln_2      encoder.layers.i.layer_norm1, layer_norm2
    ...attn.in_proj_weight (q; k; v)        encoder.layers.i.self_attn.{q,k,v}_proj
    ...attn.out_proj                        encoder.layers.i.self_attn.out_proj
    ...mlp.c_fc, mlp.c_proj                 encoder.layers.i.mlp.fc1, fc2
    ln_final                                final_layer_norm
    text_projection (x @ P)                 text_projection.weight = P^T (WithProjection only)
"""

from __future__ import annotations

from typing import Any

import torch

from ip2p_lib.infra.errors import UserError


def hf_text_config(model: Any) -> Any:
    """The `CLIPTextConfig` matching an open_clip model's text tower."""
    from transformers import CLIPTextConfig

    width = model.token_embedding.weight.shape[1]
    blocks = model.transformer.resblocks
    act = type(blocks[0].mlp.gelu).__name__
    if act not in ("QuickGELU", "GELU"):
        raise UserError(f"cannot convert a text tower with activation {act}")
    return CLIPTextConfig(
        vocab_size=model.token_embedding.weight.shape[0], hidden_size=width,
        intermediate_size=blocks[0].mlp.c_fc.out_features, num_hidden_layers=len(blocks),
        num_attention_heads=blocks[0].attn.num_heads, max_position_embeddings=model.positional_embedding.shape[0],
        hidden_act="quick_gelu" if act == "QuickGELU" else "gelu", layer_norm_eps=blocks[0].ln_1.eps,
        projection_dim=model.text_projection.shape[1], bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )


def text_tower_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """open_clip text-tower parameters under `CLIPTextModelWithProjection` names."""
    out = {
        "text_model.embeddings.token_embedding.weight": model.token_embedding.weight,
        "text_model.embeddings.position_embedding.weight": model.positional_embedding,
        "text_model.final_layer_norm.weight": model.ln_final.weight,
        "text_model.final_layer_norm.bias": model.ln_final.bias,
        "text_projection.weight": model.text_projection.T,
    }
    for i, block in enumerate(model.transformer.resblocks):
        p = f"text_model.encoder.layers.{i}."
        q, k, v = block.attn.in_proj_weight.chunk(3)
        qb, kb, vb = block.attn.in_proj_bias.chunk(3)
        out.update({
            p + "self_attn.q_proj.weight": q, p + "self_attn.q_proj.bias": qb,
            p + "self_attn.k_proj.weight": k, p + "self_attn.k_proj.bias": kb,
            p + "self_attn.v_proj.weight": v, p + "self_attn.v_proj.bias": vb,
            p + "self_attn.out_proj.weight": block.attn.out_proj.weight, p + "self_attn.out_proj.bias": block.attn.out_proj.bias,
            p + "layer_norm1.weight": block.ln_1.weight, p + "layer_norm1.bias": block.ln_1.bias,
            p + "layer_norm2.weight": block.ln_2.weight, p + "layer_norm2.bias": block.ln_2.bias,
            p + "mlp.fc1.weight": block.mlp.c_fc.weight, p + "mlp.fc1.bias": block.mlp.c_fc.bias,
            p + "mlp.fc2.weight": block.mlp.c_proj.weight, p + "mlp.fc2.bias": block.mlp.c_proj.bias,
        })
    return {k: v.detach().clone().float().contiguous() for k, v in out.items()}


def to_hf_text_model(model: Any, with_projection: bool = False) -> Any:
    """A transformers `CLIPTextModel` (or `...WithProjection`) computing open_clip's text tower."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    config = hf_text_config(model)
    state = text_tower_state_dict(model)
    if with_projection:
        hf = CLIPTextModelWithProjection(config)
    else:
        hf = CLIPTextModel(config)
        state.pop("text_projection.weight")
    if not any(k.startswith("text_model.") for k in hf.state_dict()):  # transformers 5's CLIPTextModel
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise RuntimeError(f"text tower conversion: missing {missing}, unexpected {unexpected}")
    return hf.eval()
