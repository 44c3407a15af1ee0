"""Prompt-to-Prompt pairs (§3.1.2): the attention hooks reach every layer, sharing does what the
authors' code does, and both images of a pair see the same start latent and the same noise.

The failure these tests guard against is silent: when a hook matches no attention layer, the
sampler still runs and "edited" pairs are plain independent samples (google/prompt-to-prompt
#72). So every test here checks an effect that a no-op hook cannot produce: call counts per
layer and step, image 1 taking image 0's attention, and pairs that become more alike with p.
"""

import math

import numpy as np
import pytest
import torch

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
from ip2p_lib.p2p.sampler import PairSpec, denoised, generate_batch, generate_pairs
from ip2p_lib.toyworld import apply, caption, judge, sample_edit, sample_scenes

CAPTION_0 = "a large red circle on a gray background"
CAPTION_1 = "a large blue circle on a gray background"


@pytest.fixture(scope="module")
def pipe():
    from ip2p_lib.infra.models import load_sd

    p = load_sd("toy")
    p.set_progress_bar_config(disable=True)
    return p


class Recorder(Controller):
    """Changes nothing; remembers every call it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[AttentionCall] = []

    def edit_qkv(self, q, k, v, call):
        self.seen.append(call)
        return q, k, v


class ProbsSharing(SelfAttentionSharing):
    """Self-attention sharing through materialised probabilities (the authors' route)."""

    def needs_probs(self, call):
        return True


def _spec(seed: int, p: float = 0.5, c0: str = CAPTION_0, c1: str = CAPTION_1, cfg: float = 7.5,
          steps: int = 4, variant: str = "self") -> PairSpec:
    return PairSpec(c0, c1, seed, cfg, p, steps, variant)


def _levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


# ---------------------------------------------------------------- the hook reaches every layer


def test_controller_is_called_on_every_attention_layer_at_every_step(pipe):
    unet = pipe.unet
    names = list(unet.attn_processors)
    before = dict(unet.attn_processors)
    steps = 3
    rec = Recorder()
    out = generate_batch(pipe, [_spec(1, steps=steps), _spec(2, steps=steps)], controller=rec)
    assert len(names) == 20  # toy SD: 10 transformer blocks, each with attn1 (self) and attn2 (cross)
    assert dict(rec.calls) == {step: len(names) for step in range(steps)}
    assert out.attention_calls == steps * len(names)
    for step in range(steps):
        calls = [c for c in rec.seen if c.step == step]
        assert sorted(c.layer for c in calls) == sorted(names)  # each layer exactly once per step
        assert all(c.is_cross == c.layer.endswith("attn2.processor") for c in calls)
        assert {c.resolution for c in calls} == {16, 8, 4}  # toy SD's latent grid is 16 x 16
    after = unet.attn_processors
    assert all(after[n] is before[n] for n in names)  # the original processor objects are back


def test_controlled_restores_the_processors_after_an_exception(pipe):
    unet = pipe.unet
    before = dict(unet.attn_processors)
    with pytest.raises(KeyError, match="boom"):  # the body's exception, not "never called"
        with controlled(unet, Controller()):
            assert all(isinstance(p, ControlledAttention) for p in unet.attn_processors.values())
            raise KeyError("boom")
    after = unet.attn_processors
    assert all(after[n] is before[n] for n in before)


def test_controlled_fails_loudly_when_the_hook_is_never_reached(pipe):
    unet = pipe.unet
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="never called"):
        with controlled(unet, Controller()):
            pass
    # google/prompt-to-prompt #72 in miniature: something replaces our processors, the UNet runs
    # through attention that no controller sees, and that must not pass silently.
    from diffusers.models.attention_processor import AttnProcessor2_0

    x = torch.zeros(1, 4, 16, 16)
    cond = torch.zeros(1, pipe.tokenizer.model_max_length, unet.config.cross_attention_dim)
    with pytest.raises(RuntimeError, match="never called"):
        with controlled(unet, Controller()):
            unet.set_attn_processor(AttnProcessor2_0())
            with torch.no_grad():
                unet(x, 999, encoder_hidden_states=cond)
    assert all(type(p) is type(before[n]) for n, p in unet.attn_processors.items())
    unet.set_attn_processor(dict(before))
    # a controller reused after a run that did reach it: the second block's bypass still fails
    reused = Controller()
    with controlled(unet, reused), torch.no_grad():
        unet(x, 999, encoder_hidden_states=cond)
    with pytest.raises(RuntimeError, match="never called"):
        with controlled(unet, reused):
            unet.set_attn_processor(AttnProcessor2_0())
            with torch.no_grad():
                unet(x, 999, encoder_hidden_states=cond)
    unet.set_attn_processor(dict(before))
    with controlled(unet, Controller(), expect_calls=False):  # opting out is allowed
        pass

    class NoAttention:
        attn_processors: dict = {}

    with pytest.raises(ValueError, match="no attention layers"):
        with controlled(NoAttention(), Controller()):
            pass


