"""The toy models' use of the training loop: a run interrupted at any step resumes to the same
bits, a finished run can be lengthened, and a changed recipe or an old-loop folder is refused."""

import pytest
import torch

from ip2p_lib.infra.errors import UserError
from ip2p_lib.toyworld.pretrain import common
from ip2p_lib.infra.trainloop import checkpoints, make_ema, warmup_cosine
from tests.kill_and_resume import Killed


def _run(run_dir, steps, lr=0.1, seed=0, kill_at=None, checkpoint_every_s=0):
    common.seed_everything(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(2, steps, 0.1))
    ema = make_ema(model, 0.9)
    target = torch.tensor([[1.0], [-2.0], [0.5]])

    def step_fn(step):
        if step == kill_at:
            raise Killed
        _, gen = common.step_rng(seed, step)
        x = torch.randn(16, 3, generator=gen)
        return ((model(x) - x @ target) ** 2).mean()

    state = common.train(step_fn, model, opt, sched, steps, run_dir, {"lr": lr, "steps": steps, "seed": seed},
                         ema=ema, progress=False, checkpoint_every_s=checkpoint_every_s)
    return model, ema, state


def _assert_same_run(a, b):
    (model_a, ema_a, state_a), (model_b, ema_b, state_b) = a, b
    assert state_a.step == state_b.step and state_a.losses == state_b.losses
    for p, q in zip([*model_a.parameters(), *ema_a.shadow_params], [*model_b.parameters(), *ema_b.shadow_params]):
        assert torch.equal(p, q)


def test_resume_after_interruption_equals_the_uninterrupted_run(tmp_path):
    full = _run(tmp_path / "a", 10)
    with pytest.raises(Killed):  # checkpoints after every step, killed in the middle of step 4
        _run(tmp_path / "b", 10, kill_at=4)
    assert [step for step, _ in checkpoints(tmp_path / "b")] == [4]
    _assert_same_run(_run(tmp_path / "b", 10), full)
    assert full[2].losses[-1] < full[2].losses[0]
    assert not torch.equal(full[0].weight, full[1].shadow_params[0])  # the EMA is not the weights


def test_rerunning_a_finished_run_trains_nothing_more_and_steps_may_grow(tmp_path):
    _, _, first = _run(tmp_path, 5, checkpoint_every_s=1e9)
    _, _, again = _run(tmp_path, 5)
    assert again.step == 5 and again.losses == first.losses
    _, _, longer = _run(tmp_path, 8)  # only `steps` may change: the schedule stretches from step 5 on
    assert longer.step == 8 and longer.losses[:5] == first.losses


def test_a_different_recipe_in_the_same_folder_is_refused(tmp_path):
    _run(tmp_path, 3, lr=0.1)
    with pytest.raises(UserError, match=r"another configuration \(lr: 0.1 -> 0.2\)"):
        _run(tmp_path, 3, lr=0.2)


def test_a_folder_of_the_old_loop_is_refused(tmp_path):
    (tmp_path / common.OLD_CHECKPOINT).write_bytes(b"old")
    with pytest.raises(UserError, match="old pretraining loop.*new --run-dir"):
        _run(tmp_path, 3)
    assert not checkpoints(tmp_path)


def test_warmup_cosine_schedule():
    f = warmup_cosine(10, 110, 0.1)
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
