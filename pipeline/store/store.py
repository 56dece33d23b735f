"""The HDF5 mask store: one row per image, appended batch by batch, safe to kill and resume.

Schema (``schema_version`` 1). Every dataset has one row per image along axis 0, resizable and
chunked; rows are in commit order (not sorted by ``index``).

=============== ==================== ========================================================
dataset         dtype, shape         meaning
=============== ==================== ========================================================
``mask``        float16 (N, 1, h, w) the solved mask, 1 = keep, 0 = perturbed; NaN when
                                     skipped. Chunks (1, 1, h, w), gzip level 4.
``index``       int64 (N,)           position of the image in the discovered record list
                                     (:func:`pipeline.data.discover`): the row key.
``path``        UTF-8 str (N,)       the image's path relative to the data root (``source``);
                                     a name that is not valid UTF-8 is kept as its bytes and
                                     read back as Python's file-name str (``pipeline.names``).
``height``      int32 (N,)           original image height in pixels (0 when unreadable).
``width``       int32 (N,)           original image width in pixels (0 when unreadable).
``label``       int32 (N,)           ground-truth class index, -1 when unknown.
``target``      int32 (N,)           the explained class index, -1 when none (skipped).
``p_original``  float32 (N,)         probability of ``target`` for the unperturbed image.
``p_perturbed`` float32 (N,)         ... for the fully perturbed image (mask all 0).
``p_final``     float32 (N,)         ... for the image perturbed by the solved mask.
``loss``        float32 (N,)         final value of the solver's objective.
``status``      UTF-8 str (N,)       ``"ok"`` or ``"skipped"``.
``reason``      UTF-8 str (N,)       why a row was skipped (``pipeline.data.REASONS``), else "".
extra columns   float32 (N,)         caller-defined (``area``, ``tv``, ``iterations``...): fixed
                                     by the first committed batch, required on every later one.
=============== ==================== ========================================================

File attributes: ``rows`` (int, the number of rows in the file; parts may add more, see below),
``parts_merged`` (int, the number of the last part folded in), ``schema_version`` (1),
``config`` (canonical JSON of the caller's configuration dict), ``run_key`` (first 16 hex digits
of the SHA-256 of that JSON), ``model`` (model spec string), ``source`` (data root), ``mask_shape``
(``(1, h, w)``), ``input_size`` (``(H, W)`` of the solver's input), ``shard`` (``"r-of-n"`` or
""), ``versions`` (JSON: pipeline, torch, h5py, numpy, python), ``created`` (ISO 8601, UTC).

Crash safety. HDF5 writes its metadata (chunk B-tree nodes, heap blocks, the superblock's end of
file) in no fixed order, so a file appended in place and killed at the wrong moment can hold a
node that points past the end of the file: committed rows become unreadable. The store's earlier
in-place writer did this once in a CI run of ``tests/test_store.py``, and here once in 298 kills
by that test's loop and in none of 889 by ``benchmarks/kill_store.py`` (h5py 3.16 with HDF5
2.0). So the store file is never written in place:

- each batch is committed as a small HDF5 file of its own, ``<path>.parts/NNNNNNNNN.h5``,
  written under a ``.tmp`` name and renamed (the rename is the commit point);
- every ``merge_every`` parts, and when the writer closes, the parts are *folded* in: the store
  file is copied, the parts are appended to the copy, whose ``rows`` and ``parts_merged`` are
  updated, and the copy is renamed over the store file; then the parts are deleted.

A kill at any moment therefore leaves the previous store file, whole, plus whole parts. (A fold
briefly needs disk room for a second copy of the file; at 28x28 a mask takes about 700 bytes.)
:class:`MaskStore` reads both, ignoring ``.tmp`` files and parts numbered at or below
``parts_merged``; a reopening writer deletes those leftovers and resumes. The file keeps HDF5's
default format (no ``libver="latest"``, no SWMR: such files cannot be reopened after a kill
without ``h5clear``). Parts and folded copies are ``fsync``-ed before their rename, so what is
committed also survives a crash of the machine. One writer per store is enforced by a POSIX lock
on ``<path>.lock`` (present while a writer runs; not inherited by DataLoader workers); readers
may open the store while it is written and see every committed batch.

Compression: measured on 2000 solver-like float16 28x28 masks (56% exact ones), gzip 4 stores
667 B/mask against 819 (lzf), 696 (gzip 1), 740 (gzip 4 + shuffle) and 1636 (none), and costs
0.7 ms per batch of 8 against 0.5 ms for lzf: negligible next to a solve, and gzip, unlike lzf,
is readable by every HDF5 build (h5py, MATLAB, the HDF5 tools).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import errno
import hashlib
import json
import os
import shutil
import sys
import warnings
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import h5py
import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per store is then the user's care
    fcntl = None  # type: ignore[assignment]

from .. import __version__
from ..errors import ConfigError, StoreError
from ..names import READ_ERRORS, stored_name

if TYPE_CHECKING:  # torch and pandas load lazily: writing a store needs neither
    import pandas
    import torch

__all__ = [
    "SCHEMA_VERSION",
    "COLUMNS",
    "STATUS_OK",
    "STATUS_SKIPPED",
    "MaskWriter",
    "MaskStore",
    "canonical_json",
    "run_key",
    "shard_path",
    "parts_dir",
    "merge_shards",
    "upsample",
    "summary",
]

SCHEMA_VERSION = 1
STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
_STR = h5py.string_dtype("utf-8")
COLUMNS: dict[str, Any] = {
    "index": np.int64,
    "path": _STR,
    "height": np.int32,
    "width": np.int32,
    "label": np.int32,
    "target": np.int32,
    "status": _STR,
    "reason": _STR,
    "p_original": np.float32,
    "p_perturbed": np.float32,
    "p_final": np.float32,
    "loss": np.float32,
}
"""The per-image columns every batch must provide, with their HDF5 dtypes, in table order."""

_SCALAR_CHUNK = 1024  # rows per chunk of a scalar column: a few KiB, rewritten at most per batch
_MASK_COMPRESSION = {"compression": "gzip", "compression_opts": 4}
_HELD: set[str] = set()  # lock files this process holds (see _lock)
_FOLD_BYTES = 64 * 2**20  # parts read into memory at a time by a fold
_STALE_CHUNKS = 64  # chunks past `rows` cleared in a legacy killed file: a batch of 64Ki rows
_MERGE_ROWS = 512  # rows copied per append when merging shards (bounds memory)


# --------------------------------------------------------------------------------------------
# configuration identity


def _jsonable(value: Any) -> Any:
    """``json.dumps`` fallback for the types configs commonly hold."""
    import dataclasses
    import enum

    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} value {value!r}")


def canonical_json(config: Mapping[str, Any]) -> str:
    """The configuration as JSON with sorted keys and no spaces (tuples become lists).

    Raises:
        ConfigError: ``config`` is not a dict or holds a value JSON cannot represent.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a dict of settings, got {type(config).__name__}")
    try:
        return json.dumps(dict(config), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False, default=_jsonable)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"config cannot be stored as JSON ({error}); use str, numbers, bools, lists and dicts"
        ) from None


