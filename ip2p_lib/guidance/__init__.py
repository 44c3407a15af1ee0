"""§3.2.1 Classifier-free guidance over two conditionings (notebook 06_dual_guidance).

- `cfg`: Eq. 3, the other conditioning order, and when the three branches are evaluated;
- `dropout`: the conditioning dropout that lets one network give all three branches (§3.2);
- `world2d`: a 2-D world whose scores are closed form, to check Eq. 3 exactly (App. B).
"""

from ip2p_lib.guidance.cfg import (
    GUIDANCE_RULES,
    PAPER_IMAGE_GUIDANCE,
    PAPER_STEPS,
    PAPER_TEXT_GUIDANCE,
    dual_cfg,
    dual_cfg_text_first,
    uses_all_branches,
)
from ip2p_lib.guidance.dropout import conditioning_dropout

__all__ = ["GUIDANCE_RULES", "PAPER_IMAGE_GUIDANCE", "PAPER_STEPS", "PAPER_TEXT_GUIDANCE", "conditioning_dropout",
           "dual_cfg", "dual_cfg_text_first", "uses_all_branches"]
