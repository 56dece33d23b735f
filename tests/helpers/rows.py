"""Store rows and masks made up by index, for the store tests and the writer processes they start.

Only numpy and ``pipeline.store`` (numpy, h5py): a child process that imports this starts in a
fraction of a second, without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import StoreError
from pipeline.store import MaskStore, MaskWriter

CONFIG = {"solver": {"iterations": 300, "lr": 0.1}, "perturbation": "blur", "size": (224, 224)}
SHAPE = (1, 28, 28)


def mask_of(index: int) -> np.ndarray:
    """A distinct, reproducible ``(1, 28, 28)`` mask in [0, 1] for each index."""
    return ((np.arange(28 * 28).reshape(SHAPE) + 7 * index) % 101 / 100.0).astype(np.float32)


def batch(indices, skipped=(), extras=("area",)) -> tuple[dict, np.ndarray]:
    """Rows and masks for ``indices``; those in ``skipped`` are skipped as truncated."""
    n = len(indices)
    status = ["skipped" if i in skipped else "ok" for i in indices]
    rows = {
        "index": np.asarray(indices, dtype=np.int64),
        "path": [f"n02124075/img_{i}.JPEG" for i in indices],
        "height": [100 + i for i in indices],
        "width": [200 + i for i in indices],
        "label": [285] * n,
        "target": [-1 if s == "skipped" else 281 for s in status],
        "status": status,
        "reason": ["truncated" if s == "skipped" else "" for s in status],
        "p_original": np.linspace(0.5, 0.9, n),
        "p_perturbed": np.full(n, 0.01),
        "p_final": np.full(n, 0.05),
        "loss": np.arange(n, dtype=np.float64) / 10,
    }
    for name in extras:
        rows[name] = np.asarray(indices, dtype=np.float32) / 1000
    return rows, np.stack([mask_of(i) for i in indices])


def open_writer(path, config=CONFIG, **kwargs) -> MaskWriter:
    """A writer of the store at ``path`` for :data:`CONFIG` (created, or resumed)."""
    return MaskWriter(path, config, "tf_efficientnet_lite0", "/data/val", **kwargs)


def write(path, batches, config=CONFIG, **kwargs) -> None:
    """Append each ``(rows, masks)`` of ``batches`` to the store at ``path`` and close it."""
    with open_writer(path, config, **kwargs) as writer:
        for rows, masks in batches:
            writer.append(rows, masks)


def killed(path, batches, **kwargs) -> None:
    """Append ``batches`` and stop as a killed writer would: without closing (so no fold), with
    the lock released (what the process's death does)."""
    writer = open_writer(path, **kwargs)
    for rows, masks in batches:
        writer.append(rows, masks)
    writer._release()


def committed_rows(path: Path) -> int:
    """Rows a running writer has committed (a store may be read while it is written); 0 before
    the writer has created the file."""
    try:
        with MaskStore(path) as store:
            return len(store)
    except StoreError:
        return 0
