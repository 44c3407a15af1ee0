"""The shared training loop: a killed run resumes exactly where the uninterrupted run would be."""

import pytest
import torch

from ip2p_lib.infra.errors import UserError
from ip2p_lib.toyworld.pretrain import common


class Killed(Exception):
    pass


def _run(run_dir, steps, lr=0.1, seed=0, kill_at=None):
    common.seed_everything(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, common.warmup_cosine(2, steps, 0.1))
    ema = common.EMA(model, 0.9)
    target = torch.tensor([[1.0], [-2.0], [0.5]])

    def step_fn(step):
        if step == kill_at:
            raise Killed
        _, gen = common.step_rng(seed, step)
        x = torch.randn(16, 3, generator=gen)
        return ((model(x) - x @ target) ** 2).mean()

    state = common.train(step_fn, model, opt, sched, steps, run_dir, {"lr": lr, "steps": steps, "seed": seed},
                         ema=ema, progress=False, checkpoint_every_s=0)
    return model, ema, state


def test_resume_after_interruption_equals_the_uninterrupted_run(tmp_path):
    full_model, full_ema, full_state = _run(tmp_path / "a", 10)
    with pytest.raises(Killed):  # checkpoints every step, killed in the middle of step 4
        _run(tmp_path / "b", 10, kill_at=4)
    model, ema, state = _run(tmp_path / "b", 10)
    assert state.step == 10 and len(state.losses) == 10
    assert state.losses == pytest.approx(full_state.losses, rel=1e-6)
    assert torch.allclose(model.weight, full_model.weight)
    assert torch.allclose(ema.shadow["weight"], full_ema.shadow["weight"])
    assert full_state.losses[-1] < full_state.losses[0]


def test_rerunning_a_finished_run_trains_nothing_more(tmp_path):
    _, _, first = _run(tmp_path, 5)
    _, _, again = _run(tmp_path, 5)
    assert again.step == 5 and again.losses == first.losses


def test_a_different_recipe_in_the_same_folder_is_refused(tmp_path):
    _run(tmp_path, 3, lr=0.1)
    with pytest.raises(UserError, match="different configuration"):
        _run(tmp_path, 3, lr=0.2)


def test_warmup_cosine_schedule():
    f = common.warmup_cosine(10, 110, 0.1)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.55) and f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)


def test_set_overrides_a_config_field_with_its_type_and_refuses_unknown_fields():
    from ip2p_lib.toyworld.pretrain.cli import apply_override
    from ip2p_lib.toyworld.pretrain.sd import SDConfig

    cfg = SDConfig()
    apply_override(cfg, "min_snr_gamma=0")
    apply_override(cfg, "block_out_channels=16,32")
    apply_override(cfg, "steps=12")
    assert (cfg.min_snr_gamma, cfg.block_out_channels, cfg.steps) == (0.0, (16, 32), 12)
    assert isinstance(cfg.steps, int)
    for bad in ("nope=1", "steps", "steps=twelve"):
        with pytest.raises(UserError):
            apply_override(cfg, bad)
