"""The authors' fine-tuning format and the paper's text filters, in one place.

One training example is a prompt and a completion (the authors' `prepare_for_gpt.py`):

    prompt     = input  + "\\n##\\n"
    completion = edit   + "\\n%%\\n" + output + "\\nEND"

At generation time the model sees only the prompt and is stopped at "\\nEND", so what comes
back is `edit + "\\n%%\\n" + output`; `parse_completion` splits it and the filters decide
whether the triple is kept.
"""

from __future__ import annotations

PROMPT_END = "\n##\n"  # ends the caption: "now write the edit"
EDIT_END = "\n%%\n"  # separates the instruction from the edited caption
STOP = "\nEND"  # ends the completion; generation stops here

# A triple on disk: JSON lines with these fields. The authors' generation script names the
# caption `caption`, their released files `input`; readers accept both (`infra.records` aliases).
TRIPLE_FIELDS: tuple[str, ...] = ("input", "edit", "output")
TRIPLE_ALIASES: dict[str, str] = {"caption": "input"}


def make_prompt(caption: str) -> str:
    """The prompt the model sees: the input caption and the `##` delimiter."""
    return caption + PROMPT_END


def make_completion(edit: str, output: str) -> str:
    """What the model learns to write after the prompt, stop sequence included."""
    return edit + EDIT_END + output + STOP


def parse_completion(text: str | None) -> tuple[str, str] | None:
    """(instruction, edited caption) from a completion (stop sequence already removed), or
    None unless it splits into exactly 2 parts on "\\n%%\\n" (the paper's first filter)."""
    if text is None:
        return None
    text = text.split(STOP)[0]  # tolerate a back end that returns the stop sequence too
    parts = text.split(EDIT_END)
    if len(parts) != 2:
        return None
    edit, output = parts
    return edit, output


def normalize_caption(text: str) -> str:
    """The paper's comparison key: strip(), strip(".!?"), lower()."""
    return text.strip().strip(".!?").lower()


def is_unchanged(caption: str, edited: str) -> bool:
    """True when the edited caption says the same as the input (the paper's second filter)."""
    return normalize_caption(caption) == normalize_caption(edited)
