"""§3.1.2 The four CLIP similarities of a generated pair, and the filter that keeps good pairs."""

from ip2p_lib.filtering.filter import AUTHORS_CODE, PAPER, PRESETS, TOY, Thresholds, passes, select, thresholds_for
from ip2p_lib.filtering.scores import SCORE_NAMES, ClipScorer, as_unit_images, similarities

__all__ = ["AUTHORS_CODE", "PAPER", "PRESETS", "SCORE_NAMES", "ClipScorer", "TOY", "Thresholds", "as_unit_images",
           "passes", "select", "similarities", "thresholds_for"]