def test_controlled_processor_computes_what_diffusers_computes(pipe):
    """Our processor, on both of its routes, equals diffusers' own attention on a UNet call."""
    unet = pipe.unet
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 16, 16, generator=gen)
    from ip2p_lib.infra.prompts import encode_prompts

    cond = encode_prompts(pipe.text_encoder, pipe.tokenizer, [CAPTION_0, ""])

    class AllProbs(Controller):
        def needs_probs(self, call):
            return True

    with torch.no_grad():
        ref = unet(x, 500, encoder_hidden_states=cond).sample
        with controlled(unet, Controller()):
            fused = unet(x, 500, encoder_hidden_states=cond).sample
        with controlled(unet, AllProbs()):
            probs = unet(x, 500, encoder_hidden_states=cond).sample
    assert torch.allclose(fused, ref, atol=1e-5, rtol=0)
    assert torch.allclose(probs, ref, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- self-attention sharing, unit level


def _attention(q, k, v, scale):
    return torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1) @ v


@pytest.mark.parametrize("halves", [("uncond", "cond"), ("cond",)])
def test_sharing_probs_route_equals_qkv_route(halves):
    """Copying image 0's probabilities onto image 1 = giving image 1 image 0's queries and keys."""
    pairs, heads, tokens, dim = 3, 2, 16, 8
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4 * pairs, heads, tokens, dim, generator=gen, dtype=torch.float64) for _ in range(3))
    scale = dim ** -0.5
    sharing = SelfAttentionSharing(torch.tensor([0.0, 0.5, 1.0]), pairs, halves=halves)
    sharing.begin_step(1, 4)  # step 1 of 4: pair 0 (p = 0) is past its fraction, pairs 1 and 2 share
    call = AttentionCall("layer", False, 4, 1)
    probs = torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1)
    by_probs = sharing.edit_probs(probs, call) @ v
    q2, k2, v2 = sharing.edit_qkv(q, k, v, call)
    by_qkv = torch.nn.functional.scaled_dot_product_attention(q2, k2, v2, scale=scale)
    assert v2 is v  # image 1 keeps its own values
    # by hand: row r attends with the queries and keys of its source row
    layout = PairLayout(pairs)
    source = list(range(4 * pairs))
    for half in halves:
        for j in (1, 2):
            source[layout.rows(half, 1).start + j] = layout.rows(half, 0).start + j
    expected = torch.stack([_attention(q[s], k[s], v[r], scale) for r, s in enumerate(source)])
    assert torch.allclose(by_probs, expected, atol=1e-12)
    assert torch.allclose(by_qkv, expected, atol=1e-12)
    unshared = _attention(q, k, v, scale)
    changed = [r for r in range(4 * pairs) if not torch.allclose(by_qkv[r], unshared[r])]
    assert changed == [r for r, s in enumerate(source) if s != r]  # image 1 rows of pairs 1, 2 only
    assert len(changed) == 2 * len(halves)


