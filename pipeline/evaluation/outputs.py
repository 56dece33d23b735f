"""The tables an evaluation writes: ``per_image`` (Parquet, CSV), ``summary`` (CSV, JSON) and
``curves.npz``. Its pictures are written by :mod:`.gallery`."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..names import display_name


def write_tables(out: Path, per_image: pd.DataFrame, summary: dict[str, Any],
                  curves: dict[str, Any]) -> dict[str, Path]:
    paths = {"per_image_parquet": out / "per_image.parquet", "per_image_csv": out / "per_image.csv",
             "summary_csv": out / "summary.csv", "summary_json": out / "summary.json",
             "curves_npz": out / "curves.npz"}
    # Text formats need valid text: a file name that is not UTF-8 is written escaped (pipeline.names).
    shown = per_image.assign(path=per_image["path"].map(display_name))
    shown.to_parquet(paths["per_image_parquet"], index=False)
    shown.to_csv(paths["per_image_csv"], index=False)
    rows = [{"metric": name, **values} for name, values in summary["metrics"].items()]
    pd.DataFrame(rows, columns=["metric", "mean", "sem", "count", "better"]).to_csv(paths["summary_csv"],
                                                                                   index=False)
    # NaN (no value) is written as null: strict JSON readers reject NaN.
    paths["summary_json"].write_text(json.dumps(_nan_to_none(summary), indent=2, default=_json_default) + "\n")
    np.savez_compressed(paths["curves_npz"], **{**curves, "path": np.asarray(
        [display_name(str(p)) for p in curves["path"]], dtype=str)})
    return paths

def _nan_to_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value

def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
