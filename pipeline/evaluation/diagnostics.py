"""Run-level diagnostics read off a store's per-image table.

The main one is *perturbation strength*: a mask can only delete what its perturbation removes. If
the fully perturbed image still scores high (docs/method.md: jacobgil's blur keeps
EfficientNet-Lite0's cat at p = 0.48 of 0.77), the solver cannot succeed however long it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

WEAK_RATIO = 0.5
"""An image's perturbation is *weak* when ``p_perturbed >= WEAK_RATIO * p_original``."""


@dataclass(frozen=True)
class StrengthReport:
    """Share of images whose fully perturbed version keeps at least half the class score."""

    images: int
    weak: int
    mean_ratio: float

    @property
    def weak_share(self) -> float:
        return self.weak / self.images if self.images else float("nan")

    def line(self) -> str:
        text = (f"perturbation strength: {self.weak} of {self.images} images ({100 * self.weak_share:.0f}%) keep "
                f">= {WEAK_RATIO:.0%} of their class score when fully perturbed (mean p_perturbed/p_original "
                f"{self.mean_ratio:.2f})")
        if self.images and self.weak_share >= 0.25:
            text += "; WARNING: this perturbation is too weak for this model, masks cannot delete the class"
        return text


def perturbation_strength(table: pd.DataFrame) -> StrengthReport:
    """Strength report over the ``ok`` rows of a store table with ``p_original``/``p_perturbed``."""
    ok = table[table["status"] == "ok"]
    ok = ok[ok["p_perturbed"].notna() & (ok["p_original"] > 0)]
    ratio = ok["p_perturbed"] / ok["p_original"]
    return StrengthReport(images=len(ok), weak=int((ratio >= WEAK_RATIO).sum()),
                          mean_ratio=float(ratio.mean()) if len(ok) else float("nan"))