def test_sharing_leaves_cross_attention_other_resolutions_and_later_steps_alone():
    pairs = 2
    q, k, v = (torch.randn(4 * pairs, 2, 16, 4) for _ in range(3))
    sharing = SelfAttentionSharing(0.5, pairs, max_resolution=2)
    sharing.begin_step(0, 10)
    assert sharing.edit_qkv(q, k, v, AttentionCall("a", False, 4, 0)) == (q, k, v)  # 4 > max_resolution
    sharing = SelfAttentionSharing(0.5, pairs)
    for step, shared in [(0, True), (4, True), (5, False), (9, False)]:  # step < p * steps
        sharing.begin_step(step, 10)
        assert (sharing.edit_qkv(q, k, v, AttentionCall("a", False, 4, step))[0] is not q) == shared
        assert sharing.edit_qkv(q, k, v, AttentionCall("a", True, 4, step)) == (q, k, v)  # cross: never


# ---------------------------------------------------------------- the paired sampler


def test_identical_captions_give_identical_images_with_and_without_sharing(pipe):
    """Same caption on both sides: image 1 = image 0 exactly (same start latent, same noise), and
    sharing image 0's attention with an identical image 1 changes nothing, bit for bit."""
    def run(p, variant):
        return generate_batch(pipe, [_spec(s, p, CAPTION_0, CAPTION_0, steps=6, variant=variant) for s in (3, 4)])

    shared, unshared, plain = run(1.0, "self"), run(0.0, "self"), run(0.0, "none")
    for out in (shared, unshared, plain):
        assert np.array_equal(out.image_0, out.image_1)
    assert np.array_equal(shared.image_0, unshared.image_0) and np.array_equal(shared.image_0, plain.image_0)
    assert not np.array_equal(shared.image_0[0], shared.image_0[1])  # two seeds, two pictures


def test_both_images_get_the_pair_s_start_latent_and_noise(pipe, monkeypatch):
    """Replay the sampler with hand-written Euler ancestral steps (float64) from the UNet outputs it
    recorded, giving BOTH images of pair j the draws of torch.Generator().manual_seed(seed_j):
    start latent first, then one draw per step. Different captions, cfg and p, so the images differ."""
    from diffusers import EulerAncestralDiscreteScheduler

    steps = 4
    specs = [_spec(11, 0.5, cfg=8.0, steps=steps),
             _spec(12, 0.25, "a small green square on a white background",
                   "a small green triangle on a white background", cfg=12.0, steps=steps)]
    n = len(specs)
    inputs, outputs, latents = [], [], []

    def record(module, args, kwargs, out):  # returns None: the output stays as it is
        inputs.append(args[0].double())
        outputs.append(out.sample.double())

    h1 = pipe.unet.register_forward_hook(record, with_kwargs=True)
    decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda z, *a, **kw: (latents.append(z.double()), decode(z, *a, **kw))[1])
    try:
        out = generate_batch(pipe, specs)
    finally:
        h1.remove()
    assert len(inputs) == steps and len(latents) == 1
    sched = EulerAncestralDiscreteScheduler.from_config(pipe.scheduler.config)
    sched.set_timesteps(steps)
    sigmas = sched.sigmas.double()
    draws = []  # (steps, n, 4, 16, 16): draw 0 = start latent, draw i = noise of step i - 1
    gens = [torch.Generator().manual_seed(s.seed) for s in specs]
    for _ in range(steps):
        draws.append(torch.stack([torch.randn(4, 16, 16, generator=g) for g in gens]).double())
    both = lambda z: torch.cat([z, z])  # noqa: E731  image 0 rows, then image 1 rows
    cfg = torch.tensor([s.cfg for s in specs], dtype=torch.float64).view(n, 1, 1, 1).repeat(2, 1, 1, 1)
    xs = [inp[: 2 * n] * torch.sqrt(sigma**2 + 1) for inp, sigma in zip(inputs, sigmas)]  # the sampler's x
    xs.append(latents[0] * pipe.vae.config.scaling_factor)                                  # what it decoded
    start = both(draws[0]) * sigmas[0]
    assert (xs[0] - start).abs().max() <= 1e-6 * start.abs().max()
    for i in range(steps):  # one step at a time from the sampler's own x: float32 keeps ~7 digits of
        sigma, nxt = sigmas[i], sigmas[i + 1]  # the largest x (first sigma ~2e4), so no long replay
        assert torch.equal(inputs[i][: 2 * n], inputs[i][2 * n:])  # both CFG halves see the same x
        uncond, cond = outputs[i].chunk(2)
        v = uncond + cfg * (cond - uncond)
        x0 = xs[i] / (sigma**2 + 1) - v * sigma / torch.sqrt(sigma**2 + 1)  # v-prediction (toy SD)
        up = nxt * torch.sqrt(1 - nxt**2 / sigma**2)
        down = torch.sqrt(nxt**2 - up**2)
        expected = xs[i] + (xs[i] - x0) / sigma * (down - sigma) + (both(draws[i + 1]) * up if nxt > 0 else 0)
        tol = 1e-6 * max(xs[i].abs().max(), expected.abs().max())
        assert (xs[i + 1] - expected).abs().max() <= tol, (i, float((xs[i + 1] - expected).abs().max()), float(tol))
        if nxt > 0:  # a wrong draw would be off by about sigma_up: far outside the tolerance
            assert up > 10 * tol
    assert _levels(out.image_0, out.image_1) > 50  # the captions differ: so do the images


