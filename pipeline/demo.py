"""The built-in demo: a small ImageNet-style folder made from pictures shipped with scikit-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

# (scikit-image picture, wnid folder or "unlabeled"): the labelled ones are ImageNet classes.
DEMO_IMAGES = (
    ("chelsea", "n02124075"),  # Egyptian cat
    ("coffee", "n07920052"),  # espresso
    ("rocket", "unlabeled"),
    ("astronaut", "unlabeled"),
    ("immunohistochemistry", "unlabeled"),
    ("hubble_deep_field", "unlabeled"),
    ("camera", "unlabeled"),  # greyscale
)


def make_demo_folder(root: str | Path) -> Path:
    """Write the demo images under ``root/<wnid>/<name>.png`` plus one corrupt file (to show that
    a bad image is recorded as skipped, not fatal); returns ``root``."""
    root = Path(root)
    for name, folder in DEMO_IMAGES:
        target = root / folder / f"{name}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.asarray(getattr(skimage.data, name)())).save(target)
    corrupt = root / "unlabeled" / "corrupt.jpg"
    if not corrupt.exists():
        corrupt.write_bytes(b"\xff\xd8\xff\xe0 this JPEG stops here")
    return root
