"""A toy pretraining run killed with SIGKILL, twice, and started again ends with the weights, the
EMA and the losses of the run that was never interrupted, bit for bit.

The run is toy SD's UNet (the one pretrained model with an EMA) at its test size, on the
committed VAE and text encoder. Each kill is real: the run goes on in a forked child, which
sends itself SIGKILL at the chosen moment, so nothing after that point runs (no `finally`, no
flush): once in the middle of a step, once after a checkpoint folder is written but before it
is renamed into place.
"""

import os
import signal
import traceback

import pytest
import torch

from ip2p_lib.infra.trainloop import checkpoints
from tests.kill_and_resume import dying_at_call, sigkill
from tests.pretrain_tiny import tiny_sd

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
STEPS = 5


@pytest.fixture(scope="module")
def parts():
    from ip2p_lib.toyworld.pretrain.sd_assemble import frozen_parts

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the child inherits it: both sides compute with the same thread count
    yield frozen_parts()
    torch.set_num_threads(before)


def _train(parts, run_dir):
    from ip2p_lib.toyworld.pretrain.sd import train_unet

    return train_unet(tiny_sd(steps=STEPS), *parts, run_dir, progress=False, checkpoint_every_s=0)


def _die_in_child(run) -> None:
    """`run()` in a forked child that must end by SIGKILL."""
    pid = os.fork()
    if pid == 0:
        try:
            run()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(3)  # not killed: the parent's assertion says so
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the run ended before it was killed"


def _kill_in_step(parts, run_dir, step: int) -> None:
    """Train, dying while drawing the batch of step `step` (0-based)."""
    from ip2p_lib.toyworld.pretrain import sd

    def run():
        sd.captioned_batch = dying_at_call(sd.captioned_batch, step + 1, sigkill)  # in the child only
        _train(parts, run_dir)

    _die_in_child(run)


def _kill_before_rename(parts, run_dir, step: int) -> None:
    """Train, dying once `checkpoint-<step>.tmp` is complete but not yet renamed."""
    from accelerate import Accelerator

    real = Accelerator.save_state

    def dying(self, output_dir, **kwargs):
        out = real(self, output_dir, **kwargs)
        if output_dir.endswith(f"checkpoint-{step}.tmp"):
            sigkill()
        return out

    def run():
        Accelerator.save_state = dying  # in the child only
        _train(parts, run_dir)

    _die_in_child(run)


def test_sigkilled_unet_run_resumes_to_the_same_bits(parts, tmp_path):
    unet, ema, state = _train(parts, tmp_path / "reference")
    assert not list(unet.buffers())  # EMAModel averages parameters: here they are all the weights
    run_dir = tmp_path / "killed"
    _kill_in_step(parts, run_dir, 2)
    assert [s for s, _ in checkpoints(run_dir)] == [2]
    _kill_before_rename(parts, run_dir, 3)
    assert [s for s, _ in checkpoints(run_dir)] == [2] and (run_dir / "checkpoint-3.tmp").is_dir()
    resumed, resumed_ema, resumed_state = _train(parts, run_dir)  # the same call again, in this process
    assert resumed_state.step == STEPS and resumed_state.losses == state.losses
    for a, b in zip([*unet.parameters(), *ema.shadow_params], [*resumed.parameters(), *resumed_ema.shadow_params]):
        assert torch.equal(a, b)
    assert [p.name for p in run_dir.glob("checkpoint-*")] == [f"checkpoint-{STEPS}"]


def test_eval_only_judges_the_ema_weights_of_the_last_checkpoint(parts, tmp_path, monkeypatch):
    from ip2p_lib.toyworld.pretrain import sd, sd_assemble

    unet, ema, state = _train(parts, tmp_path)
    ema.copy_to(unet.parameters())
    judged = {}

    def finish(cfg, unet, vae, text_encoder, tokenizer, state, out, threads, interim=False):  # no sampling here
        judged.update(unet=unet, state=state, interim=interim)

    monkeypatch.setattr(sd_assemble, "finish", finish)
    sd.evaluate_checkpoint(tiny_sd(steps=2 * STEPS), tmp_path, out=None, threads=1)
    assert judged["state"].step == STEPS and judged["interim"]  # the run was to go on to 2 * STEPS
    for a, b in zip(unet.parameters(), judged["unet"].parameters()):
        assert torch.equal(a, b)
