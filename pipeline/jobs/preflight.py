"""What a dataset command checks before it loads a model: its input exists and holds images, and
whether its store already holds every image (then there is nothing to load the model for).

Torch-free: it answers in the time it takes to list the images and read the store's index column,
where loading torch and a model takes seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import discover
from ..identity import run_key
from ..imagenet import ClassVocabulary
from ..store import MaskStore

__all__ = ["Preflight", "preflight"]

_NO_VOCABULARY = ClassVocabulary(wnids=(), names=())  # labels are not needed to list the images


@dataclass(frozen=True)
class Preflight:
    """The input of a dataset command, checked.

    Attributes:
        images: how many images the command covers (after ``limit``).
        complete: the store already holds every one of them, made with this configuration.
    """

    images: int
    complete: bool = False

    def lines(self, out: str | Path) -> list[str]:
        """What the command prints when there is nothing left to do (as :class:`RunSummary` would)."""
        return [f"{out}: {self.images} images; 0 solved now, {self.images} already done"]


def preflight(source: str | Path, out: str | Path | None = None, config: dict[str, Any] | None = None,
              limit: int | None = None, overwrite: bool = False, sharded: bool = False) -> Preflight:
    """Check the input of a dataset command, and whether its store is complete.

    Args:
        source: the image folder or file list (as :func:`pipeline.data.discover` takes it).
        out, config: the store and the configuration it would be written with (the store's
            ``input_size`` is taken from the store, as the model would give it); None: no store check.
        limit: the command's ``--limit``.
        overwrite, sharded: such runs always go on (they replace the store, or write shards).

    Raises:
        ImageReadError: the source does not exist or holds no images (one line).
    """
    records = discover(source, _NO_VOCABULARY, limit=limit)
    if out is None or config is None or overwrite or sharded or not Path(out).is_file():
        return Preflight(len(records))
    with MaskStore(out) as store:
        mine = {**config, "input_size": list(store.input_size)}
        if store.model != config.get("model") or store.run_key != run_key(mine):
            return Preflight(len(records))  # the run itself says what differs
        paths = dict(zip(store.column("index").tolist(), store.column("path").astype(str).tolist()))
    complete = all(paths.get(i) == record.relpath for i, record in enumerate(records))
    return Preflight(len(records), complete)
