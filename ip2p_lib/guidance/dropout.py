"""§3.2 Conditioning dropout: one network learns all three branches of Eq. 3.

Training drops the text, the image, or both, for 5% of examples each, so that the same UNet
predicts e(z, c_I, c_T), e(z, c_I, 0) and e(z, 0, 0) at sampling time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch only for the hints: `ip2p --help` must not import torch
    import torch


def conditioning_dropout(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's dropout from one uniform r per example: text dropped if r < 0.10, image
    dropped if 0.05 <= r < 0.15; i.e. 5% text only, 5% both, 5% image only."""
    return r < 0.10, (r >= 0.05) & (r < 0.15)
