"""Mask compression in the store: bytes per mask and write time for each HDF5 filter.

Takes the ok masks of ``--store`` (default: the solver stores committed under ``results/sweep/``
whose masks are 28x28), repeats them up to ``--rows`` rows, and writes them, ``--batch-size`` rows at a
time, into a mask dataset laid out as the store's (one chunk per row, float16, NaN fill) with each
filter: none, lzf, gzip 1, gzip 4 (the store's), gzip 4 + shuffle. Prints, per filter, the stored
bytes per mask (HDF5's storage size of the dataset over the rows) and the milliseconds per batch
written (best of ``--repeats``), and the share of mask values that are exactly 1.

Files: ``STEM.csv`` (default ``store-compression-cpu.csv``), one row per filter.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from benchmarks.common import REPO, table
from pipeline.store import MaskStore

NAME = "store-compression-{device}"
DEVICES = ("cpu",)
THREADS = 0


FILTERS = {
    "none": {},
    "lzf": {"compression": "lzf"},
    "gzip 1": {"compression": "gzip", "compression_opts": 1},
    "gzip 4": {"compression": "gzip", "compression_opts": 4},
    "gzip 4 + shuffle": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
}


def load_masks(paths: list[Path]) -> np.ndarray:
    """The ok masks of the stores, float16 ``(n, K, h, w)``; the stores must agree on ``(K, h, w)``."""
    found = []
    for path in paths:
        with MaskStore(path) as store:
            masks = store.read_masks(np.arange(len(store)))
        found.append(masks[~np.isnan(masks).any(axis=(1, 2, 3))])
    shapes = {m.shape[1:] for m in found}
    if len(shapes) != 1:
        sys.exit(f"error: the stores' masks differ in shape {sorted(shapes)}; pass stores of one mask size")
    return np.concatenate(found)


def _mask_shape(path: Path) -> tuple[int, ...]:
    with h5py.File(path, "r") as file:
        return file["mask"].shape[1:]


def measure(masks: np.ndarray, options: dict, batch: int, folder: Path) -> tuple[float, float]:
    """``(bytes per mask, ms per batch)`` of writing ``masks`` with one filter."""
    shape = masks.shape[1:]
    path = folder / "masks.h5"
    with h5py.File(path, "w") as file:
        dataset = file.create_dataset("mask", shape=(0, *shape), maxshape=(None, *shape), chunks=(1, *shape),
                                      dtype=np.float16, fillvalue=np.float16(np.nan), **options)
        start = time.perf_counter()
        for low in range(0, len(masks), batch):
            block = masks[low:low + batch]
            dataset.resize(low + len(block), axis=0)
            dataset[low:low + len(block)] = block
        file.flush()
        seconds = time.perf_counter() - start
        size = dataset.id.get_storage_size()
    path.unlink()
    return size / len(masks), 1000 * seconds / -(-len(masks) // batch)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def default_stores() -> list[Path]:
    """The solver stores committed under ``results/sweep/`` whose masks are 28x28."""
    return [p for p in sorted((REPO / "results" / "sweep").glob("*/masks.h5")) if _mask_shape(p) == (1, 28, 28)]


def add_arguments(parser) -> None:
    parser.add_argument("--store", type=Path, nargs="+", default=None,
                        help="stores whose ok masks are written (default: results/sweep/*/masks.h5 of 28x28 masks)")
    parser.add_argument("--rows", type=int, default=2000, help="masks written (the stores' repeated in order)")
    parser.add_argument("--batch-size", type=int, default=8, help="masks written at a time")
    parser.add_argument("--repeats", type=int, default=3, help="writes per filter; the best time is kept")


def run(args, device: torch.device, results) -> int:
    stores = args.store or default_stores()
    masks = load_masks(stores)
    masks = np.resize(masks, (max(args.rows, 1), *masks.shape[1:]))  # repeats the masks in order
    ones = float((masks == 1).mean())
    source = ", ".join(_shown(p) for p in stores)
    print(f"{len(masks)} masks {tuple(masks.shape[1:])} from {source}; {100 * ones:.0f}% of values exactly 1")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, options in FILTERS.items():
            runs = [measure(masks, options, args.batch_size, Path(folder)) for _ in range(args.repeats)]
            rows.append({"filter": name, "bytes_per_mask": runs[0][0], "ms_per_batch": min(ms for _, ms in runs),
                         "batch": args.batch_size, "rows": len(masks), "mask_shape": "x".join(map(str, masks.shape[1:])),
                         "share_exactly_1": ones, "stores": source})
    print(table(rows, ["filter", "bytes_per_mask", "ms_per_batch"]))
    print(f"wrote {results.write(rows)}")
    return 0