def test_a_pair_alone_equals_the_same_pair_inside_a_batch(pipe):
    """Per-pair generators and per-pair p: a pair's pixels do not depend on its batch mates."""
    words = ["red", "blue", "green", "yellow", "purple", "orange", "red", "blue"]
    specs = [_spec(100 + i, p=[0.0, 0.3, 1.0, 0.6][i % 4], c0=f"a large {w} circle on a gray background",
                   c1=f"a large {w} square on a gray background", cfg=7.5 + i, steps=8) for i, w in enumerate(words)]
    batch = generate_pairs(pipe, specs, batch_size=8)
    for j in (0, 5):
        alone = generate_pairs(pipe, [specs[j]], batch_size=1)
        assert _levels(alone.image_0[0], batch.image_0[j]) <= 1
        assert _levels(alone.image_1[0], batch.image_1[j]) <= 1
    assert _levels(batch.image_0[0], batch.image_0[5]) > 50  # batch mates are other pictures


def test_probs_route_gives_the_fused_route_s_images(pipe):
    """The authors' materialised probabilities and our fused route sample the same pairs."""
    specs = [_spec(21, 0.6, steps=6), _spec(22, 1.0, steps=6)]
    fused = generate_batch(pipe, specs)
    probs = generate_batch(pipe, specs, controller=ProbsSharing(torch.tensor([s.p for s in specs]), len(specs)))
    assert _levels(fused.image_0, probs.image_0) <= 1 and _levels(fused.image_1, probs.image_1) <= 1


def _edge_map(images: np.ndarray) -> np.ndarray:
    """|horizontal| + |vertical| grey-level differences, each image scaled to mean 1."""
    g = images.astype(np.float64).mean(-1)
    e = np.abs(np.diff(g, axis=2))[:, :-1, :] + np.abs(np.diff(g, axis=1))[:, :, :-1]
    return e / (e.mean(axis=(1, 2), keepdims=True) + 1e-6)


def _position_gap(a: np.ndarray, b: np.ndarray) -> float:
    ja, jb = judge(a), judge(b)
    if ja.u is None or jb.u is None:
        return 1.0  # an object lost on one side counts as far apart
    return abs(ja.u - jb.u) + abs(ja.v - jb.v)


def _improvement_z(before: np.ndarray, after: np.ndarray) -> tuple[float, float]:
    """Paired comparison: mean of (before - after) and its z = mean / standard error."""
    d = before - after
    se = d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean()), float(d.mean() / se) if se > 0 else 0.0


