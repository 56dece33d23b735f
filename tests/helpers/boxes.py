"""Ground-truth boxes written as ImageNet / PASCAL VOC annotation files."""

from __future__ import annotations

from pathlib import Path

CHELSEA_BOX = ("n02124075", 80, 20, 400, 299)
"""scikit-image's chelsea is 451 x 300; the cat's face roughly fills the middle of the picture."""


def voc_xml(width, height, objects) -> str:
    """An ImageNet-style annotation with one <object> per (wnid, xmin, ymin, xmax, ymax)."""
    objs = "".join(
        f"<object><name>{w}</name><pose>Unspecified</pose><truncated>0</truncated>"
        f"<difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for w, a, b, c, d in objects
    )
    return (
        "<annotation><folder>val</folder><filename>x</filename>"
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>"
        f"<segmented>0</segmented>{objs}</annotation>"
    )


def write_chelsea_box(folder: Path) -> Path:
    """``folder/chelsea.xml``: the box of :data:`CHELSEA_BOX` (``folder`` is created); returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chelsea.xml").write_text(voc_xml(451, 300, [CHELSEA_BOX]))
    return folder
