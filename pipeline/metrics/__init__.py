"""Metric core: deletion/insertion curves, localisation, pointing games, ground-truth boxes.

Pure functions over tensors (deletion/insertion) and numpy arrays (localisation), plus one small
accumulator, :class:`PointingGame`. Nothing here reads images, models or stores. Each module lists
its public names in ``__all__``; this package exports them all.
"""

from pipeline.metrics import boxes, deletion, heldout, localization
from pipeline.metrics.boxes import *  # noqa: F403
from pipeline.metrics.deletion import *  # noqa: F403
from pipeline.metrics.heldout import *  # noqa: F403
from pipeline.metrics.localization import *  # noqa: F403

__all__ = [*deletion.__all__, *localization.__all__, *heldout.__all__, *boxes.__all__]
