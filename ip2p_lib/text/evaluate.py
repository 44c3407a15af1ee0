"""The miniature world judges a generated triple exactly (what no one can do for LAION).

For each (caption, completion) the judge asks, in order:

1. well-formed: the completion splits into exactly 2 parts on "\\n%%\\n";
2. parses: the edited caption is a caption of the world (`parse_caption`);
3. consistent: the edit the instruction names is the edit between the two captions.
   The instruction's edit is read from its words with the world's vocabulary
   (`instruction_edit`); the captions' difference from `parse_caption` of both. They agree
   when exactly the attributes of that edit kind changed, to the instruction's target value.

Diversity counts distinct instructions per edit kind, and distinct *templates* (the
instruction with its colour / shape / background / position words replaced by slots), which
shows whether the model invents wordings beyond the seed set.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from ip2p_lib.text.format import parse_completion
from ip2p_lib.toyworld import BACKGROUNDS, COLORS, EDIT_KINDS, SHAPES, CaptionParseError, Edit, parse_caption
from ip2p_lib.toyworld.captions import words_of
from ip2p_lib.toyworld.edits import EDITED_ATTRIBUTES

# Words that name a size change, by the size they ask for.
SIZE_CHANGE_WORDS: Mapping[str, str] = {
    **dict.fromkeys(("bigger", "larger", "large", "big", "enlarge", "grow", "up", "increase", "huge", "double"), "large"),
    **dict.fromkeys(("smaller", "small", "shrink", "tiny", "down", "reduce", "decrease", "little", "halve"), "small"),
}
POSITION_WORDS = ("left", "right", "top", "bottom", "center", "middle")
SCENE_ATTRIBUTES = ("shape", "color", "background", "size")


def instruction_edit(text: str, source: Mapping[str, str | None]) -> tuple[Edit | None, str]:
    """The edit an instruction asks for on a scene with attributes `source`, and why.

    Evidence per kind: a colour word other than the current colour (recolor), a shape word
    other than the current shape (reshape), a background colour other than the current one
    (background), a size word asking for the other size (resize: "it is too big, make it
    smaller" names "big" too), a position word (move). Exactly one kind with one
    target must have evidence; otherwise the edit is unclear and the answer is None."""
    words = words_of(text)
    found: dict[str, set[str]] = defaultdict(set)
    for w in words:
        if w in COLORS and w != source["color"]:
            found["recolor"].add(w)
        if w in SHAPES and w != source["shape"]:
            found["reshape"].add(w)
        if w in BACKGROUNDS and w != source["background"]:
            found["background"].add(w)
        if w in SIZE_CHANGE_WORDS and SIZE_CHANGE_WORDS[w] != source["size"]:
            found["resize"].add(SIZE_CHANGE_WORDS[w])
    horizontal = {w for w in words if w in ("left", "right")}
    vertical = {w for w in words if w in ("top", "bottom")}
    if horizontal or vertical or any(w in ("center", "middle") for w in words):
        if len(horizontal) > 1 or len(vertical) > 1:
            return None, "contradictory position words"
        h = next(iter(horizontal), "center")
        v = next(iter(vertical), "middle")
        found["move"].add(f"{h}/{v}")
    if not found:
        return None, "names no change"
    if len(found) > 1:
        return None, f"names several kinds of change ({', '.join(sorted(found))})"
    kind, targets = next(iter(found.items()))
    if len(targets) > 1:
        return None, f"names several {kind} targets ({', '.join(sorted(targets))})"
    return Edit(kind, next(iter(targets))), "ok"


def caption_difference(before: Mapping[str, str | None], after: Mapping[str, str | None]) -> dict[str, tuple]:
    """Attributes that differ between two parsed captions: name -> (before, after).

    A caption names a position only sometimes, so dropping the position phrase is no change;
    naming a position the input did not name, or another one, is a change (for a move, the
    one asked for; otherwise an invented fact about the image)."""
    diff = {a: (before[a], after[a]) for a in SCENE_ATTRIBUTES if before[a] != after[a]}
    if after["hpos"] is not None and (before["hpos"], before["vpos"]) != (after["hpos"], after["vpos"]):
        diff["position"] = ((before["hpos"], before["vpos"]), (after["hpos"], after["vpos"]))
    return diff


@dataclass(frozen=True)
class TripleJudgement:
    """The world's verdict on one generated triple."""

    well_formed: bool
    parses: bool
    consistent: bool
    kind: str | None  # the instruction's edit kind, when it names one clearly
    instruction: str | None
    reason: str


def _expected_difference(edit: Edit) -> dict[str, object]:
    if edit.kind == "move":
        return {"position": edit.region}
    (attribute,) = EDITED_ATTRIBUTES[edit.kind]
    return {attribute: edit.value}


def judge_triple(caption: str, completion: str | None) -> TripleJudgement:
    """Judge the completion a model wrote for `caption` (see the module docstring)."""
    parts = parse_completion(completion)
    if parts is None:
        return TripleJudgement(False, False, False, None, None, "does not split into instruction and caption")
    text, edited = parts
    try:
        before = parse_caption(caption)
    except CaptionParseError as err:
        raise ValueError(f"the input is not a caption of the world: {err}") from None
    try:
        after = parse_caption(edited)
    except CaptionParseError as err:
        return TripleJudgement(True, False, False, None, text, f"edited caption: {err}")
    edit, why = instruction_edit(text, before)
    if edit is None:
        return TripleJudgement(True, True, False, None, text, f"instruction {why}")
    diff = caption_difference(before, after)
    expected = _expected_difference(edit)
    got = {a: d[1] for a, d in diff.items()}
    if got != expected:
        return TripleJudgement(True, True, False, edit.kind, text, f"instruction asks {expected}, captions change {got or 'nothing'}")
    return TripleJudgement(True, True, True, edit.kind, text, "ok")


def instruction_template(text: str) -> str:
    """An instruction with its world values replaced by slots ("make the {shape} {color}")."""
    out = []
    for w in re.findall(r"[a-z']+|[^a-z'\s]", text.lower()):
        if w in SHAPES:
            w = "{shape}"
        elif w in COLORS:
            w = "{color}"
        elif w in BACKGROUNDS:
            w = "{bg}"
        elif w in POSITION_WORDS:
            w = "{pos}"
        out.append(w)
    return re.sub(r"(\{pos\} )+\{pos\}", "{pos}", " ".join(out)).strip(" .!")


def quality_table(judgements: Sequence[TripleJudgement], seed_instructions: Iterable[str] = ()) -> dict[str, float]:
    """Rates over all judged triples, plus diversity over the consistent ones.

    `seed_instructions` (the fine-tuning set's) lets the table count templates the model
    made up itself."""
    n = max(len(judgements), 1)
    seed_templates = {instruction_template(t) for t in seed_instructions}
    row: dict[str, float] = {
        "n": len(judgements),
        "well_formed": sum(j.well_formed for j in judgements) / n,
        "parses": sum(j.parses for j in judgements) / n,
        "consistent": sum(j.consistent for j in judgements) / n,
    }
    good = [j for j in judgements if j.consistent]
    for kind in EDIT_KINDS:
        mine = [j.instruction for j in good if j.kind == kind]
        row[f"distinct_{kind}"] = len(set(mine))
        row[f"templates_{kind}"] = len({instruction_template(t) for t in mine})
    templates = {instruction_template(j.instruction) for j in good}
    row["templates"] = len(templates)
    row["new_templates"] = len(templates - seed_templates) if seed_templates else float("nan")
    return row


def sample_and_judge(backend: object, captions: Sequence[str], settings: object = None) -> tuple[list[str | None], list[TripleJudgement]]:
    """One raw completion per caption (no filters, no retries) and the world's verdict on each:
    the model's own quality, before the paper's filters clean up after it."""
    from ip2p_lib.text.backends import SamplingSettings
    from ip2p_lib.text.format import make_prompt

    completions = backend.complete([make_prompt(c) for c in captions], settings or SamplingSettings())  # type: ignore[attr-defined]
    return completions, [judge_triple(c, o) for c, o in zip(captions, completions)]


def markdown_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] | None = None) -> str:
    """Rows of dicts as a Markdown table (floats in [0, 1] as percentages)."""
    columns = list(columns or rows[0].keys())

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.1%}" if 0.0 <= v <= 1.0 else f"{v:.3g}"
        return str(v).replace("\n", "⏎").replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