def run_key(config: Mapping[str, Any]) -> str:
    """16 hex digits identifying a configuration: SHA-256 of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()[:16]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _config_diff(stored: dict[str, Any], requested: dict[str, Any], limit: int = 6) -> str:
    """``key: file X, now Y`` for the dotted keys whose values differ."""
    old, new = _flatten(stored), _flatten(requested)
    missing = object()
    lines = [
        f"{key}: file {json.dumps(old.get(key, missing), default=lambda _: '<absent>')}, "
        f"now {json.dumps(new.get(key, missing), default=lambda _: '<absent>')}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, missing) != new.get(key, missing)
    ]
    more = f" (and {len(lines) - limit} more)" if len(lines) > limit else ""
    return "; ".join(lines[:limit]) + more


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


def shard_path(path: str | os.PathLike[str], rank: int, world: int) -> Path:
    """``<stem>.shard-{rank}-of-{world}.h5`` next to ``path``: the file rank ``rank`` writes."""
    _check_shard((rank, world))
    path = Path(path)
    return path.with_name(f"{path.stem}.shard-{rank}-of-{world}.h5")


def _check_shard(shard: Sequence[int]) -> tuple[int, int]:
    try:
        rank, world = (int(v) for v in shard)
    except (TypeError, ValueError):
        rank, world = -1, -1
    if not 0 <= rank < world:
        raise ConfigError(f"shard must be (rank, world) with 0 <= rank < world, got {shard!r}")
    return rank, world


def _open_h5(path: Path, mode: str) -> h5py.File:
    """Open an HDF5 file, turning lock and format failures into StoreError sentences."""
    try:
        return h5py.File(path, mode)
    except OSError as error:
        text = str(error).lower()
        if "unable to lock" in text:  # not "sblock", which HDF5's truncation message holds
            raise StoreError(
                f"{str(path)!r} is locked by another process that has it open for writing; wait "
                "for it to finish or choose another --out"
            ) from None
        if "truncated file" in text:
            raise StoreError(
                f"mask store {str(path)!r} is damaged: the file is shorter than HDF5 recorded "
                f"({error}), e.g. a copy or transfer that did not finish; copy it again from where "
                "it came from, or run the masks again with --overwrite (a cut removes the metadata "
                "HDF5 keeps at the end of the file, so its rows cannot be recovered)"
            ) from None
        raise StoreError(
            f"cannot open {str(path)!r} as an HDF5 mask store ({error}); pass --overwrite to "
            "replace it or choose another --out"
        ) from None


# --------------------------------------------------------------------------------------------
# writer


class MaskWriter:
    """Append masks and per-image columns to an HDF5 store; reopening resumes (context manager).

    Each :meth:`append` commits its batch as a small file of its own in ``<path>.parts/``
    (written under a temporary name, then renamed), and the parts are folded into ``path`` on
    :meth:`close` and every ``merge_every`` parts, by rewriting a copy that replaces ``path`` in
    one rename. ``path`` itself is never written in place, so a kill at any moment leaves every
    committed batch readable (see the module docstring for why HDF5 needs this). While the
    writer is open, ``<path>.lock`` is locked: a second writer of the store is refused.

    Args:
        path: the store file (``.h5``). Created with its parent folders when missing; when it
            exists it is reopened to resume, after checking it was made with the same
            configuration, model and mask shape. With ``shard`` the file actually written is
            :func:`shard_path` ``(path, rank, world)``.
        config: the caller's full configuration (JSON-serialisable dict); its :func:`run_key`
            identifies the run.
        model: the model spec string.
        source: the data root the ``path`` column is relative to.
        mask_shape: ``(1, h, w)`` of one mask.
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
        self.shard = "" if shard is None else "{}-of-{}".format(*_check_shard(shard))
        self.path = Path(path) if shard is None else shard_path(path, *_check_shard(shard))
        self.config_json = canonical_json(config)
        self.run_key = run_key(config)
        self.model, self.source = str(model), os.fspath(source)
        self._parts_dir = parts_dir(self.path)
        self._closed = False
        self._lock = _lock(self.path)
        try:
            if overwrite:
                self.path.unlink(missing_ok=True)
            if not self.path.exists():
                _live_parts(self.path, merged=sys.maxsize, clean=True)  # orphans of a deleted store
                self._create(dict(attrs or {}))
            with _open_h5(self.path, "r") as file:
                self._check_compatible(file)
                self._resume(file)
        except BaseException:
            self._release()
            raise

    # -- file lifecycle

    def _create(self, extra_attrs: dict[str, str]) -> None:
        """Build the empty store under a temporary name, then rename it into place."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = _temporary(self.path)
        with h5py.File(temporary, "w") as file:  # default file format: survives SIGKILL
            for name, dtype in COLUMNS.items():
                _create_column(file, name, dtype)
            _create_mask_column(file, self.mask_shape)
            attrs = file.attrs
            attrs["rows"] = np.int64(0)
            attrs["parts_merged"] = np.int64(0)
            attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            attrs["config"] = self.config_json
            attrs["run_key"] = self.run_key
            attrs["model"] = self.model
            attrs["source"] = stored_name(self.source)  # bytes when not UTF-8; read back as str
            attrs["mask_shape"] = np.asarray(self.mask_shape, dtype=np.int64)
            attrs["input_size"] = np.asarray(self.input_size, dtype=np.int64)
            attrs["shard"] = self.shard
            attrs["versions"] = _versions()
            attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            for key, value in extra_attrs.items():
                attrs[key] = str(value)
        os.replace(temporary, self.path)

    def _check_compatible(self, file: h5py.File) -> None:
        attrs = file.attrs
        where = f"mask store {str(self.path)!r}"
        fix = "pass --overwrite to start again or choose another --out"
        if "schema_version" not in attrs or "rows" not in attrs:
            raise StoreError(f"{where} is not a mask store made by this package; {fix}")
        if int(attrs["schema_version"]) != SCHEMA_VERSION:
            raise StoreError(f"{where} has schema version {int(attrs['schema_version'])}, this "
                             f"package writes {SCHEMA_VERSION}; {fix}")
        if attrs["run_key"] != self.run_key:
            diff = _config_diff(json.loads(attrs["config"]), json.loads(self.config_json))
            raise StoreError(f"{where} was made with a different configuration (run_key "
                             f"{attrs['run_key']} vs {self.run_key}; {diff}); {fix}")
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
        _temporary(self.path).unlink(missing_ok=True)  # a fold that was killed before its rename
        merged = int(file.attrs.get("parts_merged", 0))
        self._parts = _live_parts(self.path, merged, clean=True)
        _check_contiguous(self.path, merged, self._parts)
        self._seq = max([_part_seq(p) for p in self._parts], default=merged)
        stored = int(file.attrs["rows"])
        short = {name: d.shape[0] for name, d in file.items() if d.shape[0] < stored}
        if short:
            raise StoreError(f"mask store {str(self.path)!r} is damaged: {stored} rows are "
                             f"committed but datasets hold fewer ({short}); pass --overwrite")
        index = [file["index"][:stored]]
        self._extras = _extra_names(file) if stored else None
        for part in self._parts:
            with _open_part(part) as source:
                index.append(source["index"][:])
                if self._extras is None:
                    self._extras = _extra_names(source)
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
        _unlock(self.path, self._lock)

    def __enter__(self) -> MaskWriter:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if kind is None:
            self.close()
            return
        # An error is on its way out: fold if possible, but never hide it behind a fold error.
        try:
            self.close()
        except StoreError:
            pass

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
            masks: ``(b, 1, h, w)`` in [0, 1] (numpy or tensor, any float dtype; stored as
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
        temporary = _temporary(part)
        try:
            self._parts_dir.mkdir(exist_ok=True)
            with h5py.File(temporary, "w") as file:
                for name, values in columns.items():
                    file.create_dataset(name, data=values, dtype=COLUMNS.get(name, np.float32))
                file.create_dataset("mask", data=masks)
            _fsync(temporary)
            os.replace(temporary, part)  # the commit point
            _fsync(self._parts_dir)
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
        temporary = _temporary(self.path)
        try:
            shutil.copyfile(self.path, temporary)
            shutil.copymode(self.path, temporary)
            with h5py.File(temporary, "r+") as file:
                rows = int(file.attrs["rows"])
                _trim_to_rows(file, rows)
                # Appended in groups of parts (one resize per dataset and group, not per part)
                # of bounded size, whatever the mask shape.
                group: list[Path] = []
                for number, part in enumerate(self._parts, start=1):
                    group.append(part)
                    full = len(group) * part.stat().st_size >= _FOLD_BYTES
                    if full or number == len(self._parts):
                        rows = _append_columns(file, rows, _read_parts(group, raw=True))
                        group = []
                file.attrs["rows"] = np.int64(rows)
                file.attrs["parts_merged"] = np.int64(self._seq)
            _fsync(temporary)
            os.replace(temporary, self.path)
            _fsync(self.path.parent)
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
        columns = {name: _convert(name, rows[name], COLUMNS.get(name, np.float32))
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
        array = np.array(_to_numpy(masks), dtype=np.float16)  # a copy: NaNs are written below
        if array.shape != (count, *self.mask_shape):
            raise StoreError(f"append() masks must have shape {(count, *self.mask_shape)} "
                             f"(b, 1, h, w), got {tuple(array.shape)}")
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
            _create_column(file, name, np.float32)
        file[name].resize(stop, axis=0)
        file[name][rows:stop] = values
    return stop


def _trim_to_rows(file: h5py.File, rows: int) -> None:
    """Cut every dataset back to ``rows`` (:meth:`MaskWriter._resume` refused shorter ones). Only
    a store killed inside a batch by this package's earlier in-place writer has rows past
    ``rows``; folds always write exact lengths."""
    if rows == 0:  # extra columns of an uncommitted first batch: the parts define them
        for name in _extra_names(file):
            del file[name]
    for dataset in file.values():
        if dataset.shape[0] == rows:
            continue
        if h5py.check_string_dtype(dataset.dtype) is not None:
            _drop_stale_strings(dataset, rows)
        else:
            dataset.resize(rows, axis=0)


def _drop_stale_strings(dataset: h5py.Dataset, rows: int) -> None:
    """Clear what a killed batch left beyond ``rows`` in a variable-length string dataset.

    A kill can leave, in the chunks past ``rows`` (even past the extent on disk), references to
    heap objects that were never flushed. HDF5 frees the old string of every element it
    overwrites, so appending over them fails ("bad heap index"), which we measured in 7 of 8
    killed files. Shrinking the extent makes HDF5 reset the elements past it to the fill value
    and drop whole chunks past it without reading them, so we grow, then shrink to ``rows``.
    """
    reach = rows + _STALE_CHUNKS * dataset.chunks[0]
    dataset.resize(max(dataset.shape[0], reach), axis=0)
    dataset.resize(rows, axis=0)


def _positive_tuple(value: Sequence[int], length: int, name: str) -> tuple[int, ...]:
    try:
        result = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        result = ()
    if len(result) != length or min(result) < 1:
        raise ConfigError(f"{name} must be {length} positive ints, got {value!r}")
    return result


def _create_column(file: h5py.File, name: str, dtype: Any) -> None:
    file.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(_SCALAR_CHUNK,), dtype=dtype)


def _create_mask_column(file: h5py.File, mask_shape: tuple[int, ...]) -> None:
    file.create_dataset(
        "mask", shape=(0, *mask_shape), maxshape=(None, *mask_shape), chunks=(1, *mask_shape),
        dtype=np.float16, fillvalue=np.float16(np.nan), **_MASK_COMPRESSION,
    )


def _extra_names(file: h5py.File) -> list[str]:
    return sorted(n for n in file.keys() if n not in COLUMNS and n != "mask")


# --------------------------------------------------------------------------------------------
# parts: the batches committed since the store file was last rewritten


def parts_dir(path: str | os.PathLike[str]) -> Path:
    """The folder of a store's committed batches not yet folded into it: ``<path>.parts``."""
    path = Path(path)
    return path.with_name(path.name + ".parts")


