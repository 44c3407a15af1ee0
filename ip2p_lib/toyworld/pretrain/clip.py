"""Toy CLIP: an open_clip model with a small config, trained contrastively on the world.

The paper filters its generated pairs with CLIP ViT-L/14. The stand-in is the same kind of
model from the same library: a ViT image tower on 64x64 renders and a causal text
transformer over CLIP's real BPE ids (49,408-token embedding, context 77, as in SD, so the
text tower can serve as toy SD's text encoder). The config is registered through
open_clip's own mechanism (`open_clip.add_model_config`), so `open_clip.create_model(
"toy-clip", pretrained=<weights>)` builds it like any other open_clip model.

Training minimises open_clip's `ClipLoss`, the symmetric InfoNCE of CLIP:

    L = 1/2 [ CE(s * I T^T, diag) + CE(s * T I^T, diag) ],  I, T unit image/text features,

plus hard negatives, because CLIP filtering must rank a caption above its one-word edits:
- one caption per image with one attribute changed (image->text);
- position (`position_negatives`): a batch of random scenes rarely differs *only* in where
  the object is, so plain contrastive training learns almost nothing about position. Each
  image also classifies its own caption among the 9 versions that name each region (a
  9-way softmax, exactly the zero-shot region test), and each positional caption must
  prefer its image over the same scene rendered in another region (text->image).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ip2p_lib.toyworld import BACKGROUNDS, COLORS, SHAPES, SIZES, Scene, caption, random_caption
from ip2p_lib.toyworld.captions import random_caption_variant
from ip2p_lib.toyworld.scene import REGIONS, at_region
from ip2p_lib.toyworld.pretrain import common
from ip2p_lib.infra.trainloop import RunState, warmup_cosine
from ip2p_lib.toyworld.pretrain.data import held_out_scenes, scene_batch

MODEL_NAME = "toy-clip"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP's normalisation, kept for parity
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
ATTRIBUTE_VALUES = {"shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS), "size": SIZES}
BOUNDARY_MARGIN_PX = 3.0  # region accuracy is measured on objects at least this far from a region boundary


@dataclass
class CLIPConfig:
    """Architecture and optimisation of toy CLIP (defaults: the committed model)."""

    embed_dim: int = 64
    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 96
    vision_layers: int = 3
    vision_head_width: int = 32
    text_width: int = 64
    text_heads: int = 4
    text_layers: int = 3
    context_length: int = 32  # captions are <= 25 tokens; exported with 77 positions (see export_clip)
    steps: int = 1500
    batch_size: int = 96
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 100
    lr_floor: float = 0.05
    hard_negatives: bool = True
    position_negatives: bool = True
    p_position: float = 0.5  # fraction of positive captions that name the region
    init_from: str | None = None  # an exported toy CLIP folder to continue from (None: random init)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def open_clip_config(self) -> dict[str, Any]:
        """The model config in open_clip's json format."""
        return {
            "embed_dim": self.embed_dim,
            "quick_gelu": True,
            "vision_cfg": {"image_size": self.image_size, "patch_size": self.patch_size, "width": self.vision_width,
                           "layers": self.vision_layers, "head_width": self.vision_head_width},
            "text_cfg": {"context_length": self.context_length, "vocab_size": 49408, "width": self.text_width,
                         "heads": self.text_heads, "layers": self.text_layers},
        }


def register_config(cfg: CLIPConfig, folder: Path, name: str = MODEL_NAME) -> Path:
    """Write `<name>.json` into `folder` and register it with open_clip."""
    import open_clip

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(cfg.open_clip_config(), indent=2))
    open_clip.add_model_config(path)
    return path


def build_clip(cfg: CLIPConfig, config_dir: Path) -> Any:
    """A fresh open_clip model from the registered toy config."""
    import open_clip

    register_config(cfg, config_dir)
    return open_clip.create_model(MODEL_NAME)


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] renders -> CLIP's input normalisation."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def one_attribute_changed(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene with one of shape/colour/background/size set to another value."""
    name = list(ATTRIBUTE_VALUES)[rng.integers(len(ATTRIBUTE_VALUES))]
    others = [v for v in ATTRIBUTE_VALUES[name] if v != getattr(scene, name)]
    return scene.replace(**{name: others[rng.integers(len(others))]})


