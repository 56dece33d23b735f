"""The hand-computable evaluation case: a white 4x4 patch on a black 16x16 image and a fixed-weight
model whose class-0 logit is ``C * 16 * mean(x)`` (``C`` for the patch, 0 without it), so the
deletion curves of a mask on the patch or off it can be computed on paper (tests/evaluation)."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from pipeline.models import Classifier
from pipeline.store import COLUMNS, MaskWriter
from tests.helpers.models import mean_colour_classifier

C = 3.0
P_FULL = math.exp(C) / (math.exp(C) + 9)


def patch_classifier() -> Classifier:
    """Mean-pool then a fixed linear layer: logit 0 = C * 16 * mean over pixels and channels."""
    weight = torch.zeros(10, 3)
    weight[0] = 16 * C / 3
    return mean_colour_classifier(weight)


def save_png(path, array01: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.asarray(array01) * 255).round().astype(np.uint8)).save(path)


def patch_image() -> np.ndarray:
    """16x16 RGB, black with a white patch at rows 4..7, cols 4..7."""
    image = np.zeros((16, 16, 3))
    image[4:8, 4:8] = 1.0
    return image


def write_store(path, rows: list[dict], masks: np.ndarray, config: dict | None = None, source="."):
    """A store by hand: every COLUMNS entry per row (defaults filled), masks ``(n, 1, h, w)``."""
    defaults = {"height": 16, "width": 16, "label": 0, "target": 0, "status": "ok", "reason": "",
                "p_original": 0.5, "p_perturbed": 0.1, "p_final": 0.2, "loss": 0.3, "area": 0.25,
                "tv": 0.01}
    full = [{**defaults, "index": i, **row} for i, row in enumerate(rows)]
    columns = {name: [r[name] for r in full] for name in [*COLUMNS, "area", "tv"]}
    config = config or {"baseline": "hand", "model": "tiny"}
    with MaskWriter(path, config, "tiny", source, masks.shape[1:], input_size=(16, 16)) as writer:
        writer.append(columns, masks)


def deletion_case(tmp_path):
    """Two images with the same patch: mask A marks the patch salient, mask B everything else;
    plus a row skipped in the store and an ok row whose file has disappeared since."""
    root = tmp_path / "data"
    save_png(root / "n00000000/a.png", patch_image())
    save_png(root / "n00000000/b.png", patch_image())
    good, bad = np.ones((1, 16, 16)), np.zeros((1, 16, 16))
    good[0, 4:8, 4:8], bad[0, 4:8, 4:8] = 0.0, 1.0  # 1 = keep, 0 = perturbed (salient)
    rows = [{"path": "n00000000/a.png"}, {"path": "n00000000/b.png"},
            {"path": "n00000000/skipped.png", "status": "skipped", "reason": "truncated"},
            {"path": "n00000000/gone.png"}]
    store = tmp_path / "store.h5"
    write_store(store, rows, np.stack([good, bad, good, good]).astype(np.float32), source=root)
    return store, root
