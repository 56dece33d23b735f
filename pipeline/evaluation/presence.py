"""Whether a store's images are still on disk, checked before an evaluation loads its model.

An evaluation re-reads every image it scores. When none of them, or most of them, are under the
image root, the metrics would be NaN over a handful of rows; that is a wrong folder, not a few lost
files, so it is refused with one message naming the folder looked in and the folder the store
recorded. A few missing files stay skipped rows (``eval_status`` "unreadable: missing").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ImageReadError
from ..store import STATUS_OK, MaskStore

__all__ = ["MISSING_SHARE", "ImagePresence", "check_images_present"]

#: More than this share of the rows to evaluate missing on disk stops the evaluation.
MISSING_SHARE = 0.5


@dataclass(frozen=True)
class ImagePresence:
    """The files an evaluation will read.

    Attributes:
        root: the image root looked in.
        recorded: the store's recorded source folder.
        wanted: ok rows to evaluate.
        missing: relative paths of those whose file does not exist under ``root``.
    """

    root: Path
    recorded: str
    wanted: int
    missing: tuple[str, ...]


def check_images_present(store: MaskStore, data_root: str | Path | None,
                         indices: Sequence[int] | None = None) -> ImagePresence:
    """Which of ``store``'s ok rows (those whose image ``index`` is in ``indices``, if given) have no
    file under ``data_root`` (None = the store's recorded ``source``). Only file existence is
    checked, so this is cheap enough to run before the model is loaded.

    Raises:
        ImageReadError: every image, or more than :data:`MISSING_SHARE` of them, is missing; the
            message names the folder looked in and the one the store recorded.
    """
    root = Path(data_root) if data_root is not None else store.image_root()
    chosen = store.column("status").astype(str) == STATUS_OK
    if indices is not None:
        chosen &= np.isin(store.column("index"), np.asarray(list(indices), dtype=np.int64))
    paths = store.column("path")[chosen].astype(str)
    missing = tuple(p for p in paths if not (root / p).is_file())
    presence = ImagePresence(root, store.source, len(paths), missing)
    if missing and len(missing) > MISSING_SHARE * len(paths):
        found = ("none of the store's" if len(missing) == len(paths)
                 else f"{len(missing)} of the store's") + f" {len(paths)} images to evaluate"
        verb = "is under" if len(missing) == len(paths) else "are missing under"
        raise ImageReadError(
            f"{found} {verb} {str(root)!r} (e.g. {missing[0]!r}); the store recorded the image folder "
            f"{store.source!r}; pass the folder holding the images as data_root (--data)")
    return presence
