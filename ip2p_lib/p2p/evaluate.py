"""Judging generated pairs with the miniature world's oracle: did image 1 make the edit that the
caption pair asks for, and keep everything else of image 0?"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ip2p_lib.toyworld import CaptionParseError, Edit, parse_caption

ATTRIBUTE_KIND = {"color": "recolor", "shape": "reshape", "background": "background", "size": "resize"}


def edit_from_captions(caption_0: str, caption_1: str) -> Edit | None:
    """The one edit between two world captions, or None (unparseable, no change, or several).

    A position named in caption 1 and different from caption 0's (or absent there) is a move."""
    try:
        a, b = parse_caption(caption_0), parse_caption(caption_1)
    except CaptionParseError:
        return None
    edits = [Edit(ATTRIBUTE_KIND[k], str(b[k])) for k in ATTRIBUTE_KIND if a[k] != b[k]]
    if b["hpos"] is not None and (a["hpos"], a["vpos"]) != (b["hpos"], b["vpos"]):
        edits.append(Edit("move", f"{b['hpos']}/{b['vpos']}"))
    return edits[0] if len(edits) == 1 else None


def oracle_verdicts(image_0: np.ndarray, image_1: np.ndarray, caption_0: Sequence[str],
                    caption_1: Sequence[str]) -> dict[str, np.ndarray]:
    """Per pair: `kind` (the captions' edit kind, "" if none), `changed`, `preserved`, `success`
    (both), whether image 0 shows what caption 0 says (`faithful_0`), and `drift`, how far the
    object moved (the larger of |du|, |dv|, as fractions of the image; NaN without an object).
    Each image is judged once."""
    from ip2p_lib.toyworld import judge
    from ip2p_lib.toyworld.oracle import score_judgements

    out: dict[str, list[Any]] = {"kind": [], "changed": [], "preserved": [], "success": [], "faithful_0": [],
                                 "drift": []}
    for a, b, c0, c1 in zip(image_0, image_1, caption_0, caption_1):
        edit = edit_from_captions(c0, c1)
        j0, j1 = judge(a), judge(b)
        out["drift"].append(max(abs(j0.u - j1.u), abs(j0.v - j1.v)) if j0.found and j1.found else np.nan)
        if edit is None:
            for key, value in (("kind", ""), ("changed", False), ("preserved", False), ("success", False),
                               ("faithful_0", False)):
                out[key].append(value)
            continue
        score = score_judgements(j0, j1, edit)
        said, seen = parse_caption(c0), j0.attributes()
        out["kind"].append(edit.kind)
        out["changed"].append(score.changed)
        out["preserved"].append(score.preserved)
        out["success"].append(score.success)
        out["faithful_0"].append(all(seen.get(k) == said[k] for k in ("shape", "color", "background", "size")))
    return {k: np.asarray(v) for k, v in out.items()}
