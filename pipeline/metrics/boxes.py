"""Ground-truth boxes in the original image's pixel frame (docs/metrics.md).

Two sources: a folder of ImageNet / PASCAL VOC XML files (``bbox/<stem>.xml``) and Kaggle's
``LOC_val_solution.csv``. Both give ``(xmin, ymin, xmax, ymax)`` in the original image's pixels;
they are kept as they are: inclusive, 0-based (the ImageNet val XML boxes run from 0 up to
``width - 1``), the convention of :mod:`pipeline.metrics.localization`.
"""

from __future__ import annotations

import csv
import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError

__all__ = ["BoxRecord", "ImageBoxes", "read_voc_folder", "read_kaggle_csv", "load_boxes"]

BoxRecord = tuple[str, int, int, int, int]
"""``(wnid, xmin, ymin, xmax, ymax)``, inclusive pixel coordinates in the original image."""


@dataclasses.dataclass(frozen=True)
class ImageBoxes:
    """The ground-truth boxes of one image.

    Attributes:
        size: ``(width, height)`` of the original image as the XML's ``<size>`` states it (VOC
            order, **not** numpy's ``(H, W)``), or None where the source does not say (Kaggle CSV).
        boxes: every box of the image, all classes, in file order.
    """

    size: tuple[int, int] | None
    boxes: tuple[BoxRecord, ...]

    @property
    def wnids(self) -> frozenset[str]:
        """The classes that have at least one box in this image."""
        return frozenset(b[0] for b in self.boxes)

    def for_class(self, wnid: str) -> np.ndarray:
        """Boxes of class ``wnid``: ``(K, 4)`` int64 ``(xmin, ymin, xmax, ymax)``, ``K >= 0``."""
        rows = [b[1:] for b in self.boxes if b[0] == wnid]
        return np.array(rows, dtype=np.int64).reshape(-1, 4)


def _int(text: str | None, what: str, where: Path | str) -> int:
    """Parse a pixel coordinate; VOC files sometimes write ``"12.0"``."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {what} must be a number; got {text!r}") from None
    if not value.is_integer():
        raise ConfigError(f"{where}: {what} must be a whole pixel coordinate; got {text!r}")
    return int(value)


def _read_voc_file(path: Path) -> ImageBoxes:
    """Parse one VOC/ImageNet annotation file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ConfigError(f"{path}: not a readable XML annotation ({err})") from None
    size_el = root.find("size")
    size = None
    if size_el is not None:
        size = (
            _int(size_el.findtext("width"), "size/width", path),
            _int(size_el.findtext("height"), "size/height", path),
        )
    boxes = []
    for obj in root.iter("object"):
        name, box = obj.findtext("name"), obj.find("bndbox")
        if not name or box is None:
            raise ConfigError(f"{path}: every <object> needs a <name> and a <bndbox>")
        keys = ("xmin", "ymin", "xmax", "ymax")
        coords = [_int(box.findtext(k), f"bndbox/{k}", path) for k in keys]
        boxes.append((name.strip(), *coords))
    return ImageBoxes(size=size, boxes=tuple(boxes))


def read_voc_folder(folder: str | Path) -> dict[str, ImageBoxes]:
    """Read every ``*.xml`` in ``folder`` (not recursive).

    Returns:
        ``{stem: ImageBoxes}`` keyed by file stem (``"ILSVRC2012_val_00000001"``), sorted by stem.
        Images whose file has no ``<object>`` map to an empty ``boxes`` tuple.
    """
    folder = Path(folder)
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise ConfigError(f"boxes folder {str(folder)!r} holds no .xml annotation files")
    return {path.stem: _read_voc_file(path) for path in files}


def read_kaggle_csv(path: str | Path) -> dict[str, ImageBoxes]:
    """Read Kaggle's ``LOC_val_solution.csv``.

    Header ``ImageId,PredictionString``; each PredictionString is ``wnid xmin ymin xmax ymax``
    repeated, separated by spaces. Returns ``{ImageId: ImageBoxes}`` with ``size=None`` (the CSV
    does not give image sizes). A repeated ImageId raises :class:`ConfigError`.
    """
    path = Path(path)
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise ConfigError(
                f"{path}: first line must be 'ImageId,PredictionString'; got {header!r}"
            )
        result: dict[str, ImageBoxes] = {}
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            where = f"{path}:{line_no}"
            if len(row) != 2 or row[0] in result:
                raise ConfigError(f"{where}: expected one new 'ImageId,PredictionString' row")
            tokens = row[1].split()
            if len(tokens) % 5:
                raise ConfigError(
                    f"{where}: PredictionString must be groups of 'wnid xmin ymin xmax ymax'; "
                    f"got {len(tokens)} tokens"
                )
            boxes = tuple(
                (tokens[i], *(_int(t, "coordinate", where) for t in tokens[i + 1 : i + 5]))
                for i in range(0, len(tokens), 5)
            )
            result[row[0].strip()] = ImageBoxes(size=None, boxes=boxes)
    return result


def load_boxes(path: str | Path) -> dict[str, ImageBoxes]:
    """Read boxes from a VOC XML folder or a Kaggle ``.csv``, whichever ``path`` is."""
    path = Path(path)
    if path.is_dir():
        return read_voc_folder(path)
    if path.is_file() and path.suffix.lower() == ".csv":
        return read_kaggle_csv(path)
    raise ConfigError(
        f"boxes path {str(path)!r} must be a folder of VOC .xml files or a Kaggle "
        f"LOC_val_solution .csv file; it is "
        + ("neither" if path.exists() else "missing")
    )
