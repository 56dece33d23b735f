"""The paper's localisation protocol: each threshold method's alpha is chosen on held-out
(calibration) images and the localisation error is reported on the others (Fong & Vedaldi 2017,
Table 1). Works on the per-image ``loc_<method>_<alpha>_<kind>`` columns of an evaluation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from pathlib import PurePosixPath
from typing import Collection, Iterable, Sequence

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError


__all__ = ["CALIBRATION_ALPHAS", "HeldOutChoice", "loc_columns", "split_calibration", "held_out_localization"]


def _grid(start: float, stop: float, step: float) -> tuple[float, ...]:
    return tuple(round(start + i * step, 4) for i in range(int(round((stop - start) / step)) + 1))


CALIBRATION_ALPHAS: dict[str, tuple[float, ...]] = {
    "value": _grid(0.0, 0.95, 0.05),
    "energy": _grid(0.05, 0.95, 0.05) + (0.99,),
    "mean": _grid(0.0, 3.0, 0.25) + (3.5, 4.0, 5.0, 6.0, 8.0, 10.0),
}
"""The thresholds tried per method when alpha is chosen on held-out images (they include the
paper's 0.10 / 0.95 / 0.5). Gradient heatmaps are heavy-tailed, hence the long ``mean`` range."""

_LOC_COLUMN = re.compile(r"^loc_(value|energy|mean)_(.+)_(tight|component)$")


def loc_columns(columns: Iterable[str]) -> dict[tuple[str, str], list[tuple[float, str]]]:
    """The per-alpha localisation columns of a per-image table, grouped.

    Args:
        columns: column names; those named ``loc_<method>_<alpha>_<kind>`` (as
            :func:`pipeline.evaluation.evaluate_store` writes them: 1.0 correct, 0.0 wrong, NaN not
            localised) are kept.

    Returns:
        ``{(method, box_kind): [(alpha, column), ...]}``, alphas ascending.
    """
    groups: dict[tuple[str, str], list[tuple[float, str]]] = {}
    for column in columns:
        match = _LOC_COLUMN.match(str(column))
        if match is None:
            continue
        try:
            alpha = float(match.group(2))
        except ValueError:
            continue
        groups.setdefault((match.group(1), match.group(3)), []).append((alpha, str(column)))
    return {key: sorted(value) for key, value in groups.items()}


def _unit_hash(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by ``(seed, key)`` alone (SHA-256), the same on every machine."""
    digest = hashlib.sha256(f"{int(seed)}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_calibration(keys: Sequence[str], split: float | Collection[str], seed: int = 0) -> np.ndarray:
    """Which images choose the thresholds (calibration); the others are scored with them (test).

    Args:
        keys: ``(N,)`` image identifiers, normally the per-image table's ``path`` column.
        split: a fraction in ``(0, 1)``: each image is a calibration image when a hash of
            ``(seed, key)`` falls below it, so an image's side depends on nothing but its own key
            and jacobgil's script (two runs over the same images, or one with a few images more, put every
            shared image on the same side; the calibration share is the fraction only on
            average). Or a collection of image keys, paths or file stems: exactly those images.
        seed: varies the fractional split.

    Returns:
        ``(N,)`` bool, True = calibration.
    """
    keys = [str(k) for k in keys]
    if isinstance(split, (int, float, np.number)) and not isinstance(split, bool):
        if not (math.isfinite(split) and 0 < split < 1):
            raise ConfigError(f"the alpha split fraction must lie strictly between 0 and 1; got {split!r}")
        return np.array([_unit_hash(seed, k) < split for k in keys], dtype=bool)
    if isinstance(split, str):
        raise ConfigError(f"the alpha split must be a fraction or a collection of image paths; got {split!r}")
    chosen = {str(s) for s in split}
    return np.array([k in chosen or PurePosixPath(k).stem in chosen or PurePosixPath(k).name in chosen
                     for k in keys], dtype=bool)


@dataclasses.dataclass(frozen=True)
class HeldOutChoice:
    """The threshold chosen for one (method, box kind) on the calibration images, and its result
    on the test images. Errors are ``1 - accuracy`` (IoU >= 0.5 counts as correct)."""

    method: str
    box_kind: str
    alpha: float
    """The alpha with the lowest calibration error (ties: the smallest alpha)."""
    calibration_error: float
    calibration_n: int
    test_error: float
    """Localisation error on the test images at ``alpha``: the number to report."""
    test_n: int
    alphas_tried: tuple[float, ...]


def held_out_localization(table: pd.DataFrame, calibration: np.ndarray
                          ) -> tuple[list[HeldOutChoice], pd.DataFrame]:
    """Fong & Vedaldi's protocol on a per-image table: choose alpha per threshold method and box
    kind on the calibration images, report the error on the others.

    Args:
        table: ``(N, ...)`` per-image table with ``loc_<method>_<alpha>_<kind>`` columns (1.0 /
            0.0 / NaN, see :func:`loc_columns`). Rows with NaN in any of them were not localised
            and take no part.
        calibration: ``(N,)`` bool from :func:`split_calibration`.

    Returns:
        One :class:`HeldOutChoice` per (method, box kind), in value, energy, mean order; and a
        frame of ``N`` rows (the table's index) with ``alpha_split`` ("calibration", "test", or
        missing for rows not localised) and ``locerr_<method>_<kind>``: 1.0 wrong / 0.0 correct at
        the chosen alpha on test rows, NaN elsewhere.

    Raises:
        ConfigError: no localisation columns, or a side of the split without localised images.
    """
    calibration = np.asarray(calibration, dtype=bool)
    if calibration.shape != (len(table),):
        raise ConfigError(f"calibration must be a bool array of shape ({len(table)},); got {calibration.shape}")
    groups = loc_columns(table.columns)
    if not groups:
        raise ConfigError("the table has no loc_<method>_<alpha>_<kind> columns; evaluate with boxes first")
    every = [column for pairs in groups.values() for _, column in pairs]
    values = table[every].apply(pd.to_numeric, errors="coerce")
    located = values.notna().all(axis=1).to_numpy()
    calib, test = located & calibration, located & ~calibration
    if not calib.any() or not test.any():
        raise ConfigError(f"the alpha split leaves {int(calib.sum())} calibration and {int(test.sum())} test "
                          f"images among {int(located.sum())} localised ones; both need at least one (change "
                          "the fraction, its seed, or the list)")
    side = np.where(calib, "calibration", np.where(test, "test", None))
    columns: dict[str, np.ndarray] = {"alpha_split": side}
    order = {"value": 0, "energy": 1, "mean": 2}
    choices = []
    for method, kind in sorted(groups, key=lambda g: (order[g[0]], g[1] != "tight")):
        pairs = groups[(method, kind)]
        errors = [1.0 - float(values.loc[calib, column].mean()) for _, column in pairs]
        best = int(np.argmin(errors))  # argmin takes the first minimum: the smallest alpha
        alpha, column = pairs[best]
        wrong = 1.0 - values[column].to_numpy(np.float64)
        columns[f"locerr_{method}_{kind}"] = np.where(test, wrong, np.nan)
        choices.append(HeldOutChoice(method, kind, alpha, errors[best], int(calib.sum()),
                                     float(wrong[test].mean()), int(test.sum()), tuple(a for a, _ in pairs)))
    return choices, pd.DataFrame(columns, index=table.index)
