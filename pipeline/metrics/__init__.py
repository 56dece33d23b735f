"""Metric core: deletion/insertion curves, localisation, pointing games, ground-truth boxes, ROAD
(with its batched imputation), complexity, and the model-randomisation sanity check.

Pure functions over tensors (deletion/insertion, ROAD, complexity) and numpy arrays (localisation),
plus one small accumulator, :class:`PointingGame`. Nothing here reads images or stores; models come
in as arguments (the randomisation check copies the one it is given). Each module lists
its public names in ``__all__``; this package exports them all.
"""

from pipeline.metrics import boxes, deletion, heldout, imputation, localization, map_complexity, randomisation, road
from pipeline.metrics.boxes import *  # noqa: F403
from pipeline.metrics.map_complexity import *  # noqa: F403
from pipeline.metrics.deletion import *  # noqa: F403
from pipeline.metrics.heldout import *  # noqa: F403
from pipeline.metrics.imputation import *  # noqa: F403
from pipeline.metrics.localization import *  # noqa: F403
from pipeline.metrics.randomisation import *  # noqa: F403
from pipeline.metrics.road import *  # noqa: F403

__all__ = [*deletion.__all__, *localization.__all__, *heldout.__all__, *boxes.__all__, *road.__all__,
           *imputation.__all__, *map_complexity.__all__, *randomisation.__all__]
