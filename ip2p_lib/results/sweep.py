"""Sweeps: one editor (or SDEdit) over many settings, on the same cases, scored two ways.

Every setting edits every case with the same seed (case i gets `seed + i` in every setting), so
two settings differ only by the setting. InstructPix2Pix settings are batched: the (setting,
case) rows go through the sampler together, `rows` images per UNet call (each with its three
guidance branches), each row with its own s_T and s_I (`InstructPix2PixEditor.edit_batch` takes
per-image scales). No two settings can share a UNet evaluation after the first step (their
z_t differ from then on), so batching is what "many settings in one call" can buy: fewer,
larger matrix products. That pays on a GPU; on a CPU the cost per row is flat from about 16
rows up, and batching the cases alone gets the same speed (`benchmarks/sweep_batching.py`).

Each setting becomes a point: Figure 8's CLIP axes (mean and standard error) and, for toy cases,
the oracle's rates per edit kind.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

from ip2p_lib.results.metrics import clip_edit_scores, judgeable, mean_and_sem


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: InstructPix2Pix at (s_T, s_I), or SDEdit at `strength` (with its own
    classifier-free guidance `s_T`)."""

    method: str = "ip2p"  # "ip2p" or "sdedit"
    s_T: float = 7.5
    s_I: float = 1.5
    strength: float = 0.0

    @property
    def label(self) -> str:
        if self.method == "sdedit":
            return f"SDEdit {self.strength:g}"
        return f"s_T {self.s_T:g}, s_I {self.s_I:g}"


def ip2p_settings(s_T: Sequence[float] | float, s_I: Sequence[float] | float) -> list[Setting]:
    """The InstructPix2Pix settings of a sweep: every s_T with every s_I (either may be one number)."""
    ts = [s_T] if isinstance(s_T, (int, float)) else list(s_T)
    is_ = [s_I] if isinstance(s_I, (int, float)) else list(s_I)
    return [Setting("ip2p", float(t), float(i)) for t in ts for i in is_]


def sdedit_settings(strengths: Sequence[float], guidance: float = 7.5) -> list[Setting]:
    """SDEdit at each strength, with classifier-free guidance `guidance`."""
    return [Setting("sdedit", s_T=float(guidance), s_I=0.0, strength=float(s)) for s in strengths]


def chunks(n: int, size: int) -> list[range]:
    """[0, n) cut into consecutive ranges of at most `size`."""
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def ip2p_outputs(editor: Any, cases: Sequence[Any], settings: Sequence[Setting], steps: int = 20, seed: int = 0,
                 rows: int = 48, progress: Any = None) -> np.ndarray:
    """uint8 (S, N, H, W, 3): every case edited at every setting, `rows` (setting, case) rows per
    batch. Row (k, i) equals `editor.edit(case i, s_T_k, s_I_k, seed + i)` up to float rounding."""
    from PIL import Image

    jobs = [(k, i) for k in range(len(settings)) for i in range(len(cases))]
    out: np.ndarray | None = None
    for part in chunks(len(jobs), rows):
        batch = [jobs[j] for j in part]
        results = editor.edit_batch(
            [Image.fromarray(cases[i].image) for _, i in batch], [cases[i].instruction for _, i in batch], steps=steps,
            s_text=[settings[k].s_T for k, _ in batch], s_image=[settings[k].s_I for k, _ in batch],
            seeds=[seed + i for _, i in batch])
        for (k, i), r in zip(batch, results):
            image = np.asarray(r.image)
            if out is None:
                out = np.zeros((len(settings), len(cases), *image.shape), dtype=np.uint8)
            out[k, i] = image
        if progress is not None:
            progress.update(len(batch))
    assert out is not None
    return out


def sdedit_outputs(sd_pipe: Any, cases: Sequence[Any], settings: Sequence[Setting], steps: int = 20, seed: int = 0,
                   rows: int = 48, progress: Any = None) -> np.ndarray:
    """uint8 (S, N, H, W, 3): SDEdit of every case at every setting's strength, case i seeded `seed + i`."""
    from ip2p_lib.results.sdedit import sdedit_fn
    from ip2p_lib.training.evaluate import to_uint8

    per_setting = []
    for s in settings:
        fn = sdedit_fn(sd_pipe, s.strength, steps=steps, guidance_scale=s.s_T)
        images: list[np.ndarray] = []
        for part in chunks(len(cases), rows):
            images.extend(to_uint8(im) for im in fn([cases[i] for i in part], [seed + i for i in part]))
            if progress is not None:
                progress.update(len(part))
        per_setting.append(np.stack(images))
    return np.stack(per_setting)


