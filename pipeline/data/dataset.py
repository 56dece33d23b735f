"""Images ready for the model: the one resize every command uses, the Dataset of a record list
(bad files become flagged rows), and the DataLoader."""

from __future__ import annotations

import os
import signal
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from ..errors import ConfigError, ImageReadError
from .decode import decode_image
from .discover import ImageRecord



def resize_pixels(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB resized to ``size`` ``(H, W)`` without cropping or keeping the aspect
    ratio, with PIL's bilinear filter (antialiased when shrinking): the one resize of every command
    (``perturb masks``, ``explain``, ``evaluate``, ``baseline``)."""
    height, width = size
    if pixels.shape[:2] == (height, width):
        return pixels
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))


def to_input(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """``(h, w, 3)`` uint8 RGB -> the model's input ``(3, H, W)`` float32 in [0, 1] (not normalised),
    resized by :func:`resize_pixels`."""
    resized = resize_pixels(np.asarray(pixels, dtype=np.uint8), size)
    return torch.from_numpy(np.array(resized, copy=True)).permute(2, 0, 1).float().div_(255.0).contiguous()


def read_input(path: str | os.PathLike[str], size: tuple[int, int],
               max_pixels: int | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
    """The image file at ``path`` as the model's input ``(3, H, W)`` float32 in [0, 1], and its
    original ``(height, width)``. A JPEG is decoded at a reduced scale that still has twice
    ``size`` each way (:func:`pipeline.data.decode_image`), then resized by :func:`resize_pixels`.

    Raises:
        ImageReadError: with its ``reason`` (:data:`pipeline.data.REASONS`).
    """
    height, width = size
    pixels, original = decode_image(path, draft_size=(2 * height, 2 * width), max_pixels=max_pixels)
    return to_input(pixels, (height, width)), original


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                 for s in pair):
        raise ConfigError(f"size must be a positive int or (height, width) of ints, got {size!r}")
    return pair  # type: ignore[return-value]


class ImageDataset(Dataset):
    """Images of a record list, decoded and resized for the solver; bad files become flagged rows.

    Args:
        records: from :func:`discover`.
        size: ``(H, W)`` (or one int for a square) the images are resized to, without cropping
            or keeping the aspect ratio, with PIL's antialiased bilinear filter.
        max_pixels: images that would decode to more pixels are skipped as "too large" (see
            :func:`decode_image`); None: :data:`MAX_DECODED_PIXELS`.

    ``dataset[i]`` is a dict:

    * ``image``: float32 tensor ``(3, H, W)`` in [0, 1], RGB, **not** normalised (the model
      wrapper normalises on the device); all zeros when ``ok`` is False;
    * ``index``: ``i``, the position in ``records`` (the store's row key);
    * ``height``, ``width``: the original size in pixels (0 when the file could not be read);
    * ``label``: the record's label (-1 unknown);
    * ``ok``: whether the image was decoded; ``reason``: "" or a code from :data:`REASONS`.
    """

    def __init__(self, records: Sequence[ImageRecord], size: int | Sequence[int] = (224, 224),
                 max_pixels: int | None = None):
        self.records = list(records)
        self.size = _check_size(size)
        if max_pixels is not None and (isinstance(max_pixels, bool) or int(max_pixels) < 1):
            raise ConfigError(f"max_pixels must be a positive number of pixels, got {max_pixels!r}")
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        height, width = self.size
        item: dict[str, Any] = {"index": int(i), "label": int(record.label)}
        try:
            image, (orig_h, orig_w) = read_input(record.path, self.size, self.max_pixels)
        except ImageReadError as error:
            item.update(image=torch.zeros(3, height, width), height=0, width=0, ok=False,
                        reason=getattr(error, "reason", "unreadable"))
            return item
        item.update(image=image, height=orig_h, width=orig_w, ok=True, reason="")
        return item


def collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch :class:`ImageDataset` items.

    Returns:
        ``image`` float32 ``(B, 3, H, W)``; ``index``, ``height``, ``width``, ``label`` int64
        ``(B,)``; ``ok`` bool ``(B,)``; ``reason`` list of ``B`` str.
    """
    batch: dict[str, Any] = {"image": torch.stack([item["image"] for item in items])}
    for key in ("index", "height", "width", "label"):
        batch[key] = torch.tensor([item[key] for item in items], dtype=torch.int64)
    batch["ok"] = torch.tensor([item["ok"] for item in items], dtype=torch.bool)
    batch["reason"] = [item["reason"] for item in items]
    return batch


def make_loader(
    dataset: ImageDataset,
    batch_size: int,
    workers: int = 2,
    pin_memory: bool | None = None,
    indices: Sequence[int] | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` (or the subset ``indices``, in the given order), unshuffled.

    Args:
        dataset: the images.
        batch_size: images per batch (the last batch may be smaller).
        workers: decoding processes; 0 decodes in the calling process. Workers persist between
            epochs and prefetch 2 batches each.
        pin_memory: page-locked batches for faster host-to-GPU copies; defaults to
            ``torch.cuda.is_available()``.
        indices: positions in ``dataset`` to load, e.g. the images not yet done when resuming.
            Items keep their original ``index``.

    Raises:
        ConfigError: ``batch_size`` < 1, ``workers`` < 0, or an index out of range.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(
            f"workers must be an int >= 0 (0 = decode in this process), got {workers!r}"
        )
    source: Dataset = dataset
    if indices is not None:
        chosen = [int(i) for i in indices]
        bad = [i for i in chosen if not 0 <= i < len(dataset)]
        if bad:
            raise ConfigError(
                f"indices {bad[:5]} are out of range for a dataset of {len(dataset)} images"
            )
        source = Subset(dataset, chosen)
    return DataLoader(
        source,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else bool(pin_memory),
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
        worker_init_fn=_ignore_sigterm if workers > 0 else None,
    )


def stop_workers(loader: DataLoader) -> None:
    """Shut down ``loader``'s decoding workers now (a no-op without workers). A run calls it when it
    ends, interrupted or not: its persistent workers would otherwise live until the loader is
    collected, which after an interrupt (the traceback keeps the loader) can be the interpreter's
    exit, where they are left to notice on their own that the main process is gone."""
    iterator = getattr(loader, "_iterator", None)  # torch keeps persistent workers' iterator there
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
        loader._iterator = None


def _ignore_sigterm(worker_id: int) -> None:
    """Decoding workers leave a SIGTERM sent to the whole process group (``timeout``, Slurm's
    preemption) to the main process, which stops the run as Ctrl-C does and shuts them down; a
    worker killed by it would make the loader raise "DataLoader worker ... killed by signal"."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
