"""How well does a trained InstructPix2Pix model edit scenes it never saw? The oracle judges.

A held-out case is a scene no training caption describes, an edit of it, and an instruction in a
wording the training set never uses (the `heldout` phrasings of `ip2p_lib.toyworld.edits`). The
oracle target of the edit is `render(apply(scene, edit))`. Each output is judged as the pair
generator's outputs are (`ip2p_lib.p2p.evaluate.oracle_verdicts`): `judge` both images, then
`score_judgements` with the case's edit:
- `edit_success`: the edited attribute now reads as the edit's target;
- `preserved`: every other attribute reads as in the input (and the object stayed put, unless moved);
- `success`: both.
The targets for the toy model are stated on recolor, reshape, background and resize
(`TARGET_KINDS`): edit success >= 85%, preserved >= 90% (`TARGETS`).

Baselines on the same cases, same report: `no_edit` (the input back), `oracle_target` (the
ground truth: a check of the judge, ~100%); SDEdit, the paper's Fig. 8 baseline, is in
`ip2p_lib.results.sdedit`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ip2p_lib.toyworld import (
    EDIT_KINDS, CaptionParseError, Edit, Scene, apply, caption, instruction, judge, parse_caption, possible_edits, render,
    sample_scene,
)
from ip2p_lib.toyworld.oracle import as_rgb_array, score_judgements

TARGET_KINDS: tuple[str, ...] = ("recolor", "reshape", "background", "resize")
TARGETS: Mapping[str, float] = {"edit_success": 0.85, "preserved": 0.90}
RATES: tuple[str, ...] = ("edit_success", "preserved", "success")
TRAINING_CAPTION_COLUMNS: tuple[str, ...] = ("original_prompt", "edited_prompt")

SceneKey = tuple[str, str, str, str, str, str]  # shape, color, background, size, hpos, vpos
# An edit function: a batch of cases and one seed per case -> one output image per case
# (uint8 (H, W, 3), float in [0, 1], or PIL).
EditFn = Callable[[Sequence["EditCase"], Sequence[int]], Sequence[Any]]


# ---------------------------------------------------------------- held-out cases
@dataclass(frozen=True, eq=False)
class EditCase:
    """One test of an editor: a scene, an edit of it, its instruction, the input and target renders."""

    scene: Scene
    edit: Edit
    instruction: str
    image: np.ndarray = field(repr=False)  # uint8 (R, R, 3): render(scene)
    target: np.ndarray = field(repr=False)  # uint8 (R, R, 3): render(apply(scene, edit)), the oracle target

    @property
    def kind(self) -> str:
        """The edit's kind, one of EDIT_KINDS."""
        return self.edit.kind

    @property
    def edited_scene(self) -> Scene:
        return apply(self.scene, self.edit)

    @property
    def caption(self) -> str:
        """The input's canonical caption, position included."""
        return caption(self.scene, with_position=True)

    @property
    def edited_caption(self) -> str:
        """The target's canonical caption, position included (what SDEdit is given)."""
        return caption(self.edited_scene, with_position=True)


def scene_key(scene: Scene) -> SceneKey:
    """What a positioned caption says about a scene: its four attributes and its region."""
    return scene.shape, scene.color, scene.background, scene.size, scene.hpos, scene.vpos


def caption_keys(captions: Iterable[str]) -> set[SceneKey]:
    """The scene keys named by captions that name a position. A caption without one says nothing
    about where the object is, so it describes no particular scene and excludes none (counting
    it would exclude almost every scene: the toy training set names all 144 attribute
    combinations); a text that is not a world caption is skipped."""
    keys = set()
    for text in captions:
        try:
            a = parse_caption(text)
        except CaptionParseError:
            continue
        if a["hpos"] is not None:
            keys.add((a["shape"], a["color"], a["background"], a["size"], a["hpos"], a["vpos"]))
    return keys  # type: ignore[return-value]


def training_captions(folder: str | Path, columns: Sequence[str] = TRAINING_CAPTION_COLUMNS) -> set[str]:
    """The distinct captions of a dataset folder's shards: its input captions and, by default, its
    edited captions too (an edited image is a training image as well)."""
    from ip2p_lib.dataset.shards import read_table

    table = read_table(folder, columns=list(columns))
    return {str(text) for column in columns for text in table[column].dropna()}


