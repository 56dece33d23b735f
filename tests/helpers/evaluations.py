"""Evaluation output folders written by hand (what ``evaluate_store`` writes, with made-up numbers)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd


def write_run(folder, table: pd.DataFrame, step: int = 1792, curves: bool = True):
    """An evaluate_store-like output folder with per_image.parquet, summary.json and curves.npz."""
    folder.mkdir(parents=True)
    table.to_parquet(folder / "per_image.parquet", index=False)
    (folder / "summary.json").write_text(json.dumps({"settings": {"step": step, "model": "m"}}))
    if curves:
        n = int((table["eval_status"] == "ok").sum())
        fraction = np.linspace(0, 1, 5)
        np.savez(folder / "curves.npz", fraction=fraction, deletion_zero=np.tile(1 - fraction, (n, 1)),
                 deletion_blur=np.tile(1 - fraction, (n, 1)), insertion=np.tile(fraction, (n, 1)))
    return folder


def base_table(n: int = 12, seed: int = 0) -> pd.DataFrame:
    """``n`` evaluated images with random metric values from ``seed``."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "path": [f"n0/img{i}.png" for i in range(n)], "eval_status": ["ok"] * n,
        "deletion_auc_zero": rng.uniform(0, 0.5, n), "deletion_auc_blur": rng.uniform(0, 0.5, n),
        "insertion_auc": rng.uniform(0.3, 0.9, n),
        "loc_value_0.1_tight": rng.integers(0, 2, n).astype(float),
        "pointing_hit": rng.integers(0, 2, n).astype(float), "energy_pg": rng.uniform(0, 1, n),
        "p_final": rng.uniform(0, 1, n), "area": rng.uniform(0, 1, n),
    })
