"""Recover the committed rows of a damaged mask store: ``perturb repair``.

A store is its file plus the batches in ``<path>.parts/`` not yet folded into it
(docs/store.md). The writer never leaves either damaged (a kill leaves whole files), so
damage comes from outside: a copy or transfer cut short, a disk error, a file and its ``.parts``
folder copied at different moments. :func:`repair_store` keeps every row that can still be read
whole (all of its columns and its mask):

* **the file**: every row whose columns and mask all read without error (a damaged chunk loses
  its rows, the others are kept). A file that was cut short cannot be opened at all: the store
  rewrites its root metadata (the ``rows`` attribute) at its end on every fold, so a cut removes
  it; such a file must be copied again, or the run redone;
* **the parts**: every part that opens and has all columns is kept; the others are set aside;
* the rows (by ``index``, first occurrence kept) are written to a new store made with the same
  configuration, model, source, mask shape, input size and shard, which replaces the file; the
  damaged file and the whole ``.parts`` folder are moved to ``<path>.damaged-<n>/``, never deleted.

A store whose file and batches all read whole is reported healthy and left untouched (no copy is
made: on a 50,000-image run that would be a second copy of the store).

The images whose rows were lost are solved again by the next ``perturb masks`` run (it resumes
from the rows present).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ..errors import StoreError
from .files import check_contiguous, live_parts, lock_store, parts_dir, unlock_store
from .schema import COLUMNS, READ_DEFAULTS
from .writer import MaskWriter

__all__ = ["RepairReport", "repair_store"]

_BLOCK_ROWS = 1024  # rows read at a time; a block that fails is read again row by row
_READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError)  # what h5py raises for damaged data


@dataclass
class RepairReport:
    """What :func:`repair_store` did.

    Attributes:
        path: the store.
        rows_before: rows the damaged file says it holds (-1 when unknown).
        rows_from_file: rows recovered from the file; rows_from_parts: from the parts.
        parts_set_aside: names of the parts that could not be read.
        duplicates: rows dropped because their ``index`` was already taken.
        backup: the folder the damaged file and parts were moved to.
    """

    path: Path
    rows_before: int = -1
    rows_from_file: int = 0
    rows_from_parts: int = 0
    parts_set_aside: list[str] = field(default_factory=list)
    duplicates: int = 0
    backup: Path | None = None
    healthy: bool = False

    @property
    def rows(self) -> int:
        return self.rows_from_file + self.rows_from_parts

    def lines(self) -> list[str]:
        if self.healthy:
            pending = f" and {self.rows_from_parts} in unfolded batches" if self.rows_from_parts else ""
            return [f"{self.path}: healthy: all {self.rows_from_file} rows of the file read whole{pending}; "
                    "nothing to repair, nothing changed"]
        before = f" of {self.rows_before} it recorded" if self.rows_before >= 0 else ""
        text = [f"{self.path}: kept {self.rows} rows ({self.rows_from_file} from the file{before}; "
                f"{self.rows_from_parts} from unfolded batches)"]
        if self.parts_set_aside:
            text.append(f"set aside {len(self.parts_set_aside)} unreadable batch file(s): "
                        + ", ".join(self.parts_set_aside[:5]))
        if self.duplicates:
            text.append(f"dropped {self.duplicates} rows whose index was already kept")
        text.append(f"the damaged files are in {self.backup}; `perturb masks` with the same "
                    "options solves the missing images")
        return text


def repair_store(path: str | os.PathLike[str]) -> RepairReport:
    """Rebuild a damaged store from every row it still holds (see the module docstring).

    Raises:
        StoreError: the file is missing, a writer holds the store, or not even the store's
            attributes (configuration, model, mask shape) can be read, so no store can be rebuilt.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no mask store at {str(path)!r}; check the path")
    lock = lock_store(path)  # no writer may run meanwhile
    try:
        report = RepairReport(path)
        backup = _backup_folder(path)
        with _open(path) as file:
            attrs = _store_attrs(file, path)
            report.rows_before = int(attrs.pop("rows"))
            columns, masks = _readable_rows(file, report.rows_before)
        report.rows_from_file = len(columns["index"])
        merged = attrs.pop("parts_merged")
        parts = live_parts(path, merged)
        from_parts = _readable_parts(parts, report)
        pieces = [(columns, masks), *from_parts]
        if _intact(report, pieces) and _contiguous(path, merged, parts):  # a store that reads completely is left as it is
            report.healthy = True
            return report
        _rebuild(path, backup, attrs, pieces, report)
    finally:
        unlock_store(path, lock)
    return report


def _intact(report: RepairReport, pieces: list[tuple[dict, np.ndarray]]) -> bool:
    """Whether every row the file records and every unfolded batch read whole, with no index twice."""
    if report.rows_from_file != report.rows_before or report.parts_set_aside:
        return False
    indices = np.concatenate([np.asarray(columns["index"], dtype=np.int64) for columns, _ in pieces])
    return len(np.unique(indices)) == len(indices)


def _contiguous(path: Path, merged: int, parts: list[Path]) -> bool:
    """Whether the batch folder continues the file (no batch missing between them)."""
    try:
        check_contiguous(path, merged, parts)
    except StoreError:
        return False
    return True