def other_region(scene: Scene, rng: np.random.Generator) -> Scene:
    """The scene moved, uniformly, into one of the 8 regions it is not in."""
    others = [r for r in REGIONS if r != (scene.hpos, scene.vpos)]
    return at_region(scene, others[rng.integers(len(others))], rng)


def region_index(scene: Scene) -> int:
    return REGIONS.index((scene.hpos, scene.vpos))


def boundary_distance_px(scene: Scene, resolution: int = 64) -> float:
    """Pixels between the object's centre and the nearest region boundary (on either axis)."""
    from ip2p_lib.toyworld.scene import SIZE_RADIUS

    span = resolution - 2 * SIZE_RADIUS[scene.size] * resolution
    return float(min(abs(c - b) for c in (scene.u, scene.v) for b in (1 / 3, 2 / 3)) * span)


def load_init_weights(model: Any, folder: Path) -> None:
    """Continue from an exported toy CLIP: load its weights, cutting the positional table back
    to the training context (the export zero-extends it to 77; see `export_clip`)."""
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(Path(folder) / "open_clip_model.safetensors")).items()}
    n = model.positional_embedding.shape[0]
    state["positional_embedding"] = state["positional_embedding"][:n]
    model.load_state_dict(state)


def train_clip(cfg: CLIPConfig, run_dir: Path, progress: bool = True, checkpoint_every_s: float = 180.0) -> tuple[Any, Any, RunState]:
    """Train (or resume) toy CLIP in `run_dir`; returns the model, its tokenizer and run state."""
    import open_clip
    from open_clip.loss import ClipLoss

    common.seed_everything(cfg.seed)
    model = build_clip(cfg, Path(run_dir))
    if cfg.init_from:
        load_init_weights(model, Path(cfg.init_from))
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    loss_fn = ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup, cfg.steps, cfg.lr_floor))

    def step_fn(step: int) -> torch.Tensor:
        rng, _ = common.step_rng(cfg.seed, step)
        b = cfg.batch_size
        scenes, images = scene_batch(rng, b)
        texts = [random_caption(s, rng, cfg.p_position) for s in scenes]
        if cfg.hard_negatives:
            texts += [random_caption(one_attribute_changed(s, rng), rng, cfg.p_position) for s in scenes]
        img = model.encode_image(normalize_images(images), normalize=True)
        txt = model.encode_text(tokenizer(texts), normalize=True)
        scale = model.logit_scale.exp()
        loss = loss_fn(img, txt[:b], scale)
        if cfg.hard_negatives:  # image -> [all positives, all hard negatives]
            logits = scale * img @ txt.T
            loss = loss + F.cross_entropy(logits, torch.arange(b))
        if cfg.position_negatives:
            loss = loss + position_loss(model, tokenizer, scenes, img, scale, rng)
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
        return loss

    state = common.train(step_fn, model, opt, sched, cfg.steps, Path(run_dir), cfg.to_dict(),
                         desc="clip", progress=progress, checkpoint_every_s=checkpoint_every_s)
    return model.eval(), tokenizer, state


def position_loss(model: Any, tokenizer: Any, scenes: list[Scene], img: torch.Tensor, scale: torch.Tensor,
                  rng: np.random.Generator) -> torch.Tensor:
    """Hard negatives that differ only in position (module docstring): the 9-way region softmax of
    each image over its caption placed in every region, plus text->image against the same scene
    rendered in another region."""
    from ip2p_lib.toyworld.pretrain.data import images_to_tensor
    from ip2p_lib.toyworld import render

    b = len(scenes)
    wordings = [random_caption_variant(rng, p_position=1.0) for _ in scenes]
    texts = [caption(at_region(s, r), **w) for s, w in zip(scenes, wordings) for r in REGIONS]
    txt = model.encode_text(tokenizer(texts), normalize=True).view(b, len(REGIONS), -1)
    target = torch.tensor([region_index(s) for s in scenes])
    loss = F.cross_entropy(scale * torch.einsum("bd,bkd->bk", img, txt), target)
    moved = np.stack([render(other_region(s, rng)) for s in scenes])
    moved_img = model.encode_image(normalize_images(images_to_tensor(moved)), normalize=True)
    own_caption = txt[torch.arange(b), target]                    # each image's positional caption
    logits = scale * own_caption @ torch.cat([img, moved_img]).T  # -> [all images, all moved images]
    return loss + F.cross_entropy(logits, torch.arange(b))


