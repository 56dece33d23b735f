"""Reading a mask store: :class:`MaskStore` gives the committed rows of the store file and of its
parts (a running or killed writer's batches) as columns, a pandas table, and mask tensors
(docs/store.md)."""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import h5py
import numpy as np

from ..errors import StoreError
from ..names import READ_ERRORS
from .files import check_contiguous, live_parts, open_h5, read_parts
from ..identity import run_key
from .schema import COLUMNS, READ_DEFAULTS, extra_names, is_store, to_numpy

if TYPE_CHECKING:  # torch and pandas load lazily: reading columns needs neither
    import pandas
    import torch

__all__ = ["MaskStore"]


class MaskStore:
    """Read a mask store (context manager): every committed row, of the file and its parts.

    Attributes:
        path: the file.
        config: the configuration dict the store was made with (tuples read back as lists).
        attrs: all file attributes as Python values (``config`` and ``versions`` parsed).
        mask_shape: ``(K, h, w)``; input_size: ``(H, W)``; model, source, shard: str.
        run_key: the identity of ``config``, :func:`pipeline.identity.run_key` (recomputed, so a
            store recorded before keys were normalised compares equal to its run today).
        preset: the preset the configuration was named by ("" when not recorded: older stores,
            baselines); overrides: the overrides applied to it, in order.
        pending_parts: batches read from ``<path>.parts`` (a writer that was killed or is
            running), 0 once a writer has closed.

    Raises:
        StoreError: the file is missing, not a mask store, or locked by another program.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no mask store at {str(self.path)!r}; check the path or run the "
                             "masks first")
        self._file, parts, self._pending = self._snapshot()
        attrs = self._file.attrs
        self.attrs = {key: _attr_value(key, attrs[key]) for key in attrs}
        self.config: dict[str, Any] = self.attrs["config"]
        self.mask_shape: tuple[int, ...] = tuple(self.attrs["mask_shape"])
        self.input_size: tuple[int, ...] = tuple(self.attrs["input_size"])
        self.model: str = self.attrs["model"]
        self.source: str = self.attrs["source"]
        self.run_key: str = run_key(self.config)
        self.preset: str = str(self.attrs.get("preset", ""))
        self.overrides: list[str] = list(self.attrs.get("overrides", []))
        self.shard: str = self.attrs["shard"]
        self.pending_parts = len(parts)
        self._stored = int(self.attrs["rows"])
        short = {name: d.shape[0] for name, d in self._file.items() if d.shape[0] < self._stored}
        if short:  # else the columns would read silently short
            self._file.close()
            raise StoreError(f"mask store {str(self.path)!r} is damaged: {self._stored} rows are "
                             f"committed but datasets hold fewer ({short}); run `perturb repair "
                             f"{self.path}` to keep the rows that are there")
        self._rows = self._stored + len(self._pending.get("index", ()))
        self.attrs["rows"] = self._rows
        self._row_of: dict[str, int] | None = None

    def _snapshot(self) -> tuple[h5py.File, list[Path], dict[str, np.ndarray]]:
        """Open the store file and read its parts (batches committed since it was last
        rewritten, i.e. a killed or running writer's; at most ``merge_every`` batches, read
        whole). A writer folding meanwhile renames a new file over the store and then deletes
        parts, so a read is kept only if the store file is the same before and after it."""
        for _ in range(20):
            try:
                before = os.stat(self.path).st_ino
            except FileNotFoundError:  # replaced by an --overwrite run meanwhile
                continue
            file = open_h5(self.path, "r")
            if not is_store(file.attrs):
                file.close()
                raise StoreError(f"{str(self.path)!r} is not a mask store made by this package")
            try:
                merged = int(file.attrs.get("parts_merged", READ_DEFAULTS["parts_merged"]))
                parts = live_parts(self.path, merged)
                pending = read_parts(parts)
                if os.stat(self.path).st_ino == before:
                    check_contiguous(self.path, merged, parts)
                    return file, parts, pending
            except FileNotFoundError:  # a part deleted by a fold that just finished
                pass
            except StoreError:
                file.close()
                raise
            file.close()
        raise StoreError(f"mask store {str(self.path)!r} kept changing while being read; retry")

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()

    def __enter__(self) -> MaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._rows

    def __repr__(self) -> str:
        return f"MaskStore({str(self.path)!r}, rows={self._rows}, model={self.model!r})"

    @property
    def columns(self) -> list[str]:
        """Scalar column names in table order: :data:`COLUMNS`, then extras sorted."""
        extras = set(extra_names(self._file)) | {n for n in self._pending if n not in COLUMNS and n != "mask"}
        return [*COLUMNS, *sorted(extras)]

    def column(self, name: str) -> np.ndarray:
        """One scalar column over the committed rows, ``(N,)`` (str columns as object arrays)."""
        if name not in self.columns:
            raise StoreError(f"mask store has no column {name!r}; columns: {self.columns}")
        if name not in self._file:
            return self._pending[name]  # an extra column only parts hold so far
        dataset = self._file[name]
        string = h5py.check_string_dtype(dataset.dtype) is not None
        view = dataset.asstr(errors=READ_ERRORS) if string else dataset
        try:
            stored = view[: self._stored]
        except OSError as error:
            raise self._damaged(error) from None
        if name not in self._pending:
            return stored
        return np.concatenate([stored, self._pending[name]])

    def table(self) -> pandas.DataFrame:
        """One row per committed image (in file order), every scalar column, ``index`` included."""
        import pandas as pd

        return pd.DataFrame({name: _series(self.column(name)) for name in self.columns})

    def masks(self, rows: Any = None) -> torch.Tensor:
        """Masks by row position (int, slice, sequence, or None for all).

        Returns:
            float32 ``(k, K, h, w)`` in [0, 1] (NaN for skipped rows), in the order asked.
        """
        import torch

        try:
            masks = self.read_masks(self._positions(rows))
        except OSError as error:  # h5py's error for a chunk that does not decompress or read
            raise self._damaged(error) from None
        return torch.from_numpy(masks.astype(np.float32))

    def _damaged(self, error: OSError) -> StoreError:
        return StoreError(f"mask store {str(self.path)!r} is damaged ({error}); run `perturb repair "
                          f"{self.path}` to keep every row that still reads")

    def _positions(self, rows: Any) -> np.ndarray:
        if rows is None:
            return np.arange(self._rows)
        if isinstance(rows, slice):
            return np.arange(self._rows)[rows]
        positions = np.atleast_1d(np.asarray(to_numpy(rows)))
        if positions.dtype == bool:  # a boolean selection, e.g. table()["status"] == "ok"
            if positions.shape != (self._rows,):
                raise StoreError(f"a boolean rows selection needs {self._rows} values, "
                                 f"got shape {positions.shape}")
            positions = np.flatnonzero(positions)
        if positions.size and positions.dtype.kind not in "iu":
            raise StoreError(f"rows must be integer positions, got dtype {positions.dtype}")
        positions = positions.astype(np.int64)
        if positions.ndim != 1:
            raise StoreError(
                f"rows must be an int, slice or 1-D sequence, got shape {positions.shape}"
            )
        positions = np.where(positions < 0, positions + self._rows, positions)
        bad = positions[(positions < 0) | (positions >= self._rows)]
        if bad.size:
            raise StoreError(f"rows {bad[:5].tolist()} are out of range 0..{self._rows - 1} "
                             f"of {str(self.path)!r}")
        return positions

    def read_masks(self, positions: np.ndarray) -> np.ndarray:
        """The masks as stored, float16 ``(k, K, h, w)``, at row positions ``(k,)`` (unsorted and
        repeated allowed, in range). A damaged chunk raises h5py's OSError."""
        if positions.size == 0:
            return np.empty((0, *self.mask_shape), dtype=np.float16)
        unique = np.unique(positions)
        stored, pending = unique[unique < self._stored], unique[unique >= self._stored]
        blocks = [self._pending["mask"][pending - self._stored]] if pending.size else []
        if stored.size:
            dataset = self._file["mask"]
            low, high = int(stored[0]), int(stored[-1]) + 1
            if high - low <= 4 * stored.size:  # dense: one contiguous read beats point selection
                blocks.insert(0, dataset[low:high][stored - low])
            else:
                blocks.insert(0, dataset[stored])
        return np.concatenate(blocks)[np.searchsorted(unique, positions)]

    def image_root(self) -> Path:
        """The folder the ``path`` column is relative to: the recorded ``source`` when it exists,
        else the same folder relative to the store (``source_relative``: a tree moved or mounted
        elsewhere as a whole), else ``source`` (whose absence the caller reports)."""
        source = Path(self.source)
        relative = str(self.attrs.get("source_relative", ""))
        if not source.exists() and relative:
            moved = self.path.parent / relative
            if moved.exists():
                return moved
        return source

    def row_of_path(self, relpath: str | os.PathLike[str]) -> int:
        """Row position of an image by its ``path`` column (relative to ``source``)."""
        if self._row_of is None:
            self._row_of = {p: i for i, p in enumerate(self.column("path"))}
        key = Path(relpath).as_posix() if isinstance(relpath, os.PathLike) else str(relpath)
        if key not in self._row_of:
            close = difflib.get_close_matches(key, list(self._row_of), n=3)
            hint = f"; close: {close}" if close else ""
            raise StoreError(f"no row for path {key!r} in {str(self.path)!r}{hint}")
        return self._row_of[key]

    def mask_for(self, relpath: str | os.PathLike[str]) -> torch.Tensor:
        """The masks of one image by its relative path: float32 ``(K, h, w)``."""
        return self.masks([self.row_of_path(relpath)])[0]

    def masks_at(self, rows: Any, size: str | Sequence[int] = "input") -> Any:
        """Masks resized bilinearly (align_corners=True, jacobgil's way). Stores of a solver whose
        masks are not bilinear (``nearest-blur``, ``smooth-max``) get exactly what was optimised,
        :func:`pipeline.solve.masks.upsample` at the input size, resized bilinearly to other sizes.

        Args:
            rows: as for :meth:`masks`.
            size: "input" (the solver's input size, attribute ``input_size``), ``(H, W)``, or
                "original" (each mask to its own image's ``(height, width)``).

        Returns:
            float32 ``(k, K, H, W)``; for "original" a list of ``k`` tensors ``(K, H_i, W_i)``
            (``(1, 0, 0)`` where the original size is unknown, i.e. unreadable images).
        """
        import torch

        from ..solve.masks import resize, upsample

        positions = self._positions(rows)
        masks = self.masks(positions)
        solver = self.config.get("solver") if isinstance(self.config, dict) else None
        if solver and solver.get("mask", {}).get("upsample", "bilinear") != "bilinear":
            from ..config import from_dict

            masks = upsample(masks, tuple(self.input_size), from_dict(solver).mask)
        if size == "original":
            heights = self.column("height")[positions]
            widths = self.column("width")[positions]
            return [
                resize(masks[i : i + 1], (int(h), int(w)))[0] if h > 0 and w > 0
                else torch.empty(1, 0, 0)
                for i, (h, w) in enumerate(zip(heights, widths))
            ]
        target = self.input_size if size == "input" else size
        return resize(masks, target)  # type: ignore[arg-type]


def _series(values: np.ndarray) -> Any:
    """A table column; str columns holding a file name that is not UTF-8 (pipeline.names) stay
    object dtype, which pandas' Arrow-backed str dtype cannot hold."""
    import pandas as pd

    try:
        return pd.Series(values)
    except UnicodeEncodeError:
        return pd.Series(values, dtype=object)


def _attr_value(key: str, value: Any) -> Any:
    if key in ("config", "versions", "overrides"):
        return json.loads(value)
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value
