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


# A hand-drawn box around the cat of skimage's chelsea (451 x 300 pixels), so that the demo's
# report has localisation and pointing games to show; the other pictures have no box.
_DEMO_BOXES = {"chelsea": ("n02124075", 451, 300, (80, 20, 400, 299))}


def make_demo_boxes(folder: str | Path) -> Path:
    """Write VOC XML boxes for the demo images that have one (``folder/<name>.xml``); returns ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (wnid, width, height, (x0, y0, x1, y1)) in _DEMO_BOXES.items():
        (folder / f"{name}.xml").write_text(
            f"<annotation><size><width>{width}</width><height>{height}</height></size><object><name>{wnid}</name>"
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
            "</annotation>\n")
    return folder