ORACLE_RATES = ("edit_success", "preserved", "success")


def point_value(point: dict[str, Any], key: str) -> float:
    """A sweep point's CLIP axis (clip_direction, clip_image, ...) or the oracle's rate over all cases."""
    return point["oracle"]["all"][key] if key in ORACLE_RATES else point[key]


def score(cases: Sequence[Any], outputs: np.ndarray, scorer: Any | None, setting: Setting,
          seconds: float = 0.0) -> dict[str, Any]:
    """One sweep point: the setting, n, the CLIP axes (mean and standard error; `scorer` None skips
    them) and, when the oracle can judge the cases, its rates per kind group (`EvalReport.by_group`)."""
    point: dict[str, Any] = {"label": setting.label, **asdict(setting), "n": len(cases),
                             "seconds_per_edit": seconds / max(len(cases), 1)}
    if scorer is not None:
        for name, values in clip_edit_scores(scorer, cases, outputs).items():
            point[name], point[f"{name}_sem"] = mean_and_sem(values)
    if judgeable(cases):
        from ip2p_lib.training.evaluate import judge_outputs

        point["oracle"] = judge_outputs(cases, list(outputs), name=setting.label).by_group()
    return point


def run_sweep(cases: Sequence[Any], settings: Sequence[Setting], editor: Any = None, sd_pipe: Any = None,
              scorer: Any = None, steps: int = 20, seed: int = 0, rows: int = 48,
              progress: bool = False, desc: str = "sweep") -> tuple[list[dict[str, Any]], np.ndarray]:
    """Edit `cases` at every setting (InstructPix2Pix ones with `editor`, SDEdit ones with `sd_pipe`)
    and score each: (points in the order of `settings`, outputs uint8 (S, N, H, W, 3))."""
    from tqdm.auto import tqdm

    ip2p = [k for k, s in enumerate(settings) if s.method == "ip2p"]
    sde = [k for k, s in enumerate(settings) if s.method == "sdedit"]
    unknown = [s.method for s in settings if s.method not in ("ip2p", "sdedit")]
    if unknown:
        raise ValueError(f"unknown sweep methods {unknown}; use ip2p or sdedit")
    if (ip2p and editor is None) or (sde and sd_pipe is None):
        raise ValueError("InstructPix2Pix settings need an editor, SDEdit settings an sd_pipe")
    bar = tqdm(total=len(settings) * len(cases), desc=desc, unit="edit", disable=not progress, leave=False)
    outputs: dict[int, np.ndarray] = {}
    seconds: dict[int, float] = {}
    for group, make, model in ((ip2p, ip2p_outputs, editor), (sde, sdedit_outputs, sd_pipe)):
        if group:
            t0 = time.perf_counter()
            made = make(model, cases, [settings[k] for k in group], steps=steps, seed=seed, rows=rows, progress=bar)
            for j, k in enumerate(group):
                outputs[k], seconds[k] = made[j], (time.perf_counter() - t0) / len(group)
    bar.close()
    points = [score(cases, outputs[k], scorer, s, seconds[k]) for k, s in enumerate(settings)]
    return points, np.stack([outputs[k] for k in range(len(settings))])


def profile_sweep(profile: str, cfg: dict[str, Any], settings: Sequence[Setting], progress: bool = False,
                  desc: str = "sweep") -> tuple[list[Any], list[dict[str, Any]], np.ndarray]:
    """The figures' common path: the profile's cases (`cfg`'s n, seed, data and model), its editor,
    SD when a setting is SDEdit, its CLIP scorer, and `run_sweep`: (cases, points, outputs)."""
    from ip2p_lib.results.common import load_profile_editor, load_profile_scorer, load_profile_sd, profile_cases

    cases = profile_cases(profile, cfg["n"], seed=cfg["seed"], data=cfg["data"], model=cfg["model"])
    sd_pipe = load_profile_sd(profile) if any(s.method == "sdedit" for s in settings) else None
    points, outputs = run_sweep(cases, settings, editor=load_profile_editor(profile, cfg["model"]), sd_pipe=sd_pipe,
                                scorer=load_profile_scorer(profile), steps=cfg["steps"], seed=cfg["seed"],
                                rows=cfg["rows"], progress=progress, desc=desc)
    return cases, points, outputs