def test_sharing_makes_the_pair_alike(pipe):
    """p = 1 against p = 0 on the same 32 caption pairs, seeds and cfg (one batch of 64 pairs,
    10 steps): image 1 follows image 0 more closely, by the edge maps, by the oracle's object
    position and by the mean pixel difference (which also holds the edit itself, so it moves
    least). A hook that reaches nothing gives zero improvement on every pair.

    Paired comparison per metric: z = mean improvement / its standard error must be >= 2 (one-sided
    p < 0.025 each), with a margin on the mean. Measured here: z = 2.9 (edges), 3.9 (position),
    3.8 (pixels); 24, 23 and 25 of the 32 pairs improve."""
    kinds = ("recolor", "reshape", "background", "resize")
    rng = np.random.default_rng(5)
    captions = []
    for i, scene in enumerate(sample_scenes(32, seed=20_000)):
        edit = sample_edit(scene, rng, kinds=(kinds[i % len(kinds)],))
        captions.append((caption(scene), caption(apply(scene, edit))))
    n = len(captions)
    specs = [PairSpec(c0, c1, 500 + i, 7.5, p, 10, "self") for p in (0.0, 1.0) for i, (c0, c1) in enumerate(captions)]
    out = generate_batch(pipe, specs)
    assert _levels(out.image_0[:n], out.image_0[n:]) <= 1  # sharing never touches image 0
    edges = np.abs(_edge_map(out.image_0) - _edge_map(out.image_1)).mean(axis=(1, 2))
    gaps = np.array([_position_gap(a, b) for a, b in zip(out.image_0, out.image_1)])
    pixels = np.abs(out.image_0.astype(np.float64) - out.image_1).mean(axis=(1, 2, 3))
    edge_gain, edge_z = _improvement_z(edges[:n], edges[n:])
    gap_gain, gap_z = _improvement_z(gaps[:n], gaps[n:])
    pixel_gain, pixel_z = _improvement_z(pixels[:n], pixels[n:])
    assert edge_z >= 2 and edge_gain > 0.03, (edge_gain, edge_z)  # measured 0.090 (mean 1.30 -> 1.21)
    assert gap_z >= 2 and gap_gain > 0.02, (gap_gain, gap_z)  # measured 0.068 (0.26 -> 0.19 of the image side)
    assert pixel_z >= 2 and pixel_gain > 0.5, (pixel_gain, pixel_z)  # measured 1.8 levels (39.4 -> 37.6)


# ---------------------------------------------------------------- the attention store


def test_attention_store_keeps_maps_that_sum_to_one(pipe):
    store = AttentionStore(cross=True, self_attention=True, max_self_resolution=8)
    sharing = SelfAttentionSharing(1.0, 1)
    steps, keys = 2, pipe.tokenizer.model_max_length
    generate_batch(pipe, [_spec(7, 1.0, steps=steps)], controller=ControllerList(sharing, store))
    assert store.maps
    for (layer, step), m in store.maps.items():
        call = store.info[layer]
        side = call.resolution
        assert m.shape == (4, side * side, keys if call.is_cross else side * side)
        assert torch.allclose(m.sum(-1), torch.ones(()), atol=1e-5)
    assert not store.layers(is_cross=False, resolution=16)  # above max_self_resolution: not kept
    assert len(store.layers(is_cross=True)) == 10 and len(store.layers(is_cross=False)) == 7
    cross16 = store.average(True, 16)
    self8 = store.average(False, 8)
    assert cross16.shape == (4, 16, 16, keys) and self8.shape == (4, 8, 8, 64)
    assert torch.allclose(cross16.sum(-1), torch.ones(()), atol=1e-5)
    # the store sees the edited probabilities: image 1's self-attention is image 0's (rows [u0, u1, c0, c1])
    assert torch.equal(self8[1], self8[0]) and torch.equal(self8[3], self8[2])
    assert not torch.allclose(cross16[3], cross16[2])  # cross-attention is not shared
    names = store.layers(True, 16)
    by_hand = torch.stack([store.maps[(n, 1)] for n in names]).mean(0).view(4, 16, 16, keys)
    assert torch.allclose(store.average(True, 16, steps=range(1, 2)), by_hand)
    with pytest.raises(ValueError, match="resolution"):
        store.average(True)  # several resolutions do not average
    with pytest.raises(ValueError, match="no stored"):
        store.average(False, 16)


