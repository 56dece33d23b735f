"""What crash safety costs the mask store: committed parts and folds against appending in place.

Writes ``--batches`` batches of ``--batch-size`` solver-like 28x28 masks with every store column, two
ways, into fresh files on the same disk:

* ``in-place``: the store's earlier writer, re-created here as the baseline: each batch resizes
  every dataset of one HDF5 file, writes it, sets ``rows`` and flushes. A kill can leave that
  file unreadable (see docs/store.md);
* ``parts``: :class:`pipeline.store.MaskWriter`: each batch is a small file renamed into
  ``<out>.parts/``, folded into the store every ``merge_every`` parts and at close.

Per way: seconds for all appends, for the close, in all, milliseconds per batch, the store's
size, and ``ratio_vs_in_place`` (its time over the baseline's). A solver batch takes seconds (CPU)
to tens of seconds (GPU), so what matters is milliseconds per batch.

Files: ``STEM.csv`` (default ``store-append-cpu.csv``). No GPU is involved.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from benchmarks.common import table
from pipeline.store import COLUMNS, MaskStore, MaskWriter
from pipeline.store.schema import create_column, create_mask_dataset

NAME = "store-append-{device}"
DEVICES = ("cpu",)
THREADS = 0

CONFIG = {"benchmark": "store"}
SHOWN = ["writer", "rows_per_batch", "batches", "append_s", "close_s", "total_s", "ms_per_batch",
         "file_mb", "ratio_vs_in_place"]


def make_batch(start: int, rows: int, rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """Rows like a solver batch's; masks mostly exact ones with a blob, like solved masks."""
    index = np.arange(start, start + rows)
    columns = {"index": index, "path": [f"n01440764/ILSVRC2012_val_{i:08d}.JPEG" for i in index],
               "status": ["ok"] * rows, "reason": [""] * rows, "area": rng.random(rows),
               "tv": rng.random(rows)}
    for name, dtype in COLUMNS.items():
        if name not in columns:
            columns[name] = (rng.random(rows) * 100).astype(dtype)
    masks = np.ones((rows, 1, 28, 28), dtype=np.float32)
    y, x = rng.integers(0, 20, size=2)
    masks[:, :, y:y + 8, x:x + 8] = rng.random((rows, 1, 8, 8))
    return columns, masks


class InPlaceWriter:
    """The baseline: append to one HDF5 file in place, commit by ``rows`` and ``flush()``."""

    def __init__(self, path: Path):
        self.file = h5py.File(path, "w")
        for name, dtype in COLUMNS.items():
            create_column(self.file, name, dtype)
        for name in ("area", "tv"):
            create_column(self.file, name, np.float32)
        create_mask_dataset(self.file, (1, 28, 28))
        self.file.attrs["rows"] = 0
        self.rows = 0

    def append(self, columns: dict, masks: np.ndarray) -> None:
        stop = self.rows + len(masks)
        for name, values in [*columns.items(), ("mask", masks.astype(np.float16))]:
            dataset = self.file[name]
            dataset.resize(stop, axis=0)
            dataset[self.rows:stop] = np.asarray(values, dtype=object) if isinstance(values, list) else values
        self.file.attrs["rows"] = stop
        self.file.flush()
        self.rows = stop

    def close(self) -> None:
        self.file.close()


def time_writer(kind: str, path: Path, batches: int, rows: int, merge_every: int) -> dict:
    rng = np.random.default_rng(0)
    data = [make_batch(b * rows, rows, rng) for b in range(batches)]  # made before timing
    start = time.perf_counter()
    if kind == "in-place":
        writer = InPlaceWriter(path)
    else:
        writer = MaskWriter(path, CONFIG, "none", "/data", merge_every=merge_every)
    for columns, masks in data:
        writer.append(columns, masks)
    appended = time.perf_counter()
    writer.close()
    closed = time.perf_counter()
    with MaskStore(path) if kind == "parts" else h5py.File(path, "r") as store:
        count = len(store) if kind == "parts" else int(store.attrs["rows"])
    if count != batches * rows:
        raise SystemExit(f"error: the {kind} store holds {count} rows, {batches * rows} were written")
    return {"writer": kind, "batches": batches, "rows_per_batch": rows, "merge_every": merge_every,
            "append_s": round(appended - start, 3), "close_s": round(closed - appended, 3),
            "total_s": round(closed - start, 3),
            "ms_per_batch": round(1000 * (closed - start) / batches, 3),
            "file_mb": round(path.stat().st_size / 2**20, 2)}


def add_arguments(parser) -> None:
    parser.add_argument("--batches", type=int, default=2000, help="batches written (default 2000)")
    parser.add_argument("--batch-size", type=int, nargs="+", default=[8, 1], help="rows per batch, each measured; "
                        "1 is what streamed early stopping often hands out (default 8 1)")
    parser.add_argument("--merge-every", type=int, default=256, help="parts folded into the store at a time")


def run(args, device: torch.device, results) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.batch_size:
            base = None
            for kind in ("in-place", "parts"):
                path = Path(folder) / f"{kind}-{size}.h5"
                result = time_writer(kind, path, args.batches, size, args.merge_every)
                base = base or result["total_s"]
                result["ratio_vs_in_place"] = round(result["total_s"] / base, 2)
                rows.append(result)
                print(f"{kind}, {size} rows per batch: {result['total_s']} s", flush=True)
                results.write(rows)
    print(table(rows, SHOWN))
    print(f"wrote {results.write(rows)}")
    return 0
