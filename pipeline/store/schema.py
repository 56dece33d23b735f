"""What a mask store holds: its datasets (name, dtype, shape, meaning) and its file attributes.

A store is tied to its run by the configuration's identity, :func:`pipeline.identity.run_key`
(re-exported here with :func:`~pipeline.identity.canonical_json` and
:func:`~pipeline.identity.config_diff`).

This is the one definition of the schema; docs/store.md shows it as a table and
tests/store/test_schema.py checks that table, and the files the writer makes, against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import h5py
import numpy as np

from ..errors import StoreError
from ..identity import canonical_json, config_diff, run_key
from ..names import stored_name

__all__ = [
    "SCHEMA_VERSION", "STATUS_OK", "STATUS_SKIPPED", "STR", "Dataset", "Attribute", "MASK", "DATASETS",
    "EXTRA", "COLUMNS", "ATTRIBUTES", "READ_DEFAULTS", "REQUIRED_ATTRIBUTES", "dtype_name", "is_store", "create_column",
    "create_mask_dataset", "extra_names", "to_numpy", "convert_column", "canonical_json", "run_key", "config_diff",
]

SCHEMA_VERSION = 1
STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STR = h5py.string_dtype("utf-8")
"""Variable-length UTF-8 strings (a name that is not valid UTF-8 is stored as its bytes, see
:mod:`pipeline.names`)."""

SCALAR_CHUNK = 1024  # rows per chunk of a scalar column: a few KiB, rewritten at most once per fold
MASK_COMPRESSION = {"compression": "gzip", "compression_opts": 4}  # readable by every HDF5 build


@dataclass(frozen=True)
class Dataset:
    """One dataset of a store: every dataset has one row per image along axis 0."""

    name: str
    dtype: Any  # the HDF5 dtype written (numpy type or STR)
    shape: str  # with N the number of rows
    meaning: str


@dataclass(frozen=True)
class Attribute:
    """One attribute of the store file (the root group)."""

    name: str
    kind: str
    meaning: str
    always: bool = True  # written into every store by MaskWriter
    required: bool = True  # needed to read a store (False: added later; older stores lack it)


MASK = Dataset(
    "mask", np.float16, "(N, K, h, w)",
    "the solved masks, 1 = keep, 0 = perturbed; K = 1 except for extremal perturbation (one mask "
    "per area); NaN for skipped rows. Chunks (1, K, h, w), gzip level 4")

DATASETS: tuple[Dataset, ...] = (
    MASK,
    Dataset("index", np.int64, "(N,)", "position of the image in the discovered record list "
            "(`pipeline.data.discover`): the row key"),
    Dataset("path", STR, "(N,)", "the image's `relpath`: its path relative to the source folder (attribute "
            "`source`)"),
    Dataset("height", np.int32, "(N,)", "original image height in pixels (0 when unreadable)"),
    Dataset("width", np.int32, "(N,)", "original image width in pixels (0 when unreadable)"),
    Dataset("label", np.int32, "(N,)", "ground-truth class index, -1 when unknown"),
    Dataset("target", np.int32, "(N,)", "the explained class index, -1 when none (skipped)"),
    Dataset("status", STR, "(N,)", '"ok" or "skipped"'),
    Dataset("reason", STR, "(N,)", 'why a row was skipped (`pipeline.data.REASONS`), else ""'),
    Dataset("p_original", np.float32, "(N,)", "probability of `target` for the unperturbed image"),
    Dataset("p_perturbed", np.float32, "(N,)", "... for the fully perturbed image (mask all 0)"),
    Dataset("p_final", np.float32, "(N,)", "... for the image perturbed by the solved mask"),
    Dataset("loss", np.float32, "(N,)", "final value of the solver's objective"),
)
"""The datasets every store holds: ``mask``, then the per-image columns in table order."""

EXTRA = Dataset("(extra)", np.float32, "(N,)",
                "caller-defined columns (`area`, `tv`, `iterations`...): fixed by the first "
                "committed batch, required on every later one")
"""Any other dataset: an extra float column."""

COLUMNS: dict[str, Any] = {d.name: d.dtype for d in DATASETS if d is not MASK}
"""The per-image columns every batch must provide, with their HDF5 dtypes, in table order."""

ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("rows", "int", "rows in the file (the `.parts` folder may hold more)"),
    Attribute("parts_merged", "int", "number of the last part folded into the file (read as 0 when "
              "absent)"),
    Attribute("schema_version", "int", f"{SCHEMA_VERSION}"),
    Attribute("config", "JSON str", "the caller's configuration, canonical JSON (sorted keys)"),
    Attribute("run_key", "str", "the configuration's identity when the store was made: 16 hex digits "
              "of a SHA-256 of `config` (`pipeline.identity.run_key`; readers recompute it from `config`)"),
    Attribute("model", "str", "the model spec"),
    Attribute("source", "str", "the source folder: the folder `path` is relative to (the images' folder, or "
              "the folder of a file list)"),
    Attribute("source_relative", "str", "`source` relative to the store's folder, tried when `source` "
              "does not exist (the store and its images moved or mounted elsewhere together); \"\" when "
              "none exists; absent in older stores", required=False),
    Attribute("mask_shape", "int (3,)", "(K, h, w) of one row's masks"),
    Attribute("input_size", "int (2,)", "(H, W) of the solver's input"),
    Attribute("shard", "str", '"r-of-n" for a shard\'s store, else ""'),
    Attribute("versions", "JSON str", "versions of pipeline, torch, h5py, numpy, python"),
    Attribute("created", "str", "creation time, ISO 8601, UTC"),
    Attribute("threads", "int", "torch's intra-op thread count of the process that created the store "
              "(CPU results are bit-identical at the same count); absent in older stores", required=False),
    Attribute("merged_from", "JSON str", "the shard file names of a merged store", always=False),
    Attribute("shard_plan", "str", "a shard's store: 16 hex digits identifying the sharded run's "
              "plan (`<out>.shards/run.json`)", always=False),
    Attribute("shard_images", "str", "a shard's store: the number of images the shard must hold",
              always=False),
    Attribute("preset", "str", "the solver preset the configuration was named by (`-p`); absent in "
              "stores made before it was recorded and in baseline stores", always=False),
    Attribute("overrides", "JSON str", "the overrides applied to `preset`, in order "
              "(`[\"objective.tv_coeff=0.05\", \"optim.iterations=75\"]`)", always=False),
)

READ_DEFAULTS: dict[str, Any] = {"parts_merged": 0}
"""Attributes a reader takes as these values when a store file lacks them."""

REQUIRED_ATTRIBUTES = tuple(a.name for a in ATTRIBUTES if a.always and a.required and a.name not in READ_DEFAULTS)
"""The attributes whose presence makes an HDF5 file a mask store."""


def dtype_name(dtype: Any) -> str:
    """The dtype as docs/store.md writes it: ``float16``, ``int64``, ``UTF-8 str``..."""
    if h5py.check_string_dtype(np.dtype(dtype)) is not None:
        return "UTF-8 str"
    return np.dtype(dtype).name


def is_store(attrs: Mapping[str, Any]) -> bool:
    """Whether an HDF5 file's root attributes are those of a mask store."""
    return all(name in attrs for name in REQUIRED_ATTRIBUTES)