@torch.no_grad()
def evaluate_clip(model: Any, tokenizer: Any, n: int = 1000, batch: int = 250) -> dict[str, float]:
    """On `n` held-out renders: zero-shot accuracy per attribute (argmax over all 144 canonical
    captions, attribute read off the winner) and the fraction of images whose caption scores
    above every caption that differs in exactly one attribute (`one_edit_ranking`)."""
    from ip2p_lib.toyworld import render
    from ip2p_lib.toyworld.pretrain.data import images_to_tensor

    combos = [Scene(sh, co, bg, si) for sh in SHAPES for co in COLORS for bg in BACKGROUNDS for si in SIZES]
    index = {(s.shape, s.color, s.background, s.size): i for i, s in enumerate(combos)}
    text = model.encode_text(tokenizer([caption(s) for s in combos]), normalize=True)
    scenes = held_out_scenes(n)
    feats = torch.cat([model.encode_image(normalize_images(images_to_tensor(np.stack([render(s) for s in scenes[i:i + batch]]))),
                                          normalize=True) for i in range(0, n, batch)])
    sims = feats @ text.T
    pred = [combos[int(k)] for k in sims.argmax(1)]
    out = {f"zero_shot_{a}": float(np.mean([getattr(p, a) == getattr(s, a) for p, s in zip(pred, scenes)])) for a in ATTRIBUTE_VALUES}
    wins = []
    for row, s in zip(sims, scenes):
        true = index[(s.shape, s.color, s.background, s.size)]
        rivals = [index[(*(v if a == name else getattr(s, a) for a in ATTRIBUTE_VALUES),)]
                  for name, values in ATTRIBUTE_VALUES.items() for v in values if v != getattr(s, name)]
        wins.append(bool(row[true] > row[rivals].max()))
    out["one_edit_ranking"] = float(np.mean(wins))
    out.update(evaluate_regions(model, tokenizer, n, batch))
    return out


def region_test_scenes(n: int = 1000, margin_px: float = BOUNDARY_MARGIN_PX) -> list[Scene]:
    """`n` held-out scenes whose object is at least `margin_px` from every region boundary
    (nearer ones are ambiguous even to a person), drawn from a seed no training step uses."""
    out: list[Scene] = []
    offset = 2
    while len(out) < n:
        out += [s for s in held_out_scenes(4 * n, offset=offset) if boundary_distance_px(s) >= margin_px]
        offset += 1
    return out[:n]


@torch.no_grad()
def evaluate_regions(model: Any, tokenizer: Any, n: int = 1000, batch: int = 250) -> dict[str, float]:
    """Zero-shot position on `region_test_scenes(n)`: the argmax over all 1,296 canonical captions
    that name a region (144 scenes x 9 regions) reads the region of each render."""
    from ip2p_lib.toyworld import render
    from ip2p_lib.toyworld.pretrain.data import images_to_tensor

    combos = [at_region(Scene(sh, co, bg, si), r) for sh in SHAPES for co in COLORS for bg in BACKGROUNDS
              for si in SIZES for r in REGIONS]
    text = torch.cat([model.encode_text(tokenizer([caption(s, with_position=True) for s in combos[i:i + 432]]),
                                        normalize=True) for i in range(0, len(combos), 432)])
    scenes = region_test_scenes(n)
    feats = torch.cat([model.encode_image(normalize_images(images_to_tensor(np.stack([render(s) for s in scenes[i:i + batch]]))),
                                          normalize=True) for i in range(0, n, batch)])
    pred = [combos[int(k)] for k in (feats @ text.T).argmax(1)]
    return {"zero_shot_region": float(np.mean([(p.hpos, p.vpos) == (t.hpos, t.vpos) for p, t in zip(pred, scenes)])),
            "zero_shot_hpos": float(np.mean([p.hpos == t.hpos for p, t in zip(pred, scenes)])),
            "zero_shot_vpos": float(np.mean([p.vpos == t.vpos for p, t in zip(pred, scenes)]))}