def test_attention_store_rows():
    rows = PairLayout(3).rows("cond", 1)
    assert rows == slice(9, 12)
    store = AttentionStore(rows=rows)
    probs = torch.softmax(torch.randn(12, 2, 4, 5), -1)
    assert store.edit_probs(probs, AttentionCall("l", True, 2, 0)) is probs
    assert torch.allclose(store.maps[("l", 0)], probs[9:12].mean(1))


# ---------------------------------------------------------------- the Euler ancestral arithmetic


@pytest.mark.parametrize("sigma", [0.03, 1.0, 14.6, 20291.0])
def test_denoised_recovers_x0_for_epsilon_and_v(sigma):
    """x = x0 + sigma eps; v = alpha eps - s x0 with alpha = 1 / sqrt(1 + sigma^2), s = sigma alpha
    (v on the variance-preserving sample alpha x). Both predictions must give back x0."""
    gen = torch.Generator().manual_seed(1)
    x0, eps = (torch.randn(2, 4, 3, 3, generator=gen, dtype=torch.float64) for _ in range(2))
    x = x0 + sigma * eps
    alpha = 1 / math.sqrt(1 + sigma**2)
    v = alpha * eps - sigma * alpha * x0
    assert torch.allclose(denoised(eps, x, sigma, "epsilon"), x0, atol=1e-9 * max(1.0, sigma))
    assert torch.allclose(denoised(v, x, sigma, "v_prediction"), x0, atol=1e-9 * max(1.0, sigma))
    with pytest.raises(ValueError, match="prediction"):
        denoised(eps, x, sigma, "sample")


def test_denoised_matches_diffusers_euler_ancestral():
    from diffusers import EulerAncestralDiscreteScheduler

    for prediction in ("epsilon", "v_prediction"):
        sched = EulerAncestralDiscreteScheduler(prediction_type=prediction)
        sched.set_timesteps(5)
        gen = torch.Generator().manual_seed(2)
        x, out = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
        ref = sched.step(out, sched.timesteps[0], x, generator=gen).pred_original_sample  # at sigmas[0]
        ours = denoised(out, x, float(sched.sigmas[0]), prediction)
        assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("steps", [1, 3])
def test_short_schedules_give_finite_images(pipe, steps):
    """Toy SD's first sigma is ~2e4: float32 sigma arithmetic can take sqrt of a negative number on a
    short schedule (diffusers #14213); the float64 sigmas must give finite, non-constant pictures."""
    out = generate_batch(pipe, [_spec(9, 0.5, steps=steps)])  # raises FloatingPointError if not finite
    assert out.image_0.std() > 1 and out.image_1.std() > 1


def test_a_controller_built_for_another_batch_is_refused(pipe):
    from ip2p_lib.p2p import ControllerList, SelfAttentionSharing, generate_batch

    specs = [_spec(seed) for seed in range(3)]
    with pytest.raises(ValueError, match=r"built for \[2\] pairs, the batch has 3"):
        generate_batch(pipe, specs, controller=ControllerList(Controller(), SelfAttentionSharing(1.0, 2)))


def test_attention_with_query_key_norms_is_refused():
    from diffusers.models.attention_processor import Attention

    from ip2p_lib.p2p import ControlledAttention

    attn = Attention(query_dim=8, heads=2, dim_head=4, qk_norm="layer_norm")
    with pytest.raises(NotImplementedError, match="query/key norms"):
        ControlledAttention("x", Controller())(attn, torch.zeros(1, 4, 8))