def _backup_folder(path: Path) -> Path:
    for n in range(1, 1000):
        folder = path.with_name(f"{path.name}.damaged-{n}")
        if not folder.exists():
            return folder
    raise StoreError(f"too many {path.name}.damaged-N folders next to {str(path)!r}; remove old ones")


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as error:
        cut = "truncated file" in str(error)
        raise StoreError(
            f"{str(path)!r} cannot be repaired: "
            + ("it was cut short, which removes the metadata HDF5 keeps at its end (the store "
               "rewrites it on every fold); copy it again from where it came from"
               if cut else f"it cannot be read as HDF5 at all ({error})")
            + ", or run the masks again with --overwrite"
        ) from None


def _store_attrs(file: h5py.File, path: Path) -> dict:
    try:
        attrs = dict(file.attrs)
        return {"config": json.loads(attrs["config"]), "model": str(attrs["model"]),
                "source": attrs["source"], "mask_shape": tuple(int(v) for v in attrs["mask_shape"]),
                "input_size": tuple(int(v) for v in attrs["input_size"]), "shard": str(attrs["shard"]),
                "rows": int(attrs["rows"]),
                "parts_merged": int(attrs.get("parts_merged", READ_DEFAULTS["parts_merged"]))}
    except (KeyError, OSError, ValueError) as error:
        raise StoreError(f"the attributes of {str(path)!r} (configuration, model, mask shape) cannot be "
                         f"read ({type(error).__name__}: {error}); no store can be rebuilt from it: run "
                         "the masks again with --overwrite") from None


def _readable_rows(file: h5py.File, rows: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every one of the ``rows`` committed rows whose columns and mask all read without error."""
    names = [n for n in file.keys() if n != "mask"]
    columns: dict[str, list[np.ndarray]] = {n: [] for n in names}
    masks: list[np.ndarray] = []
    for start in range(0, rows, _BLOCK_ROWS):
        stop = min(rows, start + _BLOCK_ROWS)
        try:
            blocks = [(start, stop, {n: file[n][start:stop] for n in names}, file["mask"][start:stop])]
        except _READ_ERRORS:  # find the rows of this block that do read, one by one
            blocks = [block for row in range(start, stop) if (block := _row(file, names, row))]
        for _, _, block, mask in blocks:
            for n in names:
                columns[n].append(block[n])
            masks.append(mask)
    shape = file["mask"].shape[1:]
    joined = {n: np.concatenate(v) if v else np.empty(0) for n, v in columns.items()}
    return joined, np.concatenate(masks) if masks else np.empty((0, *shape), np.float16)


def _row(file: h5py.File, names: list[str], row: int) -> tuple | None:
    try:
        return row, row + 1, {n: file[n][row:row + 1] for n in names}, file["mask"][row:row + 1]
    except _READ_ERRORS:
        return None


def _readable_parts(parts: list[Path], report: RepairReport) -> list[tuple[dict, np.ndarray]]:
    found = []
    for part in parts:
        try:
            with h5py.File(part, "r") as file:
                columns = {n: file[n][:] for n in file.keys() if n != "mask"}
                masks = file["mask"][:]
            if set(COLUMNS) - set(columns) or any(len(v) != len(masks) for v in columns.values()):
                raise ValueError("columns missing or of unequal length")
        except _READ_ERRORS:
            report.parts_set_aside.append(part.name)
            continue
        found.append((columns, masks))
        report.rows_from_parts += len(masks)
    return found


def _rebuild(path: Path, backup: Path, attrs: dict, pieces: list[tuple[dict, np.ndarray]],
             report: RepairReport) -> None:
    """Write the kept rows to a new store next to ``path``, then move the damaged files into
    ``backup`` and the new store into place."""
    fresh = path.with_name(path.name + ".repaired")
    for leftover in (fresh, parts_dir(fresh)):
        shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
    shard = tuple(int(v) for v in attrs["shard"].split("-of-")) if attrs["shard"] else None
    seen: set[int] = set()
    with MaskWriter(fresh, attrs["config"], attrs["model"], os.fsdecode(attrs["source"]) if isinstance(
            attrs["source"], bytes) else attrs["source"], attrs["mask_shape"], input_size=attrs["input_size"],
            shard=None) as writer:
        for columns, masks in pieces:
            keep = np.asarray([int(i) not in seen and not seen.add(int(i)) for i in columns["index"]], dtype=bool)
            report.duplicates += int((~keep).sum())
            if not keep.any():
                continue
            rows = {n: _as_written(v[keep]) for n, v in columns.items()}
            writer.append(rows, masks[keep].astype(np.float32))
    if shard is not None:  # the writer of a shard names its file itself; keep the attribute
        with h5py.File(fresh, "r+") as file:
            file.attrs["shard"] = attrs["shard"]
    backup.mkdir(parents=True, exist_ok=True)
    os.replace(path, backup / path.name)
    if parts_dir(path).exists():
        os.replace(parts_dir(path), backup / parts_dir(path).name)
    os.replace(fresh, path)
    report.backup = backup


def _as_written(values: np.ndarray) -> object:
    """A column as :meth:`MaskWriter.append` takes it (str columns as lists of str)."""
    if values.dtype == object:
        return [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v) for v in values]
    return values