EXPORT_CONTEXT = 77  # SD pads prompts to the tokenizer's model_max_length, 77


def export_clip(model: Any, cfg: CLIPConfig, folder: Path, metrics: dict[str, Any]) -> Path:
    """Save toy CLIP as an open_clip `local-dir:` folder (open_clip_config.json +
    open_clip_model.safetensors, fp16; loads as fp32) with context length 77.

    Training used `cfg.context_length` positions; positions beyond it never receive a
    gradient in a causal tower whose pooled token is the end-of-text (captions are shorter),
    so extending the table with zeros changes no feature and lets SD pad prompts to 77."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = cfg.open_clip_config()
    model_cfg["text_cfg"]["context_length"] = EXPORT_CONTEXT
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pos = state["positional_embedding"]
    state["positional_embedding"] = torch.cat([pos, pos.new_zeros(EXPORT_CONTEXT - pos.shape[0], pos.shape[1])])
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD),
                                                    "interpolation": "bicubic", "resize_mode": "shortest"}}, indent=2))
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, str(folder / "open_clip_model.safetensors"))
    return folder


def default_config() -> CLIPConfig:
    return CLIPConfig()


def main(run_dir: Path, out: Path | None, cfg: CLIPConfig, threads: int = 2, progress: bool = True) -> dict[str, Any]:
    """Train, evaluate on 1000 held-out renders and (if `out`) export toy CLIP with its card."""
    torch.set_num_threads(threads)
    model, tokenizer, state = train_clip(cfg, Path(run_dir), progress=progress)
    metrics = evaluate_clip(model, tokenizer)
    print({k: round(v, 4) for k, v in metrics.items()})
    if out is not None:
        export_clip(model, cfg, Path(out), metrics)
        n_params = sum(p.numel() for p in model.parameters())
        common.write_card(Path(out), "Toy CLIP (open_clip, stand-in for CLIP ViT-L/14)", {
            "What it stands in for": "OpenAI CLIP ViT-L/14 (open_clip `ViT-L-14`, `openai`), used by the paper to filter "
                                     "generated pairs. Load: `open_clip.create_model_and_transforms('local-dir:data/toy/models/clip')` "
                                     "or `ip2p_lib.infra.models.load_clip('toy')`.",
            "Config": {**cfg.to_dict(), "parameters": n_params, "exported_context_length": EXPORT_CONTEXT},
            "Training": {"steps": state.step, "train_wall_s": round(state.elapsed_s), "machine": common.machine(),
                         "data": f"random renders with random caption variants (p_position {cfg.p_position}), one hard "
                                 "negative caption per image (one attribute changed)"
                                 + ("; per image, its caption placed in each of the 9 regions and the same scene "
                                    "rendered in another region" if cfg.position_negatives else "")
                                 + "; drawn per step from seed (seed, step)",
                         "loss": "open_clip ClipLoss + image->text cross-entropy over positives and hard negatives"
                                 + (" + 9-way region cross-entropy + positional caption -> [images, moved images] "
                                    "cross-entropy" if cfg.position_negatives else ""),
                         "initialised from": "random" if not cfg.init_from else "an exported toy CLIP (see Run notes)",
                         "loss_first_last": common.loss_summary(state.losses)},
            "Quality (1000 held-out renders)": {k: round(v, 4) for k, v in metrics.items()},
            "How quality is measured": "zero-shot: the argmax over the 144 canonical captions (every shape x colour x "
                                       "background x size) names each attribute; one_edit_ranking: the image's canonical "
                                       "caption scores above all 11 captions that differ from it in one attribute; "
                                       "region: the argmax over the 1,296 canonical captions that name one of the 9 regions, "
                                       f"on 1,000 other held-out renders whose object is >= {BOUNDARY_MARGIN_PX:g} px from "
                                       "every region boundary.",
            "Reproduce": f"`ip2p toy pretrain clip --seed {cfg.seed} --threads {threads}"
                         + (f" --steps {cfg.steps} --lr {cfg.lr:g} --init-from <exported toy CLIP>`" if cfg.init_from else "`"),
        })
    return metrics