def heldout_cases(
    n: int = 500,
    seed: int = 0,
    kinds: Sequence[str] = EDIT_KINDS,
    exclude_captions: Iterable[str] | None = None,
    resolution: int = 64,
    max_draws: int = 1000,
) -> list[EditCase]:
    """`n` cases, kinds in turn (kinds[i % len(kinds)]: n / len(kinds) each, the first kinds one
    more when it does not divide), the same list for the same arguments.

    Each scene is drawn uniformly, again while a caption of `exclude_captions` describes it (see
    `caption_keys`; at most `max_draws` tries per case); its edit is uniform over the edits of the
    kind that change it; its instruction a `heldout` phrasing, never one the training set uses."""
    unknown = [k for k in kinds if k not in EDIT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown edit kinds {unknown}; the world's kinds are {', '.join(EDIT_KINDS)}")
    seen = caption_keys(exclude_captions or ())
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        for _ in range(max_draws):
            scene = sample_scene(rng)
            if scene_key(scene) not in seen:
                break
        else:
            raise ValueError(f"no unexcluded scene in {max_draws} draws: the excluded captions cover the world")
        options = possible_edits(scene, kinds[i % len(kinds)])
        edit = options[int(rng.integers(len(options)))]
        text = instruction(edit, scene, rng, split="heldout")
        cases.append(EditCase(scene, edit, text, render(scene, resolution), render(apply(scene, edit), resolution)))
    return cases


# ---------------------------------------------------------------- the report
@dataclass
class EvalReport:
    """Per-case verdicts of one editor on a list of cases, with rates per kind.

    `target_l1`: mean |output - oracle target| in [0, 1], per case. `edit_seconds`: time spent
    inside the editor (judging excluded). `outputs`: the edited images, uint8 (N, H, W, 3)."""

    name: str
    kinds: list[str]
    edit_success: np.ndarray  # bool (N,)
    preserved: np.ndarray  # bool (N,)
    target_l1: np.ndarray  # float (N,)
    settings: dict[str, Any] = field(default_factory=dict)
    edit_seconds: float = 0.0
    outputs: np.ndarray | None = field(default=None, repr=False)

    @property
    def success(self) -> np.ndarray:
        """Edit made and everything else kept, per case."""
        return self.edit_success & self.preserved

    @property
    def n(self) -> int:
        return len(self.kinds)

    def groups(self) -> dict[str, list[str]]:
        """Group name -> its kinds: each kind present, `targets` (TARGET_KINDS present), `all`."""
        present = [k for k in EDIT_KINDS if k in self.kinds]
        out = {k: [k] for k in present}
        targets = [k for k in TARGET_KINDS if k in present]
        if targets and targets != present:
            out["targets"] = targets
        out["all"] = present
        return out

    def rates(self, kinds: Sequence[str] | None = None) -> dict[str, float]:
        """`n` and the mean of each verdict (and of `target_l1`) over the cases of `kinds` (all by default)."""
        mask = np.isin(self.kinds, list(kinds) if kinds is not None else self.kinds)
        out: dict[str, float] = {"n": int(mask.sum())}
        for name in RATES:
            out[name] = float(getattr(self, name)[mask].mean()) if mask.any() else float("nan")
        out["target_l1"] = float(self.target_l1[mask].mean()) if mask.any() else float("nan")
        return out

    def by_group(self) -> dict[str, dict[str, float]]:
        """`rates` of every group of `groups`."""
        return {name: self.rates(kinds) for name, kinds in self.groups().items()}

    def meets_targets(self) -> bool:
        """Edit success and preservation over TARGET_KINDS at or above TARGETS."""
        r = self.rates([k for k in TARGET_KINDS if k in self.kinds])
        return all(r[name] >= bar for name, bar in TARGETS.items())

    def to_dict(self, per_case: bool = False) -> dict[str, Any]:
        """A JSON-ready summary; `per_case` adds the verdict lists."""
        out: dict[str, Any] = {
            "name": self.name, "n": self.n, "settings": self.settings, "edit_seconds": self.edit_seconds,
            "seconds_per_edit": self.edit_seconds / max(self.n, 1), "rates": self.by_group(),
            "meets_targets": self.meets_targets(),
        }
        if per_case:
            out["cases"] = {"kind": list(self.kinds), "edit_success": self.edit_success.tolist(),
                            "preserved": self.preserved.tolist(), "target_l1": self.target_l1.tolist()}
        return out

    def table(self) -> str:
        """A markdown table: one row per group, columns n and the three rates in %."""
        lines = ["| kinds | n | edit success | preserved | success |", "|---|---|---|---|---|"]
        for name, r in self.by_group().items():
            lines.append(f"| {name} | {r['n']} | " + " | ".join(f"{100 * r[k]:.1f}" for k in RATES) + " |")
        return "\n".join(lines)


def markdown_table(reports: Sequence[EvalReport | dict[str, Any]]) -> str:
    """One row per report, one column per kind group: "edit success / preserved / success" in %.

    A report is an `EvalReport` or its `to_dict()` (as `benchmarks/ip2p_quality.py` saves it)."""
    rows = [(r["name"], r["rates"]) if isinstance(r, dict) else (r.name, r.by_group()) for r in reports]
    groups = list(dict.fromkeys(g for _, rates in rows for g in rates))
    lines = ["| editor | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for name, rates in rows:
        cells = [" / ".join(f"{100 * rates[g][k]:.0f}" for k in RATES) if g in rates else "" for g in groups]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\ncells: edit success / preserved / success, % of cases"


# ---------------------------------------------------------------- running an editor
def editor_fn(editor: Any, s_T: float = 7.5, s_I: float = 1.5, steps: int = 20, **edit_kwargs: Any) -> EditFn:
    """An `EditFn` from an `InstructPix2PixEditor` (anything with its `edit_batch`): one batched
    call per batch of cases, the case's seed for each; `edit_kwargs` go to `edit_batch`."""

    from PIL import Image

    def run(batch: Sequence[EditCase], seeds: Sequence[int]) -> list[np.ndarray]:
        pictures = [Image.fromarray(c.image) for c in batch]
        results = editor.edit_batch(pictures, [c.instruction for c in batch], steps=steps,
                                    s_text=s_T, s_image=s_I, seeds=list(seeds), **edit_kwargs)
        return [np.asarray(r.image) for r in results]  # the 8-bit pictures, what `ip2p edit` saves

    return run


def to_uint8(image: Any) -> np.ndarray:
    """uint8 (H, W, 3) from a PIL image, a uint8 array, or a float array in [0, 1]."""
    return np.rint(as_rgb_array(image)).astype(np.uint8)


def evaluate_edits(
    editor_or_fn: Any,
    cases: Sequence[EditCase],
    s_T: float = 7.5,
    s_I: float = 1.5,
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 16,
    name: str = "editor",
    settings: Mapping[str, Any] | None = None,
    progress: bool = False,
    **edit_kwargs: Any,
) -> EvalReport:
    """Edit every case, `batch_size` at a time, and judge each output against its case.

    `editor_or_fn`: an `InstructPix2PixEditor` (run with `s_T`, `s_I`, `steps`, `edit_kwargs`;
    see `editor_fn`) or an `EditFn`. Case i gets seed `seed + i`, whatever the batching."""
    from tqdm.auto import tqdm

    if hasattr(editor_or_fn, "edit_batch"):
        fn = editor_fn(editor_or_fn, s_T=s_T, s_I=s_I, steps=steps, **edit_kwargs)
        settings = {"s_T": s_T, "s_I": s_I, "steps": steps, **edit_kwargs, **(settings or {})}
    else:
        fn = editor_or_fn
    outputs: list[np.ndarray] = []
    seconds = 0.0
    for start in tqdm(range(0, len(cases), batch_size), desc=name, disable=not progress, leave=False):
        batch = cases[start:start + batch_size]
        t0 = time.perf_counter()
        images = fn(batch, [seed + start + j for j in range(len(batch))])
        seconds += time.perf_counter() - t0
        if len(images) != len(batch):
            raise ValueError(f"the editor returned {len(images)} images for {len(batch)} cases")
        outputs.extend(to_uint8(im) for im in images)

    return judge_outputs(cases, outputs, name=name, settings={"seed": seed, "batch_size": batch_size, **(settings or {})},
                         edit_seconds=seconds)


def judge_outputs(cases: Sequence[EditCase], outputs: Sequence[Any], name: str = "editor",
                  settings: Mapping[str, Any] | None = None, edit_seconds: float = 0.0) -> EvalReport:
    """The oracle's verdicts on outputs made elsewhere (one per case, in order): e.g. a guidance
    sweep edited in one batch (`ip2p_lib.results.sweep`)."""
    if len(outputs) != len(cases):
        raise ValueError(f"{len(outputs)} outputs for {len(cases)} cases")
    outputs = [to_uint8(o) for o in outputs]
    scores = [score_judgements(judge(case.image), judge(out), case.edit, out, case.scene)
              for case, out in zip(cases, outputs)]
    return EvalReport(
        name=name,
        kinds=[c.kind for c in cases],
        edit_success=np.array([s.changed for s in scores], dtype=bool),
        preserved=np.array([s.preserved for s in scores], dtype=bool),
        target_l1=np.array([s.target_l1 for s in scores], dtype=float),
        settings=dict(settings or {}),
        edit_seconds=edit_seconds,
        outputs=np.stack(outputs) if outputs and len({o.shape for o in outputs}) == 1 else None,
    )


# ---------------------------------------------------------------- baselines
def no_edit(cases: Sequence[EditCase]) -> EvalReport:
    """The input returned unchanged: edit success 0, preserved ~1 (the floor of any editor)."""
    return evaluate_edits(lambda batch, seeds: [c.image for c in batch], cases, name="no edit",
                          batch_size=max(len(cases), 1))


def oracle_target(cases: Sequence[EditCase]) -> EvalReport:
    """The ground-truth edited render: ~100% on every rate, or the judge is wrong."""
    return evaluate_edits(lambda batch, seeds: [c.target for c in batch], cases, name="oracle target",
                          batch_size=max(len(cases), 1))
