"""§3.2 Training InstructPix2Pix.

- `objective`: the loss of one batch (the authors' objective: unscaled image latent, sampled
  and scaled target, conditioning dropout with CLIP("") as the null text).
- the loop itself is `ip2p_lib.infra.trainloop` (shared with the toy models' pretraining, which comes earlier).
- `trainer`: InstructPix2Pix from an SD or IP2P init on an edit dataset; `cli`: `ip2p train`.
- `recipes`: the paper's and the toy world's numbers.
- `evaluate`: a trained model on held-out scenes and wordings, judged by the world's oracle, next to
  the no-edit, oracle-target and SDEdit baselines (`benchmarks/ip2p_quality.py` runs it).
- `cost`: the paper's training compute, counted in FLOPs.

Import the modules themselves (`from ip2p_lib.training.objective import training_loss`): the
package imports nothing, so `ip2p train --help` does not load torch.
"""
