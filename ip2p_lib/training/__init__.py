"""§3.2 Training InstructPix2Pix.

- `objective`: the loss of one batch (the authors' objective: unscaled image latent, sampled
  and scaled target, conditioning dropout with CLIP("") as the null text).
- `evaluate`: a trained model on held-out scenes and wordings, judged by the world's oracle, next to
  the no-edit, oracle-target and SDEdit baselines (`benchmarks/ip2p_quality.py` runs it).
"""

from ip2p_lib.training.objective import (
    NullConditioning,
    apply_conditioning_dropout,
    null_text_embedding,
    training_loss,
)

__all__ = ["NullConditioning", "apply_conditioning_dropout", "null_text_embedding", "training_loss"]
