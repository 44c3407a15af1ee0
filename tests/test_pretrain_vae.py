"""The toy VAE trainer: a tiny run lowers its loss, resumes exactly, and shapes are SD's (4x down)."""

import torch

from ip2p_lib.toyworld.pretrain.vae import build_vae, evaluate_vae, train_vae
from tests.pretrain_tiny import tiny_vae


def test_tiny_vae_trains_and_resumes_exactly(tmp_path):
    vae, state = train_vae(tiny_vae(steps=8), tmp_path / "full", progress=False)
    assert sum(state.losses[-3:]) < sum(state.losses[:3])
    train_vae(tiny_vae(steps=5), tmp_path / "split", progress=False)
    resumed, state2 = train_vae(tiny_vae(steps=8), tmp_path / "split", progress=False)
    assert state2.step == 8
    for a, b in zip(vae.parameters(), resumed.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


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