def create_column(file: h5py.File, name: str, dtype: Any) -> None:
    """An empty, resizable ``(0,)`` scalar column."""
    file.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(SCALAR_CHUNK,), dtype=dtype)


def create_mask_dataset(file: h5py.File, mask_shape: tuple[int, ...]) -> None:
    """The empty, resizable ``(0, K, h, w)`` mask dataset, one chunk per row, NaN fill."""
    file.create_dataset(
        "mask", shape=(0, *mask_shape), maxshape=(None, *mask_shape), chunks=(1, *mask_shape),
        dtype=np.float16, fillvalue=np.float16(np.nan), **MASK_COMPRESSION,
    )


def extra_names(file: h5py.File) -> list[str]:
    """The extra columns of an open store file or part, sorted."""
    return sorted(n for n in file.keys() if n not in COLUMNS and n != "mask")


def to_numpy(values: Any) -> Any:
    """A torch tensor (possibly on the GPU) as a numpy array; anything else unchanged."""
    if hasattr(values, "detach"):
        return values.detach().cpu().numpy()
    return values


def convert_column(name: str, values: Any, dtype: Any) -> Any:
    """A caller's column ``(b,)`` (list, array or tensor) as stored: an object array of str (or of
    bytes for a file name that is not UTF-8), or a numpy array of ``dtype``.

    Raises:
        StoreError: not one value per row, or not of the column's kind (str, integer, number).
    """
    values = to_numpy(values)
    if dtype is STR:
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
