"""The toy VAE trainer: a tiny run lowers its loss, resumes exactly, and shapes are SD's (4x down)."""

import numpy as np
import pytest
import torch

from ip2p_lib.toyworld.pretrain import common
from ip2p_lib.toyworld.pretrain import vae as vae_module
from ip2p_lib.toyworld.pretrain.data import scene_batch
from ip2p_lib.toyworld.pretrain.vae import build_vae, evaluate_vae, train_vae, vae_loss
from tests.kill_and_resume import Killed, dying_at_call
from tests.pretrain_tiny import tiny_vae


@torch.no_grad()
def _loss_on_fixed_batch(vae):
    _, x = scene_batch(np.random.default_rng(123), 8)  # batches differ a lot (white vs black): fix one
    return float(vae_loss(vae, x, 0.0))


def test_tiny_vae_trains_and_resumes_exactly(tmp_path, monkeypatch):
    common.seed_everything(tiny_vae().seed)
    before = _loss_on_fixed_batch(build_vae(tiny_vae()))  # the same initialisation the run starts from
    vae, state = train_vae(tiny_vae(steps=4), tmp_path / "full", progress=False)
    assert _loss_on_fixed_batch(vae) < before
    # the same run, killed while drawing the batch of step 2 (it checkpoints after every step) ...
    real = vae_module.scene_batch
    monkeypatch.setattr(vae_module, "scene_batch", dying_at_call(real, 3))
    with pytest.raises(Killed):
        train_vae(tiny_vae(steps=4), tmp_path / "killed", progress=False, checkpoint_every_s=0)
    monkeypatch.setattr(vae_module, "scene_batch", real)
    # ... and restarted with the same command: it ends where the uninterrupted run ended
    resumed, state2 = train_vae(tiny_vae(steps=4), tmp_path / "killed", progress=False)
    assert state2.step == 4 and state2.losses == state.losses
    for a, b in zip(vae.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_default_vae_maps_64x64x3_to_16x16x4():
    from tests.pretrain_tiny import VAEConfig

    vae = build_vae(VAEConfig())
    z = vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 16, 16)


def test_evaluate_reports_psnr_oracle_and_scaling(tmp_path):
    vae, _ = train_vae(tiny_vae(steps=2), tmp_path, progress=False)
    m = evaluate_vae(vae, n=8, batch=8)
    assert {"psnr_db", "oracle_shape", "oracle_color", "oracle_background", "scaling_factor"} <= set(m)
    assert m["scaling_factor"] > 0
