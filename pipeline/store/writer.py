"""Writing a mask store: :class:`MaskWriter` commits each batch as a part file, folds the parts into
the store file, and resumes a store that a kill interrupted (docs/store.md)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import warnings
from contextlib import suppress
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from .. import __version__
from ..errors import ConfigError, StoreError
from ..names import stored_name
from .files import (check_contiguous, check_shard, fsync, live_parts, lock_store, open_h5, open_part, part_number,
                    parts_dir, read_parts, shard_path, temporary_path, unlock_store)
from ..identity import canonical_json, config_diff, provenance, run_key
from .schema import (COLUMNS, READ_DEFAULTS, SCHEMA_VERSION, STATUS_OK, STATUS_SKIPPED, convert_column, create_column,
                     create_mask_dataset, extra_names, is_store, to_numpy)

__all__ = ["MaskWriter"]

FOLD_BYTES = 64 * 2**20  # parts read into memory at a time by a fold

# Errors name the library's argument, then the `perturb` option of the same name in parentheses
# (pipeline.errors): one message serves a caller of the API and a user of the command line.
OVERWRITE_FIX = "pass overwrite=True (--overwrite) to start again, or write to another out (--out)"


class MaskWriter:
    """Append masks and per-image columns to an HDF5 store; reopening resumes (context manager).

    Each :meth:`append` commits its batch as a small file of its own in ``<path>.parts/``
    (written under a temporary name, then renamed), and the parts are folded into ``path`` on
    :meth:`close` and every ``merge_every`` parts, by rewriting a copy that replaces ``path`` in
    one rename. ``path`` itself is never written in place, so a kill at any moment leaves every
    committed batch readable (docs/store.md says why HDF5 needs this). While the
    writer is open, ``<path>.lock`` is locked: a second writer of the store is refused.

    Args:
        path: the store file (``.h5``). Created with its parent folders when missing; when it
            exists it is reopened to resume, after checking it was made with the same
            configuration (the same :func:`~pipeline.identity.run_key` of its recorded ``config``,
            so stores recorded before keys were normalised resume too), model and mask shape. With ``shard`` the file actually written is
            :func:`shard_path` ``(path, rank, world)``.
        config: the caller's full configuration (JSON-serialisable dict); its
            :func:`pipeline.identity.run_key` identifies the run. Its ``provenance`` entry, if any
            (``{"preset", "overrides"}``), is written as the attributes ``preset`` and ``overrides``
            of a new store, not into ``config``: it names the configuration without being part of it.
        model: the model spec string.
        source: the source folder, which the ``path`` column (each image's ``relpath``) is relative to.
        mask_shape: ``(K, h, w)`` of one row's masks (K = 1 but for extremal perturbation).
        overwrite: delete an existing store (and its parts) and start afresh.
        shard: ``(rank, world)`` for multi-process runs (one file per rank, see
            :func:`merge_shards`), or None.
        input_size: ``(H, W)`` of the solver's input, the size ``MaskStore.masks_at(...,
            "input")`` upsamples to.
        attrs: extra string attributes written into a new store (e.g. ``merged_from``).
        merge_every: fold the parts into ``path`` once this many are waiting (each fold copies
            ``path`` once, so this bounds both the number of part files and the copying).

    Raises:
        StoreError: the existing file is not a mask store, is being written by another process,
            or was made with a different configuration, model, mask shape or input size.
        ConfigError: bad ``mask_shape``, ``shard``, ``config`` or ``merge_every``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: Mapping[str, Any],
        model: str,
        source: str | os.PathLike[str],
        mask_shape: Sequence[int] = (1, 28, 28),
        overwrite: bool = False,
        shard: Sequence[int] | None = None,
        input_size: Sequence[int] = (224, 224),
        attrs: Mapping[str, str] | None = None,
        merge_every: int = 256,
    ):
        self.mask_shape = _positive_tuple(mask_shape, 3, "mask_shape")
        self.input_size = _positive_tuple(input_size, 2, "input_size")
        if isinstance(merge_every, bool) or not isinstance(merge_every, int) or merge_every < 1:
            raise ConfigError(f"merge_every must be a positive int, got {merge_every!r}")
        self.merge_every = merge_every
        self._next_fold = merge_every
        self.shard = "" if shard is None else "{}-of-{}".format(*check_shard(shard))
        self.path = Path(path) if shard is None else shard_path(path, *check_shard(shard))
        self.config_json = canonical_json(config)
        self.run_key = run_key(config)
        self.provenance = provenance(config)
        self.model, self.source = str(model), os.fspath(source)
        self._parts_dir = parts_dir(self.path)
        self._closed = False
        self._lock = lock_store(self.path)
        try:
            if overwrite:
                self.path.unlink(missing_ok=True)
            self._created = not self.path.exists()
            if self._created:
                live_parts(self.path, merged=sys.maxsize, clean=True)  # orphans of a deleted store
                self._create(dict(attrs or {}))
            with open_h5(self.path, "r") as file:
                self._check_compatible(file)
                self._resume(file)
        except BaseException:
            self._release()
            raise

    # -- file lifecycle

    def _create(self, extra_attrs: dict[str, str]) -> None:
        """Build the empty store under a temporary name, then rename it into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(self.path)
        with h5py.File(temporary, "w") as file:  # default file format: survives SIGKILL
            for name, dtype in COLUMNS.items():
                create_column(file, name, dtype)
            create_mask_dataset(file, self.mask_shape)
            attrs = file.attrs
            attrs["rows"] = np.int64(0)
            attrs["parts_merged"] = np.int64(0)
            attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            attrs["config"] = self.config_json
            attrs["run_key"] = self.run_key
            attrs["model"] = self.model
            attrs["source"] = stored_name(self.source)  # bytes when not UTF-8; read back as str
            attrs["source_relative"] = stored_name(_relative(self.source, self.path.parent))
            attrs["mask_shape"] = np.asarray(self.mask_shape, dtype=np.int64)
            attrs["input_size"] = np.asarray(self.input_size, dtype=np.int64)
            attrs["shard"] = self.shard
            attrs["versions"] = _versions()
            attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            attrs["threads"] = np.int64(_threads())  # CPU results are bit-identical at the same count
            if self.provenance.get("preset"):
                attrs["preset"] = str(self.provenance["preset"])
                attrs["overrides"] = json.dumps([str(o) for o in self.provenance.get("overrides", ())])
            for key, value in extra_attrs.items():
                attrs[key] = str(value)
        os.replace(temporary, self.path)

    def _check_compatible(self, file: h5py.File) -> None:
        attrs = file.attrs
        where = f"mask store {str(self.path)!r}"
        fix = OVERWRITE_FIX
        if "schema_version" in attrs and int(attrs["schema_version"]) != SCHEMA_VERSION:
            raise StoreError(f"{where} has schema version {int(attrs['schema_version'])}, this "
                             f"package writes {SCHEMA_VERSION}; {fix}")
        if not is_store(attrs):
            raise StoreError(f"{where} is not a mask store made by this package; {fix}")
        stored = json.loads(attrs["config"])
        if run_key(stored) != self.run_key:  # recomputed: the recorded key may predate normalisation
            diff = config_diff(stored, json.loads(self.config_json))
            raise StoreError(f"{where} was made with a different configuration (run_key "
                             f"{run_key(stored)} vs {self.run_key}; {diff}); {fix}")
        checks = [("model", attrs["model"], self.model),
                  ("mask_shape", tuple(int(v) for v in attrs["mask_shape"]), self.mask_shape),
                  ("input_size", tuple(int(v) for v in attrs["input_size"]), self.input_size),
                  ("shard", attrs["shard"], self.shard)]
        for name, stored, requested in checks:
            if stored != requested:
                raise StoreError(f"{where} was made with {name} {stored!r}, this run asks for "
                                 f"{requested!r}; {fix}")

    def _resume(self, file: h5py.File) -> None:
        """Count the committed rows of the store and its parts; drop what a kill left behind."""
        temporary_path(self.path).unlink(missing_ok=True)  # a fold that was killed before its rename
        merged = int(file.attrs.get("parts_merged", READ_DEFAULTS["parts_merged"]))
        self._parts = live_parts(self.path, merged, clean=True)
        check_contiguous(self.path, merged, self._parts)
        self._seq = max([part_number(p) for p in self._parts], default=merged)
        stored = int(file.attrs["rows"])
        short = {name: d.shape[0] for name, d in file.items() if d.shape[0] < stored}
        if short:
            raise StoreError(f"mask store {str(self.path)!r} is damaged: {stored} rows are "
                             f"committed but datasets hold fewer ({short}); {OVERWRITE_FIX}")
        index = [file["index"][:stored]]
        self._extras = extra_names(file) if stored else None
        for part in self._parts:
            with open_part(part) as source:
                index.append(source["index"][:])
                if self._extras is None:
                    self._extras = extra_names(source)
        done = np.concatenate(index)
        self._rows = len(done)
        self._done = set(done.tolist())

    def close(self) -> None:
        """Fold the waiting parts into the store file and release it (committed rows are safe
        either way: a store left with parts reads and resumes).

        Raises:
            StoreError: the fold failed (e.g. the disk is full); the parts stay, and are read.
        """
        if not self._closed:
            try:
                self._merge_parts()
            finally:
                self._release()

    def _release(self) -> None:
        """Give up the store (what a writer's death does too, but tidily)."""
        if self._closed:
            return
        self._closed = True
        with suppress(OSError):
            self._parts_dir.rmdir()  # only when empty; still under the lock
        unlock_store(self.path, self._lock)

    def __enter__(self) -> MaskWriter:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.close()
            return
        # An error is on its way out: fold if possible, but never hide it behind a fold error.
        empty = self._created and self._rows == 0
        try:
            self.close()
        except StoreError:
            pass
        if empty:  # nothing was committed: a store left now would only block the next try
            with suppress(OSError):
                self.path.unlink()
                self.path.with_name(self.path.name + ".lock").unlink()

    def __len__(self) -> int:
        return self._rows

    def done_indices(self) -> set[int]:
        """The ``index`` values of all committed rows (ok and skipped), to skip when resuming."""
        return set(self._done)

    # -- appending

    def append(self, rows: Mapping[str, Any], masks: Any | None) -> None:
        """Commit one batch of ``b`` rows.

        Args:
            rows: every column of :data:`COLUMNS` plus the extra float columns (the same names
                as the first batch), each a list, numpy array or tensor of length ``b``.
            masks: ``(b, K, h, w)`` in [0, 1] (numpy or tensor, any float dtype; stored as
                float16). Rows whose ``status`` is "skipped" are stored as NaN whatever is given;
                None means all NaN and is allowed only when every row is skipped.

        Raises:
            StoreError: a column is missing, unexpected or of the wrong length or type, a
                status is unknown, or an ``index`` is repeated or already stored.
        """
        columns, count = self._columns(rows)
        masks = self._masks(masks, count, columns["status"])
        if count == 0:
            return
        self._check_indices(columns["index"])
        if self._extras is None:
            self._extras = sorted(set(columns) - set(COLUMNS))
        part = self._parts_dir / f"{self._seq + 1:09d}.h5"
        temporary = temporary_path(part)
        try:
            self._parts_dir.mkdir(exist_ok=True)
            with h5py.File(temporary, "w") as file:
                for name, values in columns.items():
                    file.create_dataset(name, data=values, dtype=COLUMNS.get(name, np.float32))
                file.create_dataset("mask", data=masks)
            fsync(temporary)
            os.replace(temporary, part)  # the commit point
            fsync(self._parts_dir)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise StoreError(
                f"cannot write a batch to {str(part.parent)!r} ({error}; is the disk full?); the "
                f"{self._rows} rows committed before it are safe: free space and run again to "
                "resume"
            ) from None
        self._seq += 1
        self._parts.append(part)
        self._rows += count
        self._done.update(int(i) for i in columns["index"])
        if len(self._parts) >= self._next_fold:
            try:
                self._merge_parts()
            except StoreError as error:  # the batch is committed all the same; fold later
                warnings.warn(f"{error}; will try again", stacklevel=2)
                self._next_fold = len(self._parts) + self.merge_every

    def _merge_parts(self) -> None:
        """Fold the waiting parts into the store: append them to a copy of the store file, then
        rename the copy over it, then delete the parts (a kill between the two leaves parts the
        store's ``parts_merged`` marks as folded, which the next open deletes)."""
        if not self._parts:
            return
        temporary = temporary_path(self.path)
        try:
            shutil.copyfile(self.path, temporary)
            shutil.copymode(self.path, temporary)
            with h5py.File(temporary, "r+") as file:
                rows = int(file.attrs["rows"])
                # Appended in groups of parts (one resize per dataset and group, not per part)
                # of bounded size, whatever the mask shape.
                group: list[Path] = []
                for number, part in enumerate(self._parts, start=1):
                    group.append(part)
                    full = len(group) * part.stat().st_size >= FOLD_BYTES
                    if full or number == len(self._parts):
                        rows = _append_columns(file, rows, read_parts(group, raw=True))
                        group = []
                file.attrs["rows"] = np.int64(rows)
                file.attrs["parts_merged"] = np.int64(self._seq)
            fsync(temporary)
            os.replace(temporary, self.path)
            fsync(self.path.parent)
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise StoreError(
                    f"cannot fold the batches of {str(self._parts_dir)!r} into {str(self.path)!r} "
                    f"({error}; is the disk full?); they stay committed there and are read with "
                    "the store: free space and run again to fold them"
                ) from None
            raise
        # Folded: from here on the parts are leftovers, which the next open deletes if we cannot.
        folded, self._parts = self._parts, []
        self._next_fold = self.merge_every
        for part in folded:
            with suppress(OSError):
                part.unlink()

    def _columns(self, rows: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """Check names and lengths and convert each column to its stored dtype."""
        given = set(rows)
        missing = sorted(set(COLUMNS) - given)
        if missing:
            raise StoreError(f"append() needs the columns {missing} (all of COLUMNS) in rows")
        extras = sorted(given - set(COLUMNS))
        if self._extras is not None and extras != self._extras:
            raise StoreError(
                f"append() got extra columns {extras}, but this store's extra columns are "
                f"{self._extras} (fixed by its first batch); pass exactly those"
            )
        bad_names = [n for n in extras if n == "mask" or "/" in n or not n]
        if bad_names:
            raise StoreError(f"extra column names {bad_names} are not allowed (no 'mask', no '/')")
        columns = {name: convert_column(name, rows[name], COLUMNS.get(name, np.float32))
                   for name in (*COLUMNS, *extras)}
        lengths = {name: len(values) for name, values in columns.items()}
        count = lengths["index"]
        wrong = {name: n for name, n in lengths.items() if n != count}
        if wrong:
            raise StoreError(
                f"append() columns must all have {count} rows like 'index'; got {wrong}"
            )
        unknown = sorted(set(columns["status"]) - {STATUS_OK, STATUS_SKIPPED})
        if unknown:
            raise StoreError(f"status values {unknown} are unknown; use 'ok' or 'skipped'")
        return columns, count

    def _masks(self, masks: Any, count: int, status: Sequence[str]) -> np.ndarray:
        skipped = np.asarray([s == STATUS_SKIPPED for s in status], dtype=bool)
        if masks is None:
            if not skipped.all():
                raise StoreError("append() got masks=None, allowed only when every row is skipped")
            return np.full((count, *self.mask_shape), np.nan, dtype=np.float16)
        array = np.array(to_numpy(masks), dtype=np.float16)  # a copy: NaNs are written below
        if array.shape != (count, *self.mask_shape):
            raise StoreError(f"append() masks must have shape {(count, *self.mask_shape)} "
                             f"(b, K, h, w), got {tuple(array.shape)}")
        array[skipped] = np.nan
        return array

    def _check_indices(self, index: np.ndarray) -> None:
        values, counts = np.unique(index, return_counts=True)
        repeated = values[counts > 1].tolist()
        stored = sorted(set(values.tolist()) & self._done)
        if repeated or stored:
            raise StoreError(
                f"append() would store index {(repeated or stored)[:5]} twice in "
                f"{str(self.path)!r}; skip the indices in done_indices() when resuming"
            )


def _append_columns(file: h5py.File, rows: int, columns: Mapping[str, np.ndarray]) -> int:
    """Write ``columns`` (every dataset, ``mask`` included, of equal length) after ``rows``;
    returns the new row count."""
    stop = rows + len(columns["index"])
    for name, values in columns.items():
        if name not in file:
            create_column(file, name, np.float32)
        file[name].resize(stop, axis=0)
        file[name][rows:stop] = values
    return stop


def _positive_tuple(value: Sequence[int], length: int, name: str) -> tuple[int, ...]:
    try:
        result = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        result = ()
    if len(result) != length or min(result) < 1:
        raise ConfigError(f"{name} must be {length} positive ints, got {value!r}")
    return result


def _relative(source: str, folder: Path) -> str:
    """``source`` relative to ``folder`` (how to find the images when the store and its images move
    together), or "" when there is no such path (another drive)."""
    try:
        return os.path.relpath(os.path.abspath(source), os.path.abspath(folder))
    except ValueError:
        return ""


def _threads() -> int:
    """The intra-op thread count of torch when it is loaded (the writer does not import it), else
    ``OMP_NUM_THREADS`` or the CPU count."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return int(torch.get_num_threads())
    return int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1)


def _versions() -> str:
    """JSON of the versions that produced a file (torch is read without importing it)."""
    from importlib import metadata

    found = {"pipeline": __version__, "h5py": h5py.__version__, "numpy": np.__version__,
             "python": sys.version.split()[0]}
    if "torch" in sys.modules:
        found["torch"] = sys.modules["torch"].__version__
    else:
        try:
            found["torch"] = metadata.version("torch")
        except metadata.PackageNotFoundError:
            found["torch"] = "not installed"
    return json.dumps(found, sort_keys=True)