def _lock_path(store: Path) -> Path:
    return store.with_name(store.name + ".lock")


def _lock(store: Path) -> int | None:
    """Hold an exclusive POSIX lock on ``<store>.lock``: one writer per store. Returns the
    descriptor (None where ``fcntl`` is missing, e.g. Windows: no lock).

    ``lockf`` rather than ``flock``: forked children (DataLoader workers) do not inherit it, so a
    killed run's surviving workers cannot lock out its resume. The lock file is deleted by the
    writer that holds it; a writer that locked a file deleted meanwhile sees a different inode at
    the path and tries again.
    """
    _writable(store, lambda: store.parent.mkdir(parents=True, exist_ok=True))
    path = _lock_path(store)
    busy = StoreError(
        f"mask store {str(store)!r} is being written by another process (is another run using "
        "the same --out?); wait for it to finish or choose another --out"
    )
    # POSIX locks belong to a process: a second writer in this process would be granted the lock,
    # and closing its descriptor would drop the first writer's. So this process keeps a list.
    key = os.path.realpath(path)
    if key in _HELD:
        raise busy
    if fcntl is None:
        _HELD.add(key)
        return None
    for _ in range(100):
        descriptor = _writable(store, lambda: os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise busy from None
        with suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(descriptor).st_ino:
                _HELD.add(key)
                return descriptor
        os.close(descriptor)
    raise StoreError(f"could not lock {str(path)!r}; retry")


def _writable(store: Path, action: Any) -> Any:
    """``action()``, with a read-only folder or file system said as what it is."""
    try:
        return action()
    except OSError as error:
        if error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise StoreError(
            f"mask store {str(store)!r} cannot be written here ({error.strerror}: "
            f"{error.filename!r}); it can still be read (inspect, evaluate, export): to resume or "
            "add to it, copy it with its .parts folder to a writable place"
        ) from None


def _unlock(store: Path, descriptor: int | None) -> None:
    path = _lock_path(store)
    _HELD.discard(os.path.realpath(path))
    if descriptor is None:
        return
    with suppress(OSError):
        path.unlink()  # while still locked: see _lock
    os.close(descriptor)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to disk, so a rename after it is durable."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():  # folders cannot be opened on Windows; nothing to flush there
            return
        raise
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _temporary(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _part_seq(part: Path) -> int:
    return int(part.stem)


def _live_parts(path: Path, merged: int, clean: bool = False) -> list[Path]:
    """The part files of the store ``path`` not yet folded into it (numbered above ``merged``),
    in commit order. With ``clean``, delete what kills left: unfinished ``.tmp`` parts and parts
    already folded in (a kill between a fold's rename and its deletion of the parts)."""
    folder = parts_dir(path)
    if not folder.is_dir():
        return []
    live = []
    for entry in folder.iterdir():
        name = entry.name.removesuffix(".tmp")
        if not (name.endswith(".h5") and name[:-3].isdigit()):
            continue  # not a part, nor a part being written
        if name == entry.name and int(name[:-3]) > merged:
            live.append(entry)
        elif clean:
            entry.unlink(missing_ok=True)
    return sorted(live, key=_part_seq)


def _read_parts(parts: list[Path], raw: bool = False) -> dict[str, np.ndarray]:
    """Every dataset of the parts, concatenated in order (str columns as object arrays of str, or
    with ``raw`` of the stored bytes, which a fold writes back unchanged)."""
    pieces: dict[str, list[np.ndarray]] = {}
    for part in parts:
        with _open_part(part) as file:
            for name, dataset in file.items():
                string = h5py.check_string_dtype(dataset.dtype) is not None and not raw
                pieces.setdefault(name, []).append(
                    dataset.asstr(errors=READ_ERRORS)[:] if string else dataset[:])
    return {name: np.concatenate(values) for name, values in pieces.items()}


def _open_part(part: Path) -> h5py.File:
    """A committed part, read-only; a damaged one is a StoreError that says how to recover."""
    try:
        return h5py.File(part, "r")
    except FileNotFoundError:  # deleted by a fold meanwhile: the caller retries
        raise
    except OSError as error:
        if not part.exists():  # HDF5 reports a part deleted between listing and opening as a
            raise FileNotFoundError(part) from None  # failed stat, not as a missing file
        store = part.parent.with_name(part.parent.name.removesuffix(".parts"))
        raise StoreError(
            f"batch file {str(part)!r} of mask store {str(store)!r} is damaged ({error}); run "
            f"`perturb repair {store}` to set it aside and keep every other row"
        ) from None


def _check_contiguous(path: Path, merged: int, parts: list[Path]) -> None:
    """Parts are numbered one after the other from ``parts_merged + 1``; a gap means the file and
    its ``.parts`` folder were not taken at the same moment (e.g. copied while a run folded), and
    reading them together would silently lose the batches of the gap."""
    numbers = [_part_seq(p) for p in parts]
    expected = list(range(merged + 1, merged + 1 + len(numbers)))
    if numbers != expected:
        missing = sorted(set(range(merged + 1, max(numbers, default=merged) + 1)) - set(numbers))
        raise StoreError(
            f"mask store {str(path)!r} does not match its batch folder: the file holds the "
            f"batches up to {merged} but {str(parts_dir(path))!r} lacks batch(es) {missing[:5]} "
            "before the ones it has (was it copied while a run was writing it?); copy it again "
            f"once the run has ended, or run `perturb repair {path}` to keep the rows that are there"
        )


def _to_numpy(values: Any) -> Any:
    if hasattr(values, "detach"):  # a torch tensor, possibly on the GPU
        return values.detach().cpu().numpy()
    return values


def _convert(name: str, values: Any, dtype: Any) -> Any:
    """One column as stored: list of str, or a numpy array of ``dtype``."""
    values = _to_numpy(values)
    if dtype is _STR:
        if isinstance(values, str) or not all(isinstance(v, str) for v in values):
            raise StoreError(f"column {name!r} must be a list of str, one per row")
        try:  # a file name that is not UTF-8 is kept as its bytes (pipeline.names)
            return np.array([stored_name(v) for v in values], dtype=object)
        except UnicodeEncodeError as error:
            raise StoreError(f"column {name!r} holds {error.object[error.start:error.end]!r}, "
                             "which no file name can contain") from None
    array = np.asarray(values)
    if array.ndim != 1:
        raise StoreError(
            f"column {name!r} must be one value per row (1-D), got shape {array.shape}"
        )
    if np.issubdtype(dtype, np.integer) and array.size and array.dtype.kind not in "iub":
        raise StoreError(f"column {name!r} must hold integers, got dtype {array.dtype}")
    if array.dtype.kind not in "iubf" and array.size:
        raise StoreError(f"column {name!r} must hold numbers, got dtype {array.dtype}")
    return array.astype(dtype)


# --------------------------------------------------------------------------------------------
# reader


class MaskStore:
    """Read a mask store (context manager): every committed row, of the file and its parts.

    Attributes:
        path: the file.
        config: the configuration dict the store was made with (tuples read back as lists).
        attrs: all file attributes as Python values (``config`` and ``versions`` parsed).
        mask_shape: ``(1, h, w)``; input_size: ``(H, W)``; model, source, run_key, shard: str.
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
        self.run_key: str = self.attrs["run_key"]
        self.shard: str = self.attrs.get("shard", "")
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
            file = _open_h5(self.path, "r")
            if "schema_version" not in file.attrs or "rows" not in file.attrs:
                file.close()
                raise StoreError(f"{str(self.path)!r} is not a mask store made by this package")
            try:
                merged = int(file.attrs.get("parts_merged", 0))
                parts = _live_parts(self.path, merged)
                pending = _read_parts(parts)
                if os.stat(self.path).st_ino == before:
                    _check_contiguous(self.path, merged, parts)
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
        # A file without rows may hold an uncommitted first batch's extras (earlier writer).
        extras = set(_extra_names(self._file) if self._stored else ()) | {
            n for n in self._pending if n not in COLUMNS and n != "mask"}
        return [*COLUMNS, *sorted(extras)]

    def column(self, name: str) -> np.ndarray:
        """One scalar column over the committed rows, ``(N,)`` (str columns as object arrays)."""
        if name not in self.columns:
            raise StoreError(f"mask store has no column {name!r}; columns: {self.columns}")
        if name not in self._file or (name not in COLUMNS and not self._stored):
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
            float32 ``(k, 1, h, w)`` in [0, 1] (NaN for skipped rows), in the order asked.
        """
        import torch

        try:
            masks = self._read_masks(self._positions(rows))
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
        positions = np.atleast_1d(np.asarray(_to_numpy(rows)))
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

    def _read_masks(self, positions: np.ndarray) -> np.ndarray:
        """float16 ``(k, 1, h, w)`` for arbitrary (unsorted, repeated) positions."""
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
        """The mask of one image by its relative path: float32 ``(1, h, w)``."""
        return self.masks([self.row_of_path(relpath)])[0]

    def masks_at(self, rows: Any, size: str | Sequence[int] = "input") -> Any:
        """Masks upsampled bilinearly (align_corners=True, the seed's way). Stores of a solver whose
        masks are not bilinear (``nearest-blur``, ``smooth-max``) get exactly what was optimised,
        :func:`pipeline.solve.masks.upsample` at the input size, resized bilinearly to other sizes.

        Args:
            rows: as for :meth:`masks`.
            size: "input" (the solver's input size, attribute ``input_size``), ``(H, W)``, or
                "original" (each mask to its own image's ``(height, width)``).

        Returns:
            float32 ``(k, 1, H, W)``; for "original" a list of ``k`` tensors ``(1, H_i, W_i)``
            (``(1, 0, 0)`` where the original size is unknown, i.e. unreadable images).
        """
        import torch

        positions = self._positions(rows)
        masks = self.masks(positions)
        solver = self.config.get("solver") if isinstance(self.config, dict) else None
        if solver and solver.get("mask", {}).get("upsample", "bilinear") != "bilinear":
            from ..solve import masks as masklib
            from ..config import from_dict

            masks = masklib.upsample(masks, tuple(self.input_size), from_dict(solver).mask)
        if size == "original":
            heights = self.column("height")[positions]
            widths = self.column("width")[positions]
            return [
                upsample(masks[i : i + 1], (int(h), int(w)))[0] if h > 0 and w > 0
                else torch.empty(1, 0, 0)
                for i, (h, w) in enumerate(zip(heights, widths))
            ]
        target = self.input_size if size == "input" else size
        return upsample(masks, target)  # type: ignore[arg-type]


def _series(values: np.ndarray) -> Any:
    """A table column; str columns holding a file name that is not UTF-8 (pipeline.names) stay
    object dtype, which pandas' Arrow-backed str dtype cannot hold."""
    import pandas as pd

    try:
        return pd.Series(values)
    except UnicodeEncodeError:
        return pd.Series(values, dtype=object)


def _attr_value(key: str, value: Any) -> Any:
    if key in ("config", "versions"):
        return json.loads(value)
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def upsample(masks: Any, size: Sequence[int]) -> torch.Tensor:
    """Bilinear upsampling with ``align_corners=True`` (the seed's), e.g. 28x28 -> 224x224.

    Args:
        masks: ``(k, 1, h, w)`` tensor or array, any float dtype.
        size: ``(H, W)``.

    Returns:
        float32 ``(k, 1, H, W)`` on the masks' device; values stay in the masks' range.
    """
    import torch
    import torch.nn.functional as F

    tensor = masks if isinstance(masks, torch.Tensor) else torch.from_numpy(np.asarray(masks))
    if tensor.ndim != 4:
        raise ConfigError(f"upsample() needs masks shaped (k, 1, h, w), got {tuple(tensor.shape)}")
    target = _positive_tuple(size, 2, "size")
    return F.interpolate(tensor.float(), size=target, mode="bilinear", align_corners=True)


# --------------------------------------------------------------------------------------------
# shards and summaries


def merge_shards(
    paths: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str], overwrite: bool = False
) -> Path:
    """Concatenate shard stores into one, rows sorted by ``index``.

    Args:
        paths: the shard files (e.g. every ``<stem>.shard-r-of-n.h5``).
        out: the merged store; it must not exist unless ``overwrite``.

    Returns:
        ``out`` as a Path. Its ``merged_from`` attribute lists the shard file names.

    Raises:
        StoreError: no paths, ``out`` exists, the shards differ in run_key, model, mask shape,
            input size or extra columns, ranks are missing or repeated, or an ``index`` appears
            in more than one row.
    """
    import pandas as pd

    paths, out = [Path(p) for p in paths], Path(out)
    if not paths:
        raise StoreError("merge_shards() needs at least one shard file")
    if out.exists() and not overwrite:
        raise StoreError(f"merged store {str(out)!r} exists; pass overwrite=True or another path")
    with ExitStack() as stack:
        stores = [stack.enter_context(MaskStore(p)) for p in paths]
        _check_shards_agree(stores)
        tables = [s.table().assign(_shard=k, _row=np.arange(len(s))) for k, s in enumerate(stores)]
        merged = pd.concat(tables, ignore_index=True).sort_values("index", kind="stable")
        _refuse_duplicates(merged, paths)
        first = next((s for s in stores if len(s)), stores[0])  # an empty shard has no extras yet
        with MaskWriter(out, first.config, first.model, first.source, first.mask_shape,
                        overwrite=overwrite, input_size=first.input_size,
                        attrs={"merged_from": json.dumps([p.name for p in paths])}) as writer:
            for start in range(0, len(merged), _MERGE_ROWS):
                part = merged.iloc[start : start + _MERGE_ROWS]
                masks = np.empty((len(part), *first.mask_shape), dtype=np.float16)
                for shard, group in part.groupby("_shard", sort=False):
                    where = np.flatnonzero(part["_shard"].to_numpy() == shard)
                    masks[where] = stores[shard]._read_masks(group["_row"].to_numpy())
                columns = {n: part[n].to_numpy() for n in first.columns}
                for name in ("path", "status", "reason"):
                    columns[name] = [str(v) for v in columns[name]]
                writer.append(columns, masks)
    return out


def _check_shards_agree(stores: list[MaskStore]) -> None:
    first = next((s for s in stores if len(s)), stores[0])
    for store in stores:
        for name in ("run_key", "model", "mask_shape", "input_size", "columns"):
            if name == "columns" and not len(store):
                continue  # a shard with no images (more shards than images) has no extra columns
            if getattr(store, name) != getattr(first, name):
                raise StoreError(
                    f"cannot merge {str(store.path)!r} with {str(first.path)!r}: {name} differs "
                    f"({getattr(store, name)!r} vs {getattr(first, name)!r}); merge only shards "
                    "of one run"
                )
    shards = [s.shard for s in stores if s.shard]
    if shards:
        worlds = {int(s.split("-of-")[1]) for s in shards}
        ranks = sorted(int(s.split("-of-")[0]) for s in shards)
        if len(worlds) != 1 or ranks != list(range(worlds.pop())):
            raise StoreError(f"shard files cover ranks {shards}; pass each of the run's "
                             "shards exactly once")


def _refuse_duplicates(merged: Any, paths: list[Path]) -> None:
    repeated = merged[merged["index"].duplicated(keep=False)]
    if len(repeated):
        rows = repeated.head(6)
        which = ", ".join(
            f"index {i} in {paths[k].name}" for i, k in zip(rows["index"], rows["_shard"])
        )
        raise StoreError(f"cannot merge: {repeated['index'].nunique()} indices appear in more "
                         f"than one row ({which}); each image must be solved by one shard only")


def summary(store: MaskStore | str | os.PathLike[str]) -> dict[str, Any]:
    """Counts and mean probabilities of a store.

    Returns:
        ``{"path", "done", "ok", "skipped", "skipped_by_reason", "means", "model", "source",
        "run_key", "config", "pending_parts"}``: ``done`` counts committed rows (ok or skipped),
        ``skipped_by_reason`` maps reason -> count, ``means`` maps p_original, p_perturbed,
        p_final, loss and the extra columns to their mean over ok rows (NaN values ignored;
        NaN when no row is ok); ``pending_parts`` counts batches not yet folded into the file.
    """
    if not isinstance(store, MaskStore):
        with MaskStore(store) as opened:
            return summary(opened)
    from collections import Counter

    ok = store.column("status") == STATUS_OK
    by_reason = Counter(str(r) for r in store.column("reason")[~ok])
    numeric = ["p_original", "p_perturbed", "p_final", "loss",
               *[c for c in store.columns if c not in COLUMNS]]
    means = {}
    for name in numeric:
        values = store.column(name)[ok].astype(np.float64)
        values = values[~np.isnan(values)]  # a NaN score must not hide the others
        means[name] = float(values.mean()) if values.size else float("nan")
    return {
        "path": str(store.path), "done": len(store), "ok": int(ok.sum()),
        "skipped": int((~ok).sum()), "skipped_by_reason": dict(sorted(by_reason.items())),
        "means": means, "model": store.model, "source": store.source, "run_key": store.run_key,
        "config": store.config, "pending_parts": store.pending_parts,
    }
